"""`rmaudit selftest` catches a blind auditor: with the padding probe disabled, the pad-id bug
case is reported as missed and the command exits 1. (.ci/run runs the full selftest.)"""

from __future__ import annotations

import pytest

from rmaudit.cli import main
from rmaudit.findings import Status, note
from rmaudit.probes.padding import PaddingProbe
from rmaudit.selftest import run_selftest
from tiny_models import require_smollm2


@pytest.fixture(autouse=True)
def _smollm2():
    require_smollm2()


def test_the_pad_id_bug_is_caught_and_the_healthy_twin_passes(capsys):
    assert main(["selftest", "--case", "healthy,pad_id_bug"]) == 0
    out = capsys.readouterr().out
    assert "padding fail" in out and "PASS: all 2 cases" in out


def test_a_blind_probe_makes_the_selftest_fail(monkeypatch, capsys):
    def blind(self, ctx):
        return self.result([note(Status.PASS, "looked away")], "nothing to see")

    monkeypatch.setattr(PaddingProbe, "run", blind)
    [item] = run_selftest(["pad_id_bug"])
    assert not item.ok and item.statuses["padding"] is Status.PASS
    assert main(["selftest", "--case", "pad_id_bug"]) == 1
    assert "FAILED: pad_id_bug" in capsys.readouterr().out


def test_an_unknown_case_is_an_input_error(capsys):
    assert main(["selftest", "--case", "nope"]) == 2
    assert "unknown case(s) nope" in capsys.readouterr().err
