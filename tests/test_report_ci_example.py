"""examples/ci-gate.yml: a valid workflow that audits (never trains) and always keeps the report."""

from __future__ import annotations

from pathlib import Path

import yaml

WORKFLOW = Path(__file__).resolve().parents[1] / "examples" / "ci-gate.yml"


def test_ci_example_checks_and_uploads_the_report() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    steps = workflow["jobs"]["rmaudit"]["steps"]
    scripts = "\n".join(step.get("run", "") for step in steps)
    assert "rmaudit check" in scripts and "rmaudit train" not in scripts
    assert "GITHUB_STEP_SUMMARY" not in scripts  # rmaudit check writes the step summary itself in Actions
    upload = next(step for step in steps if str(step.get("uses", "")).startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()"  # the report is kept exactly when the gate fails
    assert upload["with"]["path"] == "${{ env.REPORT_DIR }}"
    assert '--out "$REPORT_DIR"' in scripts
    assert scripts.index("rmaudit selftest") < scripts.index("rmaudit check")  # the auditor is checked first
    assert '"${SIGN[@]}"' in scripts and "secrets.RMAUDIT_SIGN_KEY" in WORKFLOW.read_text(encoding="utf-8")
