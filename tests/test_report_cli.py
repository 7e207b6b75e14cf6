"""`rmaudit report`: re-render from report.json through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

from junitparser import JUnitXml

from helpers_report import sample_audit_result
from rmaudit.cli import main
from rmaudit.results import SCHEMA_VERSION
from rmaudit.report import write_json


def test_report_rerenders_each_requested_format(tmp_path: Path, capsys) -> None:
    src = write_json(sample_audit_result(), tmp_path / "ci" / "report.json")
    html, junit, md = tmp_path / "out" / "r.html", tmp_path / "j.xml", tmp_path / "s.md"
    code = main(["report", str(src), "--html", str(html), "--junit", str(junit), "--markdown", str(md)])
    assert code == 0
    assert html.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert JUnitXml.fromfile(str(junit)).tests == len(sample_audit_result().probes)
    assert "| length_bias |" in md.read_text(encoding="utf-8")
    out = capsys.readouterr().out
    assert "GATE FAILED" in out and f"wrote {html}" in out


def test_report_out_folder_writes_all_four(tmp_path: Path) -> None:
    src = write_json(sample_audit_result(), tmp_path / "report.json")
    assert main(["report", str(src), "--out", str(tmp_path / "again"), "-q"]) == 0
    names = sorted(p.name for p in (tmp_path / "again").iterdir())
    assert names == ["junit.xml", "report.html", "report.json", "summary.md"]
    assert json.loads((tmp_path / "again" / "report.json").read_text()) == json.loads(src.read_text())


def test_report_refuses_to_overwrite_its_input(tmp_path: Path, capsys) -> None:
    src = write_json(sample_audit_result(), tmp_path / "report.json")
    before = src.read_text(encoding="utf-8")
    assert main(["report", str(src), "--html", str(src)]) == 2
    assert main(["report", str(src), "--out", str(tmp_path)]) == 2
    assert src.read_text(encoding="utf-8") == before
    assert "would overwrite the input report" in capsys.readouterr().err


def test_report_usage_and_input_errors_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path / "missing.json"), "--html", str(tmp_path / "x.html")]) == 2
    assert "missing.json: no such file" in capsys.readouterr().err
    foreign = tmp_path / "package.json"
    foreign.write_text('{"name": "left-pad"}', encoding="utf-8")
    assert main(["report", str(foreign), "--html", str(tmp_path / "x.html")]) == 2
    assert "not an rmaudit report" in capsys.readouterr().err
    assert main(["report", str(foreign)]) == 2  # no output asked for
    assert main(["report", str(foreign), "--no-such-flag"]) == 2
    assert not (tmp_path / "x.html").exists()


def test_a_schema_1_report_is_migrated_on_rerender(tmp_path):
    """Schema 1 had no findings: each warn/fail summary becomes one finding, thresholds are kept."""
    import json

    from rmaudit.cli import main

    old = {"schema_version": "1.0", "checkpoint": "runs/rm", "fail_on": "fail", "probes": [
        {"name": "length_bias", "status": "fail", "summary": "R² 0.41 (fail at 0.3)", "metrics": {"r2": 0.41},
         "thresholds": {"r2_warn": 0.1, "r2_fail": 0.3, "min_pairs": 20}},
        {"name": "accuracy", "status": "pass", "summary": "accuracy 0.7", "metrics": {"accuracy": 0.7}}]}
    source = tmp_path / "old.json"
    source.write_text(json.dumps(old))
    assert main(["report", str(source), "--out", str(tmp_path / "new"), "--quiet"]) == 0
    new = json.loads((tmp_path / "new" / "report.json").read_text())
    length, accuracy = new["probes"]
    assert new["schema_version"] == SCHEMA_VERSION and new["gate"] == "fail"
    assert length["findings"] == [{"status": "fail", "message": "R² 0.41 (fail at 0.3)", "metric": None, "value": None,
                                   "limit": None, "comparison": None}]
    assert length["settings"] == {"thresholds (schema 1.x)": {"r2_warn": 0.1, "r2_fail": 0.3, "min_pairs": 20}}
    assert accuracy["findings"] == []
    assert "R² 0.41 (fail at 0.3)" in (tmp_path / "new" / "report.html").read_text(encoding="utf-8")
