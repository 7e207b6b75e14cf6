"""Placeholder: owned by the train work; replaced when that lands."""


def train_command() -> int:
    raise NotImplementedError
