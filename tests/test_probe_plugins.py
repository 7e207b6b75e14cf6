"""A third-party probe, pip-installed from its own package (tests/plugin_example), registers
through the ``rmaudit.probes`` entry point and runs in a real ``rmaudit check`` with no
change to rmaudit; a plugin that fails to import is an error, never a silent pass."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers_audit import save_rm
from tiny_models import require_smollm2, tiny_rm

PLUGIN_SOURCE = Path(__file__).parent / "plugin_example"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    """A folder holding the installed plugin (its dist-info with entry_points.txt)."""
    root = tmp_path_factory.mktemp("plugin")
    source = shutil.copytree(PLUGIN_SOURCE, root / "src")
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(source)], check=True, capture_output=True)
    assert list(site.glob("rmaudit_example_probe-*.dist-info/entry_points.txt"))
    return site


def _rmaudit(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "rmaudit", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_installed_plugin_is_listed_and_runs_in_check(plugin_site, tmp_path):
    require_smollm2()
    listed = _rmaudit(plugin_site, "probes", cwd=tmp_path)
    assert listed.returncode == 0 and "reward_spread" in listed.stdout and "length_bias" in listed.stdout
    model, tokenizer = tiny_rm(seed=1)
    checkpoint = save_rm(model, tokenizer, tmp_path / "rm")
    (tmp_path / "rmaudit.toml").write_text("[limits.reward_spread]\nreward_std_fail = 1e9\n")  # its limit is configurable
    run = _rmaudit(plugin_site, "check", str(checkpoint), "--probes", "reward_spread,canonical_pairs",
                   "--out", str(tmp_path / "out"), "--no-progress", cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    spread = next(p for p in report["probes"] if p["name"] == "reward_spread")
    [finding] = spread["findings"]
    assert spread["status"] == "fail" and finding["metric"] == "reward_std" and finding["limit"] == 1e9
    assert finding["value"] == spread["metrics"]["reward_std"] > 0


def test_a_plugin_that_fails_to_import_is_an_error_not_a_pass(plugin_site, tmp_path):
    require_smollm2()
    broken = tmp_path / "site"
    shutil.copytree(plugin_site, broken)
    (broken / "rmaudit_example_probe" / "__init__.py").write_text("raise ImportError('numpy 0.1 required')\n")
    model, tokenizer = tiny_rm(seed=1)
    checkpoint = save_rm(model, tokenizer, tmp_path / "rm")
    run = _rmaudit(broken, "check", str(checkpoint), "--probes", "reward_spread,canonical_pairs",
                   "--out", str(tmp_path / "out"), "--no-progress", cwd=tmp_path)
    assert run.returncode == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    spread = next(p for p in report["probes"] if p["name"] == "reward_spread")
    assert spread["status"] == "error" and "numpy 0.1 required" in spread["summary"] and report["gate"] == "fail"
