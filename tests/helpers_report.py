"""A realistic AuditResult for report tests: every status, every chart kind, hostile strings.

The numbers are computed from seeded synthetic data (a length-biased reward, a padding
bug, a shifted template) so charts have real shapes; the hostile strings sit where
dataset, tokenizer and checkpoint text ends up: evidence rows, summaries, metric names,
chart labels, categories and diff texts.
"""

from __future__ import annotations

import numpy as np

from rmaudit.findings import Comparison, Finding
from rmaudit.results import AuditResult, ProbeResult, Status

SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=2">'
CLOSE = "</script><!-- x"
HOSTILE = (SCRIPT, IMG, CLOSE)


def _length_bias(rng: np.random.Generator) -> ProbeResult:
    lengths = rng.integers(5, 400, size=300)
    rewards = 0.012 * lengths + rng.normal(0, 1.2, size=300)
    slope, intercept = np.polyfit(lengths, rewards, 1)
    r2 = float(np.corrcoef(lengths, rewards)[0, 1] ** 2)
    return ProbeResult(
        name="length_bias", status=Status.FAIL,
        summary=f"Reward explains length: R² = {r2:.2f} (fail at 0.3), +{slope * 100:.2f} reward per 100 tokens.",
        description="Regresses reward on response length in tokens.\nA length-driven RM teaches PPO to pad answers.",
        metrics={"r2": r2, "slope_per_100_tokens": float(slope * 100), "spearman": 0.61, "n_responses": 300},
        findings=[Finding(Status.FAIL, "length explains the reward", "r2", r2, 0.3, Comparison.AT_LEAST)],
        limits={"r2": {"comparison": ">=", "warn": 0.1, "fail": 0.3}},
        evidence=[
            {"row": 12, "tokens": 388, "reward": 4.1, "response": "Sure! " + "Here is a very long answer. " * 30},
            {"row": 40, "tokens": 7, "reward": -1.9, "response": SCRIPT},
            *({"row": 100 + i, "tokens": int(lengths[i]), "reward": float(rewards[i]), "response": f"answer {i}"}
              for i in range(20)),
        ],
        chart={"kind": "scatter", "title": "Reward vs response length", "x_label": "tokens", "y_label": "reward",
               "series": [{"name": "held-out responses", "x": lengths.tolist(), "y": rewards.tolist(),
                           "text": [IMG if i == 0 else f"row {i}" for i in range(300)]}],
               "fit": {"slope": float(slope), "intercept": float(intercept), "label": f"fit, R² = {r2:.2f}"},
               "note": f"R² = {r2:.3f}"},
        seconds=3.2,
    )


def _padding(rng: np.random.Generator) -> ProbeResult:
    deltas = np.abs(rng.normal(0, [0.001, 0.9, 0.002], size=(40, 3))).max(axis=0)
    return ProbeResult(
        name="padding", status=Status.FAIL,
        summary=f"Right-padded rewards move by {deltas[1]:.2f} reward std: the head reads a pad position.",
        description="Scores texts alone, right-padded and left-padded.\nPadding must not change a reward.",
        metrics={"max_delta_right_std": float(deltas[1]), "max_delta_left_std": float(deltas[2]), "pad_is_eos": True},
        findings=[Finding(Status.FAIL, "right-padded: rewards move", "max_delta_right_std", float(deltas[1]), 0.05,
                          Comparison.ABOVE),
                  Finding(Status.PASS, "left-padded: rewards move", "max_delta_left_std", float(deltas[2]), 0.05,
                          Comparison.ABOVE)],
        settings={"sample_size": 8},
        evidence=[{"text": "Human: hi\n\nAssistant: hello", "alone": 0.31, "right_padded": 1.22, "left_padded": 0.31}],
        chart={"kind": "bar", "title": "Largest reward change per padding mode", "y_label": "Δ reward / reward std",
               "categories": ["alone (re-run)", "right-padded", "left-padded"],
               "series": [{"name": "max |Δ|", "values": deltas.tolist()}],
               "hlines": [{"y": 0.05, "label": "tolerance"}]},
        seconds=1.1,
    )


def _chat_template(rng: np.random.Generator) -> ProbeResult:
    shift = rng.normal(0.35, 0.2, size=200)
    rm = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
    policy = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>" \
             "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>"
    return ProbeResult(
        name="chat_template", status=Status.WARN,
        summary=f"Templates differ; mean reward shift {shift.mean():.2f} std under the policy template.",
        description="Renders conversations with the RM's and the policy's chat templates.\n"
                    "PPO scores the policy's text; a different format shifts rewards.",
        metrics={"reward_shift_std": float(shift.mean()), "accuracy_change": -0.02, f"label {CLOSE}": 1},
        findings=[Finding(Status.WARN, f"policy template {SCRIPT} renders differently", f"label {CLOSE}", 1, 1,
                          Comparison.AT_LEAST)],
        limits={"reward_shift_std": {"comparison": ">=", "warn": None, "fail": 0.5}},
        chart={"charts": [
            {"kind": "diff", "title": "Rendered sample conversation", "left_label": "reward model (ChatML)",
             "right_label": f"policy {SCRIPT}", "left": rm + "trailing  \n", "right": policy + "\ntrailing \n"},
            {"kind": "histogram", "title": "Reward shift per pair", "x_label": "shift / reward std",
             "series": [{"name": "policy − RM template", "values": shift.tolist()}], "bins": 25,
             "vlines": [{"x": 0.5, "label": "fail at 0.5"}]},
        ]},
        seconds=2.4,
    )


