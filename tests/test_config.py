"""Gate config discovery and validation: rmaudit.toml vs [tool.rmaudit], walking up, explicit path, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmaudit.config import GateConfig, ProbeKeys, find_config, load_gate_config
from rmaudit.errors import RmauditInputError
from rmaudit.results import Status

KNOWN = {"length_bias": ProbeKeys(["r2_warn", "r2_fail"], ["alpha"]), "padding": ProbeKeys(["delta_fail"], ["sample_size"])}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_pyproject_table_is_found_walking_up(tmp_path: Path) -> None:
    pyproject = _write(tmp_path / "pyproject.toml", """
[project]
name = "my-rm"

[tool.rmaudit]
probes = ["length_bias", "padding"]
fail-on = "warn"

[tool.rmaudit.limits.length_bias]
r2_fail = 0.2

[tool.rmaudit.settings.padding]
sample_size = 16
""")
    deep = tmp_path / "src" / "pkg" / "deep"
    deep.mkdir(parents=True)
    assert find_config(deep) == pyproject
    config = load_gate_config(None, deep, known_probes=KNOWN)
    assert config.probes == ["length_bias", "padding"]
    assert config.fail_on_status is Status.WARN
    assert config.limits == {"length_bias": {"r2_fail": 0.2}} and config.settings == {"padding": {"sample_size": 16}}
    assert config.source == pyproject


def test_pyproject_without_table_is_skipped(tmp_path: Path) -> None:
    outer = _write(tmp_path / "rmaudit.toml", 'fail_on = "warn"\n')
    _write(tmp_path / "proj" / "pyproject.toml", '[project]\nname = "x"\n[tool.ruff]\nline-length = 100\n')
    assert find_config(tmp_path / "proj") == outer
    assert load_gate_config(None, tmp_path / "proj", known_probes=KNOWN).fail_on == "warn"


def test_nearest_wins_and_rmaudit_toml_beats_pyproject_in_one_folder(tmp_path: Path) -> None:
    _write(tmp_path / "rmaudit.toml", 'fail-on = "warn"\n')
    inner_py = _write(tmp_path / "a" / "pyproject.toml", '[tool.rmaudit]\nfail-on = "fail"\n')
    assert find_config(tmp_path / "a") == inner_py
    inner_rm = _write(tmp_path / "a" / "rmaudit.toml", 'probes = "all"\n')
    assert find_config(tmp_path / "a") == inner_rm
    assert load_gate_config(None, tmp_path / "a" / "some_file.jsonl").probes is None  # start may be a file


def test_explicit_path_wins_over_discovery(tmp_path: Path) -> None:
    _write(tmp_path / "rmaudit.toml", 'fail-on = "warn"\n')
    explicit = _write(tmp_path / "ci" / "gate.toml", 'fail-on = "fail"\nprobes = "length_bias, padding"\n')
    config = load_gate_config(explicit, tmp_path, known_probes=KNOWN)
    assert config.fail_on == "fail" and config.probes == ["length_bias", "padding"] and config.source == explicit


def test_no_config_gives_defaults(tmp_path: Path) -> None:
    # tmp_path's parents (/tmp, /) hold no rmaudit config on a sane machine
    assert find_config(tmp_path) is None
    assert load_gate_config(None, tmp_path) == GateConfig()


@pytest.mark.parametrize("name, text, field, problem", [
    ("rmaudit.toml", 'fail-on = "warn"\nthreshold = 1\n', "'threshold'", "unknown key"),
    ("pyproject.toml", '[tool.rmaudit]\nfial-on = "warn"\n', "'tool.rmaudit.fial-on'", "unknown key"),
    ("rmaudit.toml", 'fail-on = "error"\n', "'fail-on'", "expected 'warn' or 'fail'"),
    ("rmaudit.toml", "probes = [1]\n", "'probes'", "list of probe names"),
    ("rmaudit.toml", 'probes = ["length_bias", "lenght_bias"]\n', "'probes'", "unknown probe 'lenght_bias'"),
    ("rmaudit.toml", "[limits.padding]\ndelta_fail = \"big\"\n", "'limits.padding.delta_fail'", "expected a number"),
    ("rmaudit.toml", "[limits.padding]\ndelta_fial = 0.1\n", "'limits.padding.delta_fial'", "unknown limit"),
    ("rmaudit.toml", "[limits.padding]\nsample_size = 4\n", "'limits.padding.sample_size'", "unknown limit"),
    ("rmaudit.toml", "[settings.padding]\ndelta_fail = 4\n", "'settings.padding.delta_fail'", "unknown setting"),
    ("rmaudit.toml", "[thresholds.padding]\ndelta_fail = \"big\"\n", "'thresholds.padding.delta_fail'", "expected a number"),
    ("rmaudit.toml", "[limits.nope]\nx = 1\n", "'limits.nope'", "unknown probe"),
    ("rmaudit.toml", 'fail-on = "warn"\nfail_on = "fail"\n', None, "given twice"),
    ("rmaudit.toml", "fail-on = \n", None, "not valid TOML"),
])
def test_bad_config_is_a_one_line_error_naming_file_and_key(
        tmp_path: Path, name: str, text: str, field: str | None, problem: str) -> None:
    path = _write(tmp_path / name, text)
    with pytest.raises(RmauditInputError) as err:
        load_gate_config(path, tmp_path, known_probes=KNOWN)
    message = str(err.value)
    assert message.startswith(str(path)) and problem in message and "\n" not in message
    if field:
        assert f"field {field}" in message


def test_explicit_missing_file_and_pyproject_without_table(tmp_path: Path) -> None:
    with pytest.raises(RmauditInputError, match="config file not found"):
        load_gate_config(tmp_path / "nope.toml", tmp_path)
    bare = _write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    with pytest.raises(RmauditInputError, match=r"no \[tool.rmaudit\] table"):
        load_gate_config(bare, tmp_path)


def test_names_not_checked_when_known_probes_is_none(tmp_path: Path) -> None:
    path = _write(tmp_path / "rmaudit.toml", "[limits.future_probe]\nsome_fail = 2\n")
    assert load_gate_config(path, tmp_path, known_probes=None).limits == {"future_probe": {"some_fail": 2.0}}


def test_schema_1_thresholds_table_is_routed_to_limits_and_settings(tmp_path: Path) -> None:
    path = _write(tmp_path / "rmaudit.toml", "[thresholds.padding]\ndelta_fail = 0.2\nsample_size = 4\n")
    config = load_gate_config(path, tmp_path, known_probes=KNOWN)
    assert config.limits == {"padding": {"delta_fail": 0.2}} and config.settings == {"padding": {"sample_size": 4}}


def test_default_validates_against_the_probe_registry(tmp_path: Path) -> None:
    from rmaudit.probes import load_probes

    name, cls = next((n, c) for n, c in load_probes().items() if c.limits)
    key = cls.limit_keys()[0]
    good = _write(tmp_path / "ok" / "rmaudit.toml", f"probes = [{name!r}]\n[limits.{name}]\n{key} = 0.5\n")
    assert load_gate_config(good, tmp_path).limits == {name: {key: 0.5}}
    bad = _write(tmp_path / "bad" / "rmaudit.toml", f"[limits.{name}]\n{key}_typo = 0.5\n")
    with pytest.raises(RmauditInputError, match="unknown limit"):
        load_gate_config(bad, tmp_path)


def test_consumer_is_read_and_checked(tmp_path: Path) -> None:
    good = _write(tmp_path / "ok" / "rmaudit.toml", 'consumer = "trl-ppo"\n')
    assert load_gate_config(good, tmp_path, known_probes=KNOWN).consumer == "trl-ppo"
    bad = _write(tmp_path / "bad" / "rmaudit.toml", 'consumer = "ppo"\n')
    with pytest.raises(RmauditInputError, match="field 'consumer': expected one of rmaudit, transformers, trl-grpo"):
        load_gate_config(bad, tmp_path, known_probes=KNOWN)
