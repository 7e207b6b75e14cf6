"""`rmaudit train`: the reference Bradley-Terry reward-model trainer (see ``recipe.py`` for the workflow).

Importing this package is cheap; ``train`` and the recipe load torch and transformers on first use.
"""

from __future__ import annotations

from typing import Any

from rmaudit.train.config import TrainConfig, build_config, read_config_file

__all__ = ["TrainConfig", "build_config", "read_config_file", "train"]


def train(config: TrainConfig, loaded: Any = None):
    """Train a reward model as configured; returns a ``TrainResult`` (see rmaudit.train.recipe)."""
    from rmaudit.train.recipe import train as run

    return run(config, loaded)
