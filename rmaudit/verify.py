"""``rmaudit verify``: is the checkpoint about to go to PPO the one that passed this audit?

Four checks, every one reported, all must hold:
1. the report's record is intact (its digest matches its fields: report.json not edited);
2. the checkpoint's weights, config, tokenizer and chat template hash to the recorded sha256s;
3. the report's gate is "pass" (a byte-identical copy of a failed checkpoint is still failed);
4. with a public key, the report carries a valid signature by it; with ``check_data``, the
   data files re-hash to the recorded values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rmaudit.errors import input_error
from rmaudit.record import (compare_checkpoint, compare_data, load_public_key, record_is_intact,
                            signature_problem)


@dataclass
class Verification:
    ok: bool = True
    lines: list[str] = field(default_factory=list)

    def add(self, passed: bool, line: str) -> None:
        self.ok = self.ok and passed
        self.lines.append(("ok    " if passed else "FAIL  ") + line)


def report_path(path: Path) -> Path:
    """report.json itself, or the one inside a report folder."""
    path = Path(path)
    return path / "report.json" if path.is_dir() else path


def verify_report(report: Path, checkpoint: Path, *, public_key: Path | None = None,
                  check_data: bool = False) -> Verification:
    """Run every check; bad input (no report, no record, no such folder, bad key) raises an input error."""
    from rmaudit.report.json_report import read_report_dict

    path = report_path(report)
    key = load_public_key(public_key) if public_key is not None else None  # a bad key is named before hashing
    data = read_report_dict(path)
    record = data.get("record")
    if not isinstance(record, dict) or not record:
        raise input_error(path, None, "record", "the report has no audit record (written by rmaudit before 0.5?); "
                                                "re-run rmaudit check")
    if not Path(checkpoint).is_dir():
        raise input_error(checkpoint, None, None, "expected the checkpoint folder")
    out = Verification()
    intact = record_is_intact(record)
    out.add(intact, f"record digest {str(record.get('digest'))[:16]}… "
                    + ("matches its fields" if intact else "does NOT match: the record was edited"))
    differences = compare_checkpoint(record, Path(checkpoint))
    files = sum(len(v) for v in (record.get("checkpoint") or {}).values())
    out.add(not differences, f"checkpoint {checkpoint}: " + (
        f"all {files} weight, config, tokenizer and chat-template files match the audit" if not differences
        else f"{len(differences)} difference(s) from the audited checkpoint"))
    out.lines += [f"        {d.describe()}" for d in differences]
    gate = data.get("gate")
    out.add(gate == "pass", f"the audit's gate: {gate}" + ("" if gate == "pass" else " (only a passing audit verifies)"))
    if key is not None:
        problem = signature_problem(data, key)
        out.add(problem is None, problem or f"signed with the given key ({data['signature']['public_key_sha256'][:16]}…)")
    elif data.get("signature"):
        out.lines.append("note  the report is signed; pass --public-key to check the signature")
    if check_data:
        changed = compare_data(record)
        out.add(not changed, f"{len(record.get('data') or {})} data file(s): " + ("unchanged" if not changed else "changed"))
        out.lines += [f"        {d.describe()}" for d in changed]
    elif record.get("data"):
        out.lines.append(f"note  {len(record['data'])} data file(s) not re-hashed (pass --check-data)")
    return out
