"""report.json round trip and errors, junit.xml read by junitparser, summary.md vs JSON, console, files."""

from __future__ import annotations

import io
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from junitparser import Error, Failure, JUnitXml, Skipped
from rich.console import Console

from helpers_report import IMG, SCRIPT, sample_audit_result
from rmaudit.report.formatting import reason_text
from rmaudit.errors import RmauditInputError
from rmaudit.report import (
    default_report_dir, read_json, render_console_summary, write_json, write_junit, write_markdown, write_reports,
)
from rmaudit.results import AuditResult, ProbeResult, Status


def test_json_round_trip_is_lossless(tmp_path: Path) -> None:
    result = sample_audit_result()
    path = write_json(result, tmp_path / "report.json")
    assert read_json(path).to_dict() == result.to_dict()
    on_disk = json.loads(path.read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(result.to_dict()))
    assert on_disk["gate"] == "fail" and on_disk["counts"]["error"] == 1


def test_json_turns_numpy_and_nan_into_strict_json(tmp_path: Path) -> None:
    probe = ProbeResult("length_bias", Status.PASS, "ok",
                        metrics={"r2": np.float32(0.25), "n": np.int64(12), "spearman": float("nan")},
                        chart={"kind": "histogram", "series": [{"values": np.arange(3.0)}]})
    path = write_json(AuditResult("ckpt", [probe]), tmp_path / "r.json")
    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text
    data = json.loads(text)
    assert data["probes"][0]["metrics"] == {"r2": 0.25, "n": 12, "spearman": None}
    assert data["probes"][0]["chart"]["series"][0]["values"] == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"foo": 1}', "not an rmaudit report"),
    ('[1, 2]', "not an rmaudit report"),
    ('{"schema_version": "9.0", "checkpoint": "c", "probes": []}', "schema 9.0 is not supported"),
    ('{"schema_version": "1.0", "checkpoint": "c", "probes": [{"name": "x", "status": "great"}]}',
     "field 'probes[0].status'"),
    ('{"schema_version": "1.0", "checkpoint": "c", "probes": [{"name": "x", "status": "pass", "metrics": []}]}',
     "field 'probes[0].metrics': expected an object"),
])
def test_read_json_rejects_bad_files_in_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "report.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(RmauditInputError) as err:
        read_json(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_read_json_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RmauditInputError, match="no such file"):
        read_json(tmp_path / "nope.json")


@pytest.mark.parametrize("fail_on", [Status.FAIL, Status.WARN])
def test_junit_counts_and_case_kinds(tmp_path: Path, fail_on: Status) -> None:
    result = sample_audit_result(fail_on=fail_on)
    xml = JUnitXml.fromfile(str(write_junit(result, tmp_path / "junit.xml")))
    suites = list(xml)
    assert len(suites) == 1
    suite = suites[0]
    by_status = {p.name: p.status for p in result.probes}
    gated = {Status.FAIL} | ({Status.WARN} if fail_on is Status.WARN else set())
    expect = {
        "tests": len(result.probes),
        "failures": sum(s in gated for s in by_status.values()),
        "errors": sum(s is Status.ERROR for s in by_status.values()),
        "skipped": sum(s is Status.SKIP for s in by_status.values()),
    }
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == tuple(expect.values())
    assert (xml.tests, xml.failures, xml.errors, xml.skipped) == tuple(expect.values())
    cases = {case.name: case for case in suite}
    assert set(cases) == set(by_status)
    for name, status in by_status.items():
        kinds = {type(r) for r in cases[name].result}
        summary = reason_text(next(p for p in result.probes if p.name == name))
        if status in gated:
            assert kinds == {Failure} and cases[name].result[0].message == summary
        elif status is Status.ERROR:
            assert kinds == {Error} and cases[name].result[0].message == summary
        elif status is Status.SKIP:
            assert kinds == {Skipped}
        else:
            probe = next(p for p in result.probes if p.name == name)
            assert kinds == set() and probe.summary in cases[name].system_out
            assert all(f.message in cases[name].system_out for f in probe.findings)
    assert float(suite.time) == pytest.approx(sum(p.seconds for p in result.probes))


def test_junit_survives_control_characters(tmp_path: Path) -> None:
    probe = ProbeResult("padding", Status.FAIL, "token \x00\x1b[31m in text " + SCRIPT)
    xml = JUnitXml.fromfile(str(write_junit(AuditResult("ckpt", [probe]), tmp_path / "j.xml")))
    case = next(iter(next(iter(xml))))
    assert case.result[0].message.endswith(SCRIPT)


def _markdown_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| Probe")]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]


