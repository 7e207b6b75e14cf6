"""The contract every registered probe keeps, checked over the whole registry.

Each probe: documents itself (class docstring, description, why, help on every limit and
setting), declares inputs the context really has, fails its planted defect and passes its
healthy twin (tests/probe_fixtures.py), returns findings of the documented shape whose
worst status is the probe's status, survives a JSON round trip, and skips with a reason
that names the flag when a declared input is missing.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from probe_fixtures import FIXTURES
from rmaudit.findings import Comparison, Finding, Status, worst
from rmaudit.probes.base import Probe
from rmaudit.probes.context import INPUT_FLAGS, AuditContext
from rmaudit.probes.registry import BrokenProbe, load_probes
from rmaudit.results import ProbeResult
from rmaudit.runner import run_probe
from tiny_models import require_smollm2

PROBES = load_probes()
CONTEXT_FIELDS = {f.name for f in dataclasses.fields(AuditContext)}


def test_every_registered_probe_has_contract_fixtures():
    assert set(PROBES) <= set(FIXTURES), f"add a planted and a healthy fixture for {set(PROBES) - set(FIXTURES)}"
    assert not [n for n, p in PROBES.items() if isinstance(p, BrokenProbe)]


@pytest.mark.parametrize("name", list(PROBES))
def test_probe_documents_itself_and_declares_real_inputs(name):
    cls = PROBES[name]
    assert issubclass(cls, Probe) and cls.name == name
    assert cls.__doc__ and cls.__doc__ is not Probe.__doc__ and len(cls.__doc__.strip()) > 40
    assert cls.description.strip() and len(cls.why.split("\n")) == 2
    assert set(cls.inputs) <= CONTEXT_FIELDS and set(cls.inputs) <= set(INPUT_FLAGS)
    for limit in cls.limits:
        assert limit.help and (limit.warn is not None or limit.fail is not None)
        assert isinstance(limit.comparison, Comparison)
    for setting in cls.settings:
        assert setting.help
    assert len(set(cls.limit_keys()) | {s.name for s in cls.settings}) == len(cls.limit_keys()) + len(cls.settings)


def _check_shape(result: ProbeResult) -> None:
    assert result.findings, "a probe that reached a verdict says why"
    for finding in result.findings:
        assert isinstance(finding, Finding) and isinstance(finding.status, Status)
        assert finding.message.strip() and "\n" not in finding.message
        if finding.comparison is not None:
            assert finding.metric, "a graded finding names its metric"
    if result.status not in (Status.SKIP, Status.ERROR):
        assert result.status is worst(f.status for f in result.findings) or result.status is Status.WARN
    again = ProbeResult.from_dict(json.loads(json.dumps(result.to_dict(), allow_nan=False)))
    assert again.status is result.status and [f.to_dict() for f in again.findings] == [f.to_dict() for f in result.findings]


@pytest.mark.parametrize("name", list(PROBES))
def test_planted_defect_fails_and_healthy_twin_passes(name, tmp_path):
    require_smollm2()
    healthy_ctx, planted_ctx = (factory(tmp_path / kind) for kind, factory in zip(("h", "p"), FIXTURES[name]))
    healthy = run_probe(PROBES[name](), healthy_ctx)
    planted = run_probe(PROBES[name](), planted_ctx)
    assert healthy.status is Status.PASS, healthy.summary
    assert planted.status in (Status.FAIL, Status.WARN), planted.summary
    for result in (healthy, planted):
        _check_shape(result)
    assert planted.reasons and all(f.status is planted.status for f in planted.reasons)


@pytest.mark.parametrize("name", [n for n in PROBES if PROBES[n].inputs])
def test_missing_declared_input_skips_with_a_reason_naming_the_flag(name, tmp_path):
    require_smollm2()
    ctx = FIXTURES[name][0](tmp_path)
    missing = PROBES[name].inputs[-1]
    setattr(ctx, missing, None)
    result = run_probe(PROBES[name](), ctx)
    assert result.status is Status.SKIP
    assert missing in result.summary and INPUT_FLAGS[missing] in result.summary


def test_docs_probes_md_is_generated_from_the_registry_and_current():
    """docs/probes.md is `rmaudit probes --markdown`: regenerate it after changing a probe."""
    from pathlib import Path

    from rmaudit.probes.catalogue import catalogue_markdown

    committed = (Path(__file__).resolve().parents[1] / "docs" / "probes.md").read_text(encoding="utf-8")
    assert committed == catalogue_markdown(), "docs/probes.md is stale: run `rmaudit probes --markdown > docs/probes.md`"
    for name, cls in PROBES.items():
        section = committed.split(f"## `{name}`", 1)[1].split("\n## ", 1)[0]
        assert all(f"`{lim.metric}`" in section for lim in cls.limits)
        assert all(f"`{s.name}`" in section for s in cls.settings)
