"""rmaudit: audit reward models for the classic RLHF pathologies before PPO sees them."""

__version__ = "0.1.0"