def _bias_term() -> ProbeResult:
    return ProbeResult(
        name="bias_term", status=Status.PASS, summary="No bias tensor in the head; mean reward offset 0.04 std.",
        description="Reads the head's bias straight from the weight files.\nUnder BT a bias never trains; drift means something else touched it.",
        metrics={"bias": None, "reward_offset_std": 0.04},
        findings=[Finding(Status.PASS, "no reward-head bias", "bias", None)],
        chart={"kind": "bar", "title": "Head bias and reward offset", "categories": ["bias", "mean reward"],
               "series": [{"name": "value", "values": [0.0, 0.04]}]},
        seconds=0.2,
    )


def _leakage() -> ProbeResult:
    pairs = [{"train_prompt": "How do I bake bread?", "eval_prompt": "how do I  bake BREAD?", "similarity": 1.0},
             {"train_prompt": IMG, "eval_prompt": IMG + " ", "similarity": 0.97}]
    return ProbeResult(
        name="prompt_leakage", status=Status.SKIP, summary="Skipped: no --train-data and no train split in the manifest.",
        description="Finds eval prompts that also occur in training data.\nLeaked prompts inflate held-out accuracy.",
        chart={"kind": "table", "title": "Example leaked prompt pairs", "rows": pairs},
    )


def _canonical(rng: np.random.Generator) -> ProbeResult:
    cats = ["math", "refusal", f"format {SCRIPT}", "hallucination"]
    series = [{"name": c, "values": (rng.normal(1.2 - i * 0.6, 0.5, size=6)).tolist()} for i, c in enumerate(cats)]
    return ProbeResult(
        name="canonical_pairs", status=Status.ERROR,
        summary="RuntimeError: probes/canonical_pairs.jsonl: row 3: field 'chosen': expected a string",
        description="Scores hand-written pairs whose right answer is not in doubt.\nAny negative margin is a bug PPO will exploit.",
        chart={"kind": "box", "title": "Margins by category", "y_label": "margin (reward std)", "series": series,
               "hlines": [{"y": 1.0, "label": "required margin"}]},
        seconds=0.1,
    )


def _accuracy(rng: np.random.Generator) -> ProbeResult:
    margins = rng.normal(0.8, 1.5, size=500)
    conf = 1 / (1 + np.exp(-np.abs(margins)))
    correct = rng.random(500) < 1 / (1 + np.exp(-margins * 0.7))
    edges = np.linspace(0.5, 1.0, 6)
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (conf >= lo) & (conf < hi)
        if sel.any():
            bins.append({"confidence": float(conf[sel].mean()), "accuracy": float(correct[sel].mean()),
                         "count": int(sel.sum())})
    ece = sum(b["count"] * abs(b["confidence"] - b["accuracy"]) for b in bins) / 500
    return ProbeResult(
        name="accuracy", status=Status.PASS, summary=f"Held-out accuracy {correct.mean():.1%} on 500 pairs; ECE {ece:.3f}.",
        description="Held-out accuracy, margin distribution and calibration.\nThe baseline every other probe is read against.",
        metrics={"accuracy": float(correct.mean()), "ece": ece, "n_pairs": 500},
        findings=[Finding(Status.PASS, "accuracy on held-out pairs", "accuracy", float(correct.mean()), 0.6,
                          Comparison.BELOW)],
        limits={"accuracy": {"comparison": "<", "warn": 0.6, "fail": 0.5}},
        chart={"charts": [
            {"kind": "histogram", "title": "Margin distribution", "x_label": "r(chosen) − r(rejected)",
             "series": [{"name": "margin", "values": margins.tolist()}], "vlines": [{"x": 0, "label": "0"}]},
            {"kind": "reliability", "title": "Reliability diagram", "bins": bins, "ece": ece},
        ]},
        seconds=4.0,
    )


def sample_audit_result(fail_on: Status = Status.FAIL) -> AuditResult:
    """An audit with every status (pass, warn, fail, skip, error) and every chart kind."""
    rng = np.random.default_rng(7)
    return AuditResult(
        checkpoint=f"runs/rm-hh-{SCRIPT}/checkpoint-final",
        probes=[_length_bias(rng), _padding(rng), _chat_template(rng), _bias_term(), _leakage(),
                _canonical(rng), _accuracy(rng)],
        fail_on=fail_on, rmaudit_version="0.1.0", created_at="2026-11-26T15:40:00Z",
        context={"data": "hh-rlhf-harmless-base-test.jsonl.gz", "dtype": "bfloat16", "pooling": "mask",
                 "tokenizer_note": IMG},
    )