def test_summary_md_matches_json(tmp_path: Path) -> None:
    result = sample_audit_result()
    paths = write_reports(result, tmp_path)
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    text = paths["markdown"].read_text(encoding="utf-8")
    rows = _markdown_rows(text)
    assert [r[0] for r in rows] == [p["name"] for p in data["probes"]]
    assert [r[1].split()[-1] for r in rows] == [p["status"] for p in data["probes"]]
    assert [r[3] for r in rows] == [f"{p['seconds']:.1f}s" for p in data["probes"]]
    assert f"gate {'passed' if data['gate'] == 'pass' else 'failed'}" in text
    for status, n in data["counts"].items():
        assert f"{n} {status}" in text
    assert "<script>" not in text and "&lt;script&gt;" in text  # dataset text is inert on GitHub


def test_markdown_cell_cannot_break_the_table(tmp_path: Path) -> None:
    probe = ProbeResult("x", Status.WARN, "a | b\nc `code` " + IMG)
    text = write_markdown(AuditResult("ckpt", [probe]), tmp_path / "s.md").read_text(encoding="utf-8")
    (row,) = _markdown_rows(text)
    assert len(row) == 4 and "\\|" in row[2] and "<img" not in text


def test_console_summary_is_coloured_and_literal() -> None:
    result = sample_audit_result()
    result.probes[0].findings[0].message = "[red]not markup[/red] " + SCRIPT  # the fail's reason is shown
    console = Console(record=True, width=140, force_terminal=True, color_system="truecolor", file=io.StringIO())
    render_console_summary(result, console)
    plain = console.export_text(clear=False)
    assert "[red]not markup[/red]" in plain and SCRIPT in plain
    assert "GATE FAILED" in plain and "fail-on=fail" in plain
    for p in result.probes:
        assert p.name in plain and p.status.value.upper() in plain
    ansi = console.export_text(styles=True)
    assert "\x1b[" in ansi  # coloured


def test_write_reports_writes_all_four_atomically(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "folder"
    paths = write_reports(sample_audit_result(), out)
    assert {p.name for p in paths.values()} == {"report.html", "report.json", "junit.xml", "summary.md"}
    assert sorted(f.name for f in out.iterdir()) == sorted(p.name for p in paths.values())  # no temp files left
    before = paths["json"].read_text(encoding="utf-8")
    write_reports(sample_audit_result(), out)  # overwriting an existing report replaces it whole
    assert paths["json"].read_text(encoding="utf-8") == before


def test_write_failure_keeps_the_old_file(tmp_path: Path) -> None:
    path = write_json(sample_audit_result(), tmp_path / "report.json")
    before = path.read_text(encoding="utf-8")
    bad = AuditResult("ckpt", [ProbeResult("x", Status.PASS, "ok", metrics={"obj": object()})])
    with pytest.raises(TypeError):
        write_json(bad, path)
    assert path.read_text(encoding="utf-8") == before and [f.name for f in tmp_path.iterdir()] == ["report.json"]


def test_default_report_dir(tmp_path: Path) -> None:
    now = datetime(2026, 11, 26, 15, 32, 7, tzinfo=timezone(timedelta(hours=2)))
    assert default_report_dir("runs/rm-hh/", now) == Path("reports/rm-hh/20261126-133207")
    assert default_report_dir("org/Model v2:x", now, root=tmp_path) == tmp_path / "Model_v2_x" / "20261126-133207"
    ckpt = tmp_path / "my-rm"
    ckpt.mkdir()
    assert default_report_dir(ckpt / ".", now).parts[-2] == "my-rm"
    assert default_report_dir("ckpt").parent == Path("reports/ckpt")


def test_gate_fails_when_every_probe_skipped_because_nothing_was_checked():
    from rmaudit.results import AuditResult, ProbeResult, Status

    skipped = [ProbeResult(name="padding", status=Status.SKIP, summary="missing input: model")]
    assert AuditResult(checkpoint="ckpt", probes=skipped).gate == "fail"
    passed = skipped + [ProbeResult(name="accuracy", status=Status.PASS, summary="ok")]
    assert AuditResult(checkpoint="ckpt", probes=passed).gate == "pass"


def test_github_annotations_and_step_summary(tmp_path, monkeypatch) -> None:
    from rmaudit.report.github import annotation_lines, write_github_outputs

    result = sample_audit_result()
    result.probes[0].findings[0].message = "bad\n::error::injected %"
    out = io.StringIO()
    assert not write_github_outputs(result, {"html": tmp_path / "report.html"}, stream=out)  # not in Actions
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary"))
    assert write_github_outputs(result, {"html": tmp_path / "report.html"}, stream=out)
    lines = out.getvalue().splitlines()
    assert lines == annotation_lines(result)
    length = next(line for line in lines if "rmaudit length_bias" in line)
    assert length.startswith("::error title=rmaudit length_bias: fail::")
    assert "bad ::error::injected %25 (r2 = " in length and ">= 0.3" in length  # one line: no second command
    assert any(line.startswith("::warning title=rmaudit chat_template") for line in lines)
    assert not any("rmaudit accuracy" in line for line in lines)  # a pass is not annotated
    summary = (tmp_path / "summary").read_text(encoding="utf-8")
    assert summary.startswith("## ❌ rmaudit") and "report.html" in summary
