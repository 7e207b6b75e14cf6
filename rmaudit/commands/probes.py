"""Placeholder: owned by the probes work; replaced when that lands."""


def probes_command() -> int:
    raise NotImplementedError
