"""False-discovery-rate control across every hypothesis test of one audit.

An audit of 16 probes runs dozens of tests (seven style edits, the length-accuracy gap,
...). At 5% each, some "significant" effect turns up by chance in most audits of a healthy
model. A finding that rests on a test carries its ``p_value``; after all probes ran,
:func:`control_false_discoveries` adjusts every such p-value with Benjamini-Hochberg across
the whole audit (``p_adjusted``, a q-value). A warn or fail whose q-value is above the FDR
level (``--fdr``, default 0.05) is not a discovery: a fail becomes a warn, the message says
why, and the probe's status is recomputed. Effect-size limits without a test (R² >= 0.3)
are not touched. The report's context states the method and how many tests it covered.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rmaudit.findings import Status, worst
from rmaudit.results import ProbeResult
from rmaudit.stats import benjamini_hochberg

DEFAULT_FDR = 0.05


def control_false_discoveries(results: list[ProbeResult], fdr: float = DEFAULT_FDR) -> dict[str, Any]:
    """Fill ``p_adjusted`` on every tested finding, demote fails that are not discoveries; return
    the context facts that describe what was done."""
    tested = [(probe, finding) for probe in results for finding in probe.findings
              if finding.p_value is not None and math.isfinite(finding.p_value)]
    if not tested:
        return {"multiple_testing": "no finding rests on a hypothesis test: nothing to adjust"}
    q_values = benjamini_hochberg(np.array([f.p_value for _, f in tested]))
    demoted: dict[int, ProbeResult] = {}
    for (probe, finding), q in zip(tested, q_values):
        finding.p_adjusted = float(f"{q:.4g}")  # significant digits: q-values of 1e-9 matter
        if finding.status is Status.FAIL and q > fdr:
            finding.status = Status.WARN
            finding.message += (f" [not a discovery after Benjamini-Hochberg across {len(tested)} tests: "
                                f"q = {q:.3g} > FDR {fdr:g}; fail lowered to warn]")
            demoted[id(probe)] = probe
    for result in demoted.values():
        if result.status in (Status.PASS, Status.WARN, Status.FAIL):
            result.status = worst(f.status for f in result.findings if f.status is not Status.SKIP)
            result.summary += " (a fail was lowered to warn: not significant after FDR control)"
    discoveries = sum(1 for q in q_values if q <= fdr)
    return {"multiple_testing": (f"Benjamini-Hochberg across {len(tested)} hypothesis tests of this audit at FDR "
                                 f"{fdr:g}: {discoveries} significant after adjustment, {len(demoted)} fail(s) "
                                 "lowered to warn")}
