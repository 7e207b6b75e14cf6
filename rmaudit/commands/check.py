"""Placeholder: owned by the check work; replaced when that lands."""


def check_command() -> int:
    raise NotImplementedError
