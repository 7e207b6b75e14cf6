"""`rmaudit check` and `rmaudit probes` through the real CLI entry point: exit codes, reports, gates."""

from __future__ import annotations

import json

import pytest

from helpers_audit import CANONICAL_FILE, fitted_tiny_rm, save_rm, scaled_head
from rmaudit.cli import main
from rmaudit.probes import load_probes
from rmaudit.probes.canonical_pairs import load_canonical_pairs
from tiny_models import require_smollm2


def test_probes_lists_every_probe_with_its_description(capsys):
    assert main(["probes"]) == 0
    out = capsys.readouterr().out
    for name, probe in load_probes().items():
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert probe.description in line


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    require_smollm2()
    model, tokenizer = fitted_tiny_rm(load_canonical_pairs([CANONICAL_FILE]))
    root = tmp_path_factory.mktemp("cli")
    return {
        "healthy": save_rm(model, tokenizer, root / "healthy"),
        "negated": save_rm(scaled_head(model, -1.0), tokenizer, root / "negated"),
    }


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run from an empty folder: no gate config is discovered, default reports land here."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def check(*args):
    return main(["check", *map(str, args), "--no-progress"])


def test_healthy_checkpoint_passes_and_writes_every_report(checkpoints, in_tmp, capsys):
    # float32: the fitted tiny head's margins sit near bf16 noise, which accuracy's float32
    # check rightly warns about on a bf16-capable CPU (tests/test_probe_accuracy.py).
    code = check(checkpoints["healthy"], "--probes", "canonical_pairs,accuracy", "--data", CANONICAL_FILE,
                 "--out", in_tmp / "out", "--json", in_tmp / "result.json", "--dtype", "float32")
    out = capsys.readouterr().out
    assert code == 0, out
    assert {p.name for p in (in_tmp / "out").iterdir()} >= {"report.html", "report.json", "junit.xml", "summary.md"}
    data = json.loads((in_tmp / "result.json").read_text())
    assert data["gate"] == "pass" and data["schema_version"] and data["rmaudit_version"]
    assert [(p["name"], p["status"]) for p in data["probes"]] == [("canonical_pairs", "pass"), ("accuracy", "pass")]
    assert data == json.loads((in_tmp / "out" / "report.json").read_text())
    assert "canonical_pairs" in out and "PASS" in out


def test_negated_checkpoint_fails_the_gate(checkpoints, in_tmp):
    assert check(checkpoints["negated"], "--probes", "canonical_pairs", "--out", in_tmp / "out") == 1
    data = json.loads((in_tmp / "out" / "report.json").read_text())
    assert data["gate"] == "fail" and data["probes"][0]["status"] == "fail"


def test_default_report_folder_and_warn_gate_from_config(checkpoints, in_tmp):
    """A skipped probe alone does not fail the gate (an all-skipped audit does); a config's fail-on and thresholds apply unless flags override."""
    assert check(checkpoints["healthy"], "--probes", "canonical_pairs,accuracy") == 0  # no --data: skip
    [report] = list((in_tmp / "reports" / "healthy").glob("*/report.json"))
    assert [p["status"] for p in json.loads(report.read_text())["probes"]] == ["pass", "skip"]
    assert check(checkpoints["healthy"], "--probes", "accuracy", "--out", in_tmp / "skipped") == 1  # nothing checked

    (in_tmp / "rmaudit.toml").write_text(
        'probes = ["canonical_pairs"]\nfail-on = "warn"\n'
        "[limits.canonical_pairs]\npass_rate_warn = 1.01\n"  # unreachable: forces a warning
    )
    assert check(checkpoints["healthy"], "--out", in_tmp / "warned") == 1
    data = json.loads((in_tmp / "warned" / "report.json").read_text())
    assert [p["name"] for p in data["probes"]] == ["canonical_pairs"] and data["probes"][0]["status"] == "warn"
    assert check(checkpoints["healthy"], "--fail-on", "fail", "--out", in_tmp / "flag") == 0


def test_bad_probe_name_is_a_usage_error(checkpoints, in_tmp, capsys):
    assert check(checkpoints["healthy"], "--probes", "accuracy,nope", "--out", in_tmp / "out") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'nope'" in err and "canonical_pairs" in err
    assert not (in_tmp / "out").exists()


