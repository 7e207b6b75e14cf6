"""``report.json``: the machine-readable result, and reading it back for re-rendering.

The schema is :meth:`rmaudit.results.AuditResult.to_dict`, documented in
``docs/report-schema.md``. Non-finite floats are written as ``null`` so that every
standard JSON parser (``jq``, browsers) can read the file.
"""

from __future__ import annotations

import enum
import json
import math
from pathlib import Path
from typing import Any

from rmaudit.errors import input_error
from rmaudit.atomic import atomic_write_text
from rmaudit.results import SCHEMA_VERSION, AuditResult, Status


def to_jsonable(value: Any) -> Any:
    """Turn probe output (numpy scalars/arrays, tuples, paths, NaN) into plain strict JSON values."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if type(value).__module__ == "numpy":  # numpy scalar or array, without importing numpy here
        return to_jsonable(value.tolist())
    raise TypeError(f"cannot write {type(value).__name__} to report.json: {value!r:.80}")


def normalized(result: AuditResult) -> AuditResult:
    """``result`` as it reads back from report.json (plain numbers and lists, NaN as None),
    with every string neutralised for display (:func:`~rmaudit.report.formatting.neutralise`).

    Every writer but JSON renders this, so a report re-rendered from its JSON is the same
    report; report.json keeps the raw strings (JSON escapes what it must).
    """
    from rmaudit.report.formatting import neutralise_tree

    return AuditResult.from_dict(neutralise_tree(to_jsonable(result.to_dict())))


def dumps_result(result: AuditResult) -> str:
    """The exact text of ``report.json`` for ``result``."""
    data = to_jsonable(result.to_dict())
    return json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(result: AuditResult, path: Path) -> Path:
    """Write ``report.json`` atomically. Returns ``path``."""
    return atomic_write_text(Path(path), dumps_result(result))


def read_json(path: Path) -> AuditResult:
    """Read a ``report.json`` written by rmaudit.

    Raises :class:`~rmaudit.errors.RmauditInputError` with a one-line message for a
    missing file, invalid JSON, a file that is not an rmaudit report, a newer major
    schema version, or a malformed probe entry.
    """
    path = Path(path)
    data = read_report_dict(path)
    try:
        return AuditResult.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise input_error(path, None, None, f"malformed rmaudit report: {exc}") from None


def read_report_dict(path: Path) -> dict[str, Any]:
    """report.json as written (the exact dict a signature covers), its shape checked."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise input_error(path, None, None, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise input_error(path, None, None, f"cannot read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise input_error(
            path, None, None, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    _check_report_shape(path, data)
    return data


# Schema 1 reports (no findings; thresholds mixed limits and settings) are migrated on read.
READABLE_MAJORS = ("1", SCHEMA_VERSION.split(".")[0])


def _check_report_shape(path: Path, data: Any) -> None:
    """Reject foreign JSON early, naming the first field that is wrong."""
    if not isinstance(data, dict) or "schema_version" not in data or "probes" not in data:
        raise input_error(path, None, None, "not an rmaudit report (expected an object with 'schema_version' and 'probes')")
    major = str(data["schema_version"]).split(".")[0]
    if major not in READABLE_MAJORS:
        raise input_error(
            path, None, "schema_version",
            f"report schema {data['schema_version']} is not supported (this rmaudit reads 1.x and {SCHEMA_VERSION})",
        )
    if not isinstance(data.get("checkpoint"), str):
        raise input_error(path, None, "checkpoint", "expected a string")
    if not isinstance(data["probes"], list):
        raise input_error(path, None, "probes", "expected a list")
    statuses = {s.value for s in Status}
    for i, probe in enumerate(data["probes"]):
        if not isinstance(probe, dict):
            raise input_error(path, None, f"probes[{i}]", "expected an object")
        if not isinstance(probe.get("name"), str):
            raise input_error(path, None, f"probes[{i}].name", "expected a string")
        if probe.get("status") not in statuses:
            raise input_error(path, None, f"probes[{i}].status", f"expected one of {', '.join(sorted(statuses))}")
        for key, kind in (("metrics", dict), ("thresholds", dict), ("limits", dict), ("settings", dict),
                          ("findings", list), ("evidence", list), ("chart", dict)):
            if probe.get(key) is not None and not isinstance(probe[key], kind):
                raise input_error(path, None, f"probes[{i}].{key}", f"expected {'an object' if kind is dict else 'a list'}")
    if data.get("fail_on", "fail") not in statuses:
        raise input_error(path, None, "fail_on", "expected 'warn' or 'fail'")
