"""Errors that the CLI turns into a one-line message and exit code 2."""


class RmauditInputError(ValueError):
    """Bad user input: a file, row or field that rmaudit cannot use.

    The message must name the file, the row and the field where they are known,
    in one line, e.g. ``data.jsonl: row 17: field 'chosen': expected a string``.
    """


def input_error(path: object, row: int | None, field: str | None, problem: str) -> RmauditInputError:
    """Build an input error in the one standard format: ``FILE: row N: field 'F': problem``."""
    parts = [str(path)]
    if row is not None:
        parts.append(f"row {row}")
    if field is not None:
        parts.append(f"field {field!r}")
    parts.append(problem)
    return RmauditInputError(": ".join(parts))
