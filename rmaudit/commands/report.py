"""Placeholder: owned by the report work; replaced when that lands."""


def report_command() -> int:
    raise NotImplementedError
