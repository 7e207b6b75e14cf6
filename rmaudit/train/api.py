"""``rmaudit.train(...)``: the Python entry point of the reference trainer."""

from __future__ import annotations

from typing import Any

from rmaudit.train.config import TrainConfig, build_config


def train(config: TrainConfig | None = None, **options: Any) -> Any:
    """Train a Bradley-Terry reward model; ``options`` are :class:`TrainConfig` fields
    (``rmaudit.train(data="pairs.jsonl", out="runs/rm", max_steps=100)``). Returns the
    :class:`~rmaudit.train.recipe.TrainResult`."""
    from rmaudit.train.recipe import train as run_recipe  # torch loads only when training

    if config is None:
        config = build_config(None, options, source="rmaudit.train()")
    elif options:
        raise TypeError("pass either a TrainConfig or keyword options, not both")
    return run_recipe(config)
