"""Evaluation: the ranking loop, metrics, score screening, prediction and analysis."""
