"""Training: the LightningModule, losses, optimisers, schedules, the fused step, DDP helpers."""
