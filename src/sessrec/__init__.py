"""sessrec: feature-rich session-based recommendations (GRU4Rec, p-RNN)."""

__version__ = "0.1.0"
