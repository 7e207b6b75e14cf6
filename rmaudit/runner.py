"""Run probes on a built :class:`AuditContext` and assemble the :class:`AuditResult`.

Each probe is constructed with the user's limit and setting overrides (unknown keys are
input errors, before any model is loaded), checked for its declared ``inputs`` (a missing
one is a skip whose reason names the flag), run and timed. :class:`ProbeSkipped` becomes
``skip``; any other exception becomes ``error`` while the other probes still run.

Before the first probe runs, :func:`score_plan` scores what every runnable probe planned
(``Probe.plan``) in one stream of length-sorted, token-budgeted batches, so each distinct
text is tokenised and scored once per audit and the probes read their rewards from the cache.
"""

from __future__ import annotations

import itertools
import sys
import time
import traceback
from datetime import datetime, timezone
from typing import Any

from rmaudit import __version__
from rmaudit.distributed import gather_scores, world
from rmaudit.findings import Status, note
from rmaudit.multiple_testing import control_false_discoveries
from rmaudit.options import AuditOptions
from rmaudit.probes.base import Probe, ProbeSkipped, dtype_name
from rmaudit.probes.context import AuditContext, TokenReadings
from rmaudit.probes.registry import BrokenProbe, get_probe, select_probes
from rmaudit.results import AuditResult, ProbeResult


def prepare_probes(options: AuditOptions) -> list[Probe | BrokenProbe]:
    """The selected probes, configured; bad names or override keys fail here, before any slow work."""
    prepared: list[Probe | BrokenProbe] = []
    selected = select_probes(options.probes)
    names = selected + [n for n in required_probes(options) if n not in selected]  # required ones always run
    for name in names:
        cls = get_probe(name)
        if isinstance(cls, BrokenProbe):
            prepared.append(cls)
            continue
        prepared.append(cls(options.limits.get(name), options.settings.get(name)))
    # Overrides for probes that are not selected are still checked: a typo must not hide.
    for name in (set(options.limits) | set(options.settings)) - {p.name for p in prepared}:
        cls = get_probe(name)
        if not isinstance(cls, BrokenProbe):
            cls(options.limits.get(name), options.settings.get(name))
    return prepared


def required_probes(options: AuditOptions) -> list[str]:
    """The probes that must reach a verdict (``--require``); unknown names are input errors."""
    if not options.require:
        return []
    return select_probes(options.require, flag="--require")


def run_probe(probe: Probe | BrokenProbe, ctx: AuditContext) -> ProbeResult:
    """Run one probe; a skip or a crash becomes its result instead of stopping the audit."""
    if isinstance(probe, BrokenProbe):
        return ProbeResult(probe.name, Status.ERROR, f"cannot import {probe.target}: {probe.error}",
                           findings=[note(Status.ERROR, f"the probe's module failed to import: {probe.error}")])
    start = time.perf_counter()
    try:
        ctx.require(*probe.inputs)
        result = probe.run(ctx)
    except ProbeSkipped as skip:
        result = probe.result([note(Status.SKIP, str(skip))], f"skipped: {skip}", status=Status.SKIP)
    except Exception as exc:  # noqa: BLE001 - one broken probe must not hide the others' findings
        tail = traceback.format_exc(limit=-3).strip().splitlines()[-12:]
        message = f"{type(exc).__name__}: {exc}"
        result = probe.result([note(Status.ERROR, message)], message, status=Status.ERROR,
                              evidence=[{"traceback": "\n".join(tail)}])
    result.seconds = time.perf_counter() - start
    return result


def score_plan(ctx: AuditContext, probes: list[Probe | BrokenProbe]) -> None:
    """Score every text the runnable probes planned, each distinct text once, before any probe
    runs; what it scored and how long it took go in the report context (``scoring_plan``).
    A probe whose plan fails is left to report the failure when it runs."""
    from rmaudit.scoring import CHUNK_TEXTS

    if ctx.model is None:
        return
    plans: dict[int, Any] = {}  # id -> texts: the labelled texts are one shared object, read once
    for probe in probes:
        if isinstance(probe, BrokenProbe):
            continue
        try:
            ctx.require(*probe.inputs)
            plans.update((id(texts), texts) for texts in probe.plan(ctx))
        except Exception:  # noqa: BLE001 - ProbeSkipped or a bug: run_probe reports it with its reason
            continue
    rank, size = world()
    # Token-id readings join the first chunk of texts, to be read inside the texts they begin;
    # across processes they are left to the probe (its rank reads them, no gather needed).
    readings = [r for plan in plans.values() if isinstance(plan, TokenReadings) for r in plan] if size == 1 else []
    texts = [plan for plan in plans.values() if not isinstance(plan, TokenReadings)]
    total = sum(len(t) for t in texts)
    if not total:
        return
    known, start = ctx.scores()[0], time.perf_counter()
    if ctx.progress:
        print(f"rmaudit: scoring the plan of every probe ({total:,} texts"
              f"{f', process {rank + 1} of {size}' if size > 1 else ''}) ...", file=sys.stderr, flush=True)
    with ctx.progress_bar(-(-total // size)):
        chunk: list[str] = []
        stream = itertools.chain.from_iterable(texts)  # one stream: full batches across probes
        for text in itertools.islice(stream, rank, None, size):  # this process' share of it
            chunk.append(text)
            if len(chunk) == CHUNK_TEXTS:
                ctx.score_texts(chunk, readings)
                chunk, readings = [], []
        ctx.score_texts(chunk, readings)
    scored_here = ctx.n_scored - len(known)
    ctx.add_scores(*gather_scores(*ctx.scores(exclude=known)))
    ctx.notes["scoring_plan"] = {"planned_texts": total, "distinct_texts_scored": ctx.n_scored - len(known),
                                 "token_readings_read": len(ctx.token_rewards()),
                                 "seconds": round(time.perf_counter() - start, 3),
                                 **({"processes": size, "scored_by_process_0": scored_here} if size > 1 else {})}


def run_probes(ctx: AuditContext, options: AuditOptions,
               probes: list[Probe | BrokenProbe] | None = None) -> AuditResult:
    """Score the probes' plan, then run the selected probes on an already-built context."""
    options = options.validated()
    results = []
    probes = probes if probes is not None else prepare_probes(options)
    score_plan(ctx, probes)
    for probe in probes:
        if options.progress:
            print(f"rmaudit: running {probe.name} ...", file=sys.stderr, flush=True)
        results.append(run_probe(probe, ctx))
    method = control_false_discoveries(results, options.fdr)
    return AuditResult(
        checkpoint=str(ctx.checkpoint),
        probes=results,
        fail_on=Status(options.fail_on.value),
        required=required_probes(options),
        rmaudit_version=__version__,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        context={**context_facts(ctx), **method, **({"audit_record": ctx.record["digest"]} if ctx.record else {})},
        record=ctx.record,
    )


def context_facts(ctx: AuditContext) -> dict[str, Any]:
    """What the report should say about the inputs: pooling, dtype, data sizes and sources."""
    return {
        "checkpoint": str(ctx.checkpoint),
        "manifest_present": ctx.manifest is not None,
        "dtype": dtype_name(ctx.dtype),
        "max_length": ctx.max_length,
        "n_eval_pairs": len(ctx.eval_pairs or []),
        "n_train_pairs": len(ctx.train_pairs or []),
        "n_canonical_pairs": len(ctx.canonical_pairs),
        "policy_tokenizer": ctx.policy_tokenizer is not None,
        **ctx.notes,
    }
