"""A report from a REAL `rmaudit check` (tiny real model, real files) in real headless Chromium.

The data rows carry markup; the report must show it as text, run none of it, draw every
chart and ask for nothing beyond the file itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from browser_helpers import open_report_in_chromium, requires_chromium
from helpers_report import IMG, SCRIPT
from rmaudit.cli import main
from probe_fixtures import trained_run
from tiny_models import make_tiny_rm

pytestmark = [pytest.mark.browser, requires_chromium]

TOPICS = ["rivers", "bread", "chess", "tides", "glass", "bees", "maps", "clocks", "salt", "kites"]


def _pairs(offset: int, n: int) -> list[dict]:
    rows = []
    for i in range(offset, offset + n):
        topic = TOPICS[i % len(TOPICS)]
        rows.append({
            "prompt": f"Question {i}: what should I know about {topic}?",
            "chosen": f"Here is a clear answer about {topic}. " * (1 + i % 4),
            "rejected": f"Not sure about {topic}. " * (1 + (i * 7) % 5),
        })
    return rows


@pytest.fixture(scope="module")
def real_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real-check")
    ckpt = make_tiny_rm(root / "rm", manifest=True)
    eval_rows = _pairs(0, 30)
    eval_rows[0] = {"prompt": f"Explain {SCRIPT} please", "chosen": f"Sure: {IMG} is markup.", "rejected": SCRIPT}
    eval_rows[1]["chosen"] = f"{IMG} " * 3
    train_rows = _pairs(100, 40) + [dict(eval_rows[0])]  # one hostile prompt leaks into train
    for i, row in enumerate(eval_rows):
        row["annotator"] = "ann-A" if i % 2 else "ann-B"
    # Policy samples (any policy's JSONL), one of them hostile too, so the on-policy tables render markup.
    rollouts = [{"prompt": row["prompt"], "response": (SCRIPT if (i, k) == (0, 0) else f"Answer {k}: " + row["chosen"][: 20 * (k + 1)])}
                for i, row in enumerate(eval_rows[:8]) for k in range(3)]
    (root / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rollouts))
    for name, rows in (("eval.jsonl", eval_rows), ("train.jsonl", train_rows)):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = root / "report"
    code = main(["check", str(ckpt), "--probes", "all", "--data", str(root / "eval.jsonl"),
                 "--train-data", str(root / "train.jsonl"), "--out", str(out), "--no-progress",
                 "--annotator-field", "annotator", "--rollouts-file", str(root / "rollouts.jsonl"),
                 "--training-log", str(trained_run(3e-3) / "metrics.jsonl")])
    assert code in (0, 1), "the check itself must run (0 pass / 1 gate failed)"
    data = json.loads((out / "report.json").read_text())
    assert {p["status"] for p in data["probes"]} <= {"pass", "warn", "fail"}, [
        (p["name"], p["status"], p["summary"]) for p in data["probes"] if p["status"] in ("skip", "error")]
    return out / "report.html"


@pytest.fixture(scope="module")
def findings(real_report: Path):
    return open_report_in_chromium(real_report)


def test_every_chart_of_a_real_check_rendered(findings) -> None:
    assert findings.charts_state == "rendered"
    assert findings.plot_divs >= 7  # at least one chart per probe
    assert findings.rendered_plots == findings.plot_divs


def test_real_report_has_no_console_errors_and_makes_no_requests(findings) -> None:
    assert findings.console_errors == [] and findings.page_errors == []
    assert findings.foreign_requests == []


def test_markup_from_the_dataset_shows_as_text_and_never_runs(findings) -> None:
    assert findings.pwned is None
    assert SCRIPT in findings.visible_text
    assert IMG in findings.visible_text