def test_missing_data_file_is_a_one_line_input_error(checkpoints, in_tmp, capsys):
    assert check(checkpoints["healthy"], "--data", in_tmp / "absent.jsonl", "--out", in_tmp / "out") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "absent.jsonl" in err and "not found" in err


def test_missing_checkpoint_and_bad_dtype_are_input_errors(in_tmp, capsys):
    assert check(in_tmp / "no-such-ckpt") == 2
    assert "no-such-ckpt" in capsys.readouterr().err
    assert check(in_tmp, "--dtype", "float8") == 2
    assert "--dtype" in capsys.readouterr().err


@pytest.mark.slow
def test_every_probe_runs_on_the_real_smollm2_with_real_hh_rows(in_tmp):
    """`rmaudit check --probes all` on SmolLM2-135M-Instruct (fresh head) and real hh-rlhf pairs:
    every probe reaches a verdict or a reasoned skip; none crashes."""
    from tiny_models import SMOLLM2_GGUF, require_shared_hh

    folder, hh = require_smollm2(), require_shared_hh()
    code = check(folder, "--gguf-file", SMOLLM2_GGUF, "--allow-fresh-head", "--probes", "all", "--data", hh, "--train-data", hh,
                 "--max-pairs", "12", "--max-length", "384", "--dtype", "auto", "--out", in_tmp / "out")
    assert code in (0, 1)
    data = json.loads((in_tmp / "out" / "report.json").read_text())
    assert [p["name"] for p in data["probes"]] == list(load_probes())
    errors = {p["name"]: p["summary"] for p in data["probes"] if p["status"] == "error"}
    assert errors == {}
    # A fresh head on the real SmolLM2 body is not a reward model: head_integrity says so.
    head = next(p for p in data["probes"] if p["name"] == "head_integrity")
    assert head["status"] == "fail" and any(f["metric"] == "head_source" and f["status"] == "fail" for f in head["findings"])
    assert code == 1
    # auto: bfloat16 where the CPU runs it natively, float32 on AVX2-only CPUs (50-80x faster there).
    from rmaudit.devices import resolve_dtype

    assert data["context"]["n_eval_pairs"] == 12 and data["context"]["dtype"] == resolve_dtype("auto")[0]


def test_version_and_help_answer_without_loading_torch_or_probes(capsys):
    import subprocess
    import sys

    from rmaudit import __version__

    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"rmaudit {__version__}"
    assert main(["check", "--help"]) == 0
    assert "[tool.rmaudit]" in capsys.readouterr().out  # not eaten as rich markup
    code = ("import sys; from rmaudit.cli import main; main(['--help']); "
            "print('LOADED', sorted(m for m in ('torch', 'transformers', 'scipy', 'rmaudit.probes.length_bias') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "LOADED []" in out


def test_a_required_probe_that_skips_fails_the_gate(checkpoints, in_tmp, capsys):
    """A skip is not a pass: without --data, accuracy skips; required, it fails the gate and says so."""
    assert check(checkpoints["healthy"], "--probes", "canonical_pairs,accuracy", "--out", in_tmp / "a") == 0
    assert "skipped (not checked): accuracy" in capsys.readouterr().out
    assert check(checkpoints["healthy"], "--probes", "canonical_pairs", "--require", "accuracy",
                 "--out", in_tmp / "b") == 1
    assert "required but not checked: accuracy" in capsys.readouterr().out
    data = json.loads((in_tmp / "b" / "report.json").read_text())
    assert data["required"] == ["accuracy"] and data["gate"] == "fail"
    assert [p["name"] for p in data["probes"]] == ["canonical_pairs", "accuracy"]  # a required probe always runs
    (in_tmp / "rmaudit.toml").write_text('require = ["accuracy"]\n')
    assert check(checkpoints["healthy"], "--probes", "canonical_pairs", "--out", in_tmp / "c") == 1
    assert check(checkpoints["healthy"], "--require", "acuracy", "--out", in_tmp / "d") == 2
    assert "--require: unknown probe 'acuracy'" in capsys.readouterr().err
