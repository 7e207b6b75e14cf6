"""`chat_template`: will the RM read PPO's conversations the way it read its training data?

The policy's template comes from ``--policy`` (its tokenizer's chat template; a tokenizer
without one is matched to a known family in ``probes/templates`` by its special tokens,
and the verdict is capped at warn because that is a guess), else from the template text
recorded in the checkpoint's manifest (what the RM was trained with), else, when
``--chat-template`` replaced the tokenizer's template, from the checkpoint's own template
(what consumers that render with the saved tokenizer read). The RM side is the template the
audit reads with: ``--chat-template`` when given, which warns when the saved tokenizer
carries another one.

Sample conversations (real eval pairs, plus a system-prompt and a multi-turn probe that
real data may lack) are rendered with both templates and compared: identical, whitespace
only, or a different format. Held-out pairs are then scored under both, each side
rendered with its own tokenizer's special tokens; the per-response reward shift is
reported in reward-stds with the accuracy change. A double BOS (rendered text starts with
BOS and the tokenizer adds another when encoding it) is flagged on either side.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rmaudit.data.pairs import Message, PreferencePair
from rmaudit.data.store import head
from rmaudit.probes.base import Probe, ProbeSkipped, clip_evidence, metric, with_reasons
from rmaudit.resources import probe_data_dir
from rmaudit.findings import Comparison, Finding, Limit, Setting, Status, note, worst
from rmaudit.results import ProbeResult
from rmaudit.stats import pair_credit
from rmaudit.scoring import FALLBACK_TEMPLATE, render

N_RENDERED = 8

# Shapes real preference data often lacks but a policy's conversations may have.
STRUCTURE_PROBES: list[list[Message]] = [
    [{"role": "system", "content": "You are a concise assistant."},
     {"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "Paris."}],
    [{"role": "user", "content": "Give me a number."},
     {"role": "assistant", "content": "Seven."},
     {"role": "user", "content": "Another one, please."},
     {"role": "assistant", "content": "Forty-two."}],
]

# Special tokens that identify a template family in a tokenizer's vocabulary (checked in order).
FAMILY_TOKENS = [
    ("llama3", "<|start_header_id|>"),
    ("chatml", "<|im_start|>"),
    ("gemma", "<start_of_turn>"),
    ("mistral", "[INST]"),
]


# Set by the audit's loader when --chat-template replaced the tokenizer's own template: what a
# consumer that renders with the saved tokenizer (TRL GRPO) reads; the reference without a policy.
SAVED_TEMPLATE = "rmaudit_saved_chat_template"
SAVED_SOURCE = "the checkpoint's own template, which consumers rendering with its tokenizer (TRL GRPO) read"


@dataclass
class PolicyTemplate:
    """The template PPO will use, the tokenizer whose special tokens fill it, and where it came from."""

    text: str
    tokenizer: Any
    source: str
    inferred: bool = False


@dataclass
class Rendering:
    """One conversation rendered by the RM's and the policy's template."""

    index: int
    origin: str
    rm_text: str | None
    policy_text: str | None
    kind: str           # identical | whitespace | different | error
    detail: str


def known_templates() -> dict[str, str]:
    """Known chat templates shipped in ``probes/templates``, by family name."""
    folder = probe_data_dir() / "templates"
    return {path.stem: path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.jinja"))}


def template_text(tokenizer: Any) -> str | None:
    """The tokenizer's default chat template (named templates: the 'default' one)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    return template or None


def infer_family(tokenizer: Any) -> str | None:
    """The template family whose special tokens the tokenizer has, if any."""
    vocab = tokenizer.get_vocab()
    return next((family for family, token in FAMILY_TOKENS if token in vocab), None)


def policy_template(ctx) -> PolicyTemplate:
    """The policy side of the comparison, or ProbeSkipped naming what is missing."""
    policy = ctx.policy_tokenizer
    if policy is not None:
        text = template_text(policy)
        if text:
            return PolicyTemplate(text, policy, "policy tokenizer")
        family = infer_family(policy)
        if family is None:
            raise ProbeSkipped("the --policy tokenizer has no chat template and no known template family's special tokens")
        return PolicyTemplate(known_templates()[family], policy, f"no template in the policy tokenizer; inferred {family} from its special tokens", inferred=True)
    text = ctx.manifest.chat_template if ctx.manifest is not None else None
    if text:
        return PolicyTemplate(text, ctx.tokenizer, "chat template recorded in the manifest at training time")
    saved = getattr(ctx.tokenizer, SAVED_TEMPLATE, None)
    if isinstance(saved, str) and saved:  # a dict of named templates has no one format to compare
        return PolicyTemplate(saved, ctx.tokenizer, SAVED_SOURCE)
    raise ProbeSkipped("missing input: policy_tokenizer (--policy), and the checkpoint's manifest records no chat template")


# Markers of each family in rendered text, for templates that are variants of a known one.
FAMILY_MARKERS = [
    ("llama3", "<|start_header_id|>"),
    ("chatml", "<|im_start|>"),
    ("gemma", "<start_of_turn>"),
    ("llama2", "<<SYS>>"),
    ("zephyr", "<|assistant|>"),
    ("mistral", "[INST]"),
]


def template_family(text: str, tokenizer: Any) -> str:
    """The known template that renders exactly like ``text`` does, else 'FAMILY-like' by
    its markers, else 'custom'."""
    try:
        targets = [render(tokenizer, probe, text) for probe in STRUCTURE_PROBES]
    except Exception:
        return "custom"
    for family, known in known_templates().items():
        try:
            if [render(tokenizer, probe, known) for probe in STRUCTURE_PROBES] == targets:
                return family
        except Exception:
            continue
    return next((f"{family}-like" for family, marker in FAMILY_MARKERS if marker in targets[0]), "custom")


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def first_difference(a: str, b: str) -> str:
    """Where two renderings first part, shown with escapes so whitespace is visible."""
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    start = max(0, i - 30)
    return f"at char {i}: reward model {a[start:i + 30]!r} vs policy {b[start:i + 30]!r}"


def compare(index: int, origin: str, messages: Sequence[Message], rm: tuple[Any, str], policy: PolicyTemplate) -> Rendering:
    """Render one conversation both ways and classify the difference."""
    texts: list[str | None] = []
    errors = []
    for who, tokenizer, template in (("reward model", *rm), ("policy", policy.tokenizer, policy.text)):
        try:
            texts.append(render(tokenizer, messages, template))
        except Exception as exc:  # a template may refuse a role (e.g. no system role)
            texts.append(None)
            errors.append(f"{who} template cannot render it: {type(exc).__name__}: {exc}")
    rm_text, policy_text = texts
    if errors:
        return Rendering(index, origin, rm_text, policy_text, "error", "; ".join(errors))
    if rm_text == policy_text:
        return Rendering(index, origin, rm_text, policy_text, "identical", "")
    kind = "whitespace" if _squash(rm_text) == _squash(policy_text) else "different"
    return Rendering(index, origin, rm_text, policy_text, kind, first_difference(rm_text, policy_text))


def double_bos(tokenizer: Any, text: str) -> bool:
    """True when the text starts with BOS and encoding it adds another in front."""
    bos, bos_id = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "bos_token_id", None)
    if not bos or bos_id is None or not text.startswith(bos):
        return False
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    return len(ids) >= 2 and ids[0] == ids[1] == bos_id


def _accuracy(chosen: np.ndarray, rejected: np.ndarray) -> float:
    return float(np.mean(pair_credit(chosen - rejected)))


@dataclass
class ShiftResult:
    rm: np.ndarray          # rewards under the RM's template (chosen then rejected)
    policy: np.ndarray      # rewards under the policy's template
    n_pairs: int
    accuracy_rm: float
    accuracy_policy: float


def render_with_policy(pairs: Sequence[PreferencePair], policy: PolicyTemplate) -> list[tuple[PreferencePair, list[str]]]:
    """(pair, [chosen text, rejected text]) under the policy's template, for the pairs it renders."""
    rendered = []
    for pair in pairs:
        try:
            rendered.append((pair, [render(policy.tokenizer, m, policy.text) for m in (pair.chosen_messages(), pair.rejected_messages())]))
        except Exception:
            continue  # counted as unrenderable in the comparisons
    return rendered


def score_both(ctx, pairs: Sequence[PreferencePair], policy: PolicyTemplate) -> ShiftResult:
    """Rewards of the same pairs under both templates (RM side through the shared cache)."""
    rendered = render_with_policy(pairs, policy)
    if not rendered:
        raise ProbeSkipped("the policy template cannot render any of the pairs")
    kept = [p for p, _ in rendered]
    r_c, r_r = ctx.pair_rewards(kept)
    p_c = ctx.score_texts([texts[0] for _, texts in rendered])
    p_r = ctx.score_texts([texts[1] for _, texts in rendered])
    return ShiftResult(np.concatenate([r_c, r_r]), np.concatenate([p_c, p_r]), len(kept),
                       _accuracy(r_c, r_r), _accuracy(p_c, p_r))


class ChatTemplateProbe(Probe):
    """Render sample conversations with the RM's template and the policy's, diff them and
    score held-out pairs under both; fail on a different format or a large reward shift."""

    name = "chat_template"
    order = 30
    description = "Does the RM's chat template match the policy's (or the one it was trained with)? Rendered diff, reward shift, double BOS."
    why = ("An RM scored on a different chat format than it was trained on gives rewards PPO will happily exploit or ignore.\n"
           "Renders sample conversations with both templates, diffs them, and scores held-out pairs under both.")
    inputs = ("model",)
    limits = (
        Limit("conversations_different", Comparison.AT_LEAST, fail=1,
              help="sample conversations the two templates render in a different format"),
        Limit("conversations_whitespace", Comparison.AT_LEAST, warn=1,
              help="sample conversations whose renderings differ only in whitespace"),
        Limit("conversations_error", Comparison.AT_LEAST, warn=1, help="sample conversations a template cannot render"),
        Limit("mean_abs_shift_std", Comparison.AT_LEAST, fail=0.5,
              help="mean |reward shift| between the templates, in reward-stds"),
    )
    settings = (Setting("max_pairs", 100, "pairs scored under both templates (each costs two more forward passes)"),)

    def plan(self, ctx):
        pairs = head(ctx.eval_pairs or ctx.canonical_pairs, int(self.setting("max_pairs")))
        rendered = render_with_policy(pairs, policy_template(ctx))
        return [*super().plan(ctx), [text for _, texts in rendered for text in texts]]

    def run(self, ctx) -> ProbeResult:
        policy = policy_template(ctx)
        rm_template = template_text(ctx.tokenizer) or FALLBACK_TEMPLATE
        pairs = ctx.eval_pairs or ctx.canonical_pairs
        if not pairs:
            raise ProbeSkipped("no conversations to compare: give --data or keep the canonical pairs")

        comparisons = self._compare_all(pairs, (ctx.tokenizer, rm_template), policy)
        shift = score_both(ctx, head(pairs, int(self.setting("max_pairs"))), policy)
        std = ctx.reward_std()
        shifts_std = (shift.policy - shift.rm) / std
        bos = self._double_bos(ctx, comparisons, policy)

        metrics = self._metrics(ctx, rm_template, policy, comparisons, shift, shifts_std, bos)
        findings = self._findings(metrics, policy, ctx.notes)
        return self.result(
            findings, with_reasons(self._summary(metrics), findings), metrics=metrics,
            evidence=[self._evidence_row(c) for c in comparisons],
            chart=self._charts(comparisons, shifts_std),
        )

    @staticmethod
    def _compare_all(pairs, rm: tuple[Any, str], policy: PolicyTemplate) -> list[Rendering]:
        samples = [(f"{Path(p.source).name or 'pair'} row {p.row}", p.chosen_messages()) for p in head(pairs, N_RENDERED)]
        samples += [(f"structure probe: {'system prompt' if i == 0 else 'multi-turn'}", m) for i, m in enumerate(STRUCTURE_PROBES)]
        return [compare(i, origin, messages, rm, policy) for i, (origin, messages) in enumerate(samples)]

    @staticmethod
    def _double_bos(ctx, comparisons, policy: PolicyTemplate) -> dict[str, bool]:
        first = next((c for c in comparisons if c.rm_text is not None and c.policy_text is not None), None)
        if first is None:
            return {"reward_model": False, "policy": False}
        return {"reward_model": double_bos(ctx.tokenizer, first.rm_text),
                "policy": double_bos(policy.tokenizer, first.policy_text)}

    def _findings(self, m: dict[str, Any], policy: PolicyTemplate, ctx_notes: dict) -> list[Finding]:
        n = sum(m[f"conversations_{k}"] for k in ("identical", "whitespace", "different", "error"))
        findings = [
            self.limit("conversations_different").check(
                m["conversations_different"], f"{m['conversations_different']} of {n} sample conversations render "
                                              "in a different format"),
            self.limit("conversations_whitespace").check(
                m["conversations_whitespace"], f"{m['conversations_whitespace']} of {n} renderings differ only in whitespace"),
            self.limit("conversations_error").check(
                m["conversations_error"], f"a template cannot render {m['conversations_error']} of {n} sample "
                                          "conversations (see evidence)"),
            self.limit("mean_abs_shift_std").check(
                m["mean_abs_shift_std"], f"rewards shift by {m['mean_abs_shift_std']} reward-std on average "
                                         "between the templates"),
        ]
        for side, key in (("reward model", "double_bos_rm"), ("policy", "double_bos_policy")):
            if m[key]:
                findings.append(note(Status.WARN, f"double BOS on the {side} side: the rendered text starts with BOS "
                                     "and the tokenizer adds another when encoding it", key, True))
        if ctx_notes.get("chat_template_source") == "manifest":
            findings.append(note(Status.WARN, "the checkpoint's tokenizer has no chat template (restored from the "
                                 "manifest for this audit): anyone loading it without rmaudit renders a different format",
                                 "rm_template_source", "manifest"))
        if ctx_notes.get("chat_template_source") == "--chat-template" and ctx_notes.get("checkpoint_template_differs") \
                and policy.source != SAVED_SOURCE:  # compared against it, the findings above say it
            findings.append(note(Status.WARN, "the RM was read with --chat-template, and the checkpoint's tokenizer "
                                 "carries another template (or none): a consumer that renders with the saved tokenizer "
                                 "(TRL GRPO, transformers pipelines) reads a format the RM was not trained on; save the "
                                 "training template into the checkpoint", "rm_template_source", "--chat-template"))
        if policy.inferred and worst(f.status for f in findings) is Status.PASS:
            findings.append(note(Status.WARN, policy.source + ": set the policy's real template to confirm",
                                 "policy_template_source", policy.source))
        return findings

    @staticmethod
    def _metrics(ctx, rm_template, policy, comparisons, shift: ShiftResult, shifts_std, bos) -> dict[str, Any]:
        counts = {k: sum(c.kind == k for c in comparisons) for k in ("identical", "whitespace", "different", "error")}
        return {
            "rm_template_source": "tokenizer" if template_text(ctx.tokenizer) else "none in the tokenizer: rmaudit's plain fallback",
            "policy_template_source": policy.source,
            "rm_template_family": template_family(rm_template, ctx.tokenizer),
            "policy_template_family": template_family(policy.text, policy.tokenizer),
            "templates_identical": rm_template == policy.text,
            **{f"conversations_{k}": v for k, v in counts.items()},
            "n_pairs_scored": shift.n_pairs,
            "mean_shift_std": metric(float(np.mean(shifts_std))),
            "mean_abs_shift_std": metric(float(np.mean(np.abs(shifts_std)))),
            "max_abs_shift_std": metric(float(np.max(np.abs(shifts_std)))),
            "accuracy_rm_template": metric(shift.accuracy_rm),
            "accuracy_policy_template": metric(shift.accuracy_policy),
            "accuracy_change": metric(shift.accuracy_policy - shift.accuracy_rm),
            "double_bos_rm": bos["reward_model"],
            "double_bos_policy": bos["policy"],
        }

    @staticmethod
    def _evidence_row(c: Rendering) -> dict[str, Any]:
        diff = ""
        if c.rm_text is not None and c.policy_text is not None and c.kind != "identical":
            lines = difflib.unified_diff(c.rm_text.splitlines(keepends=True), c.policy_text.splitlines(keepends=True),
                                         "reward model", "policy", n=1)
            diff = "".join(lines)
        return {"conversation": c.origin, "kind": c.kind, "where": c.detail,
                "reward_model": clip_evidence(c.rm_text), "policy": clip_evidence(c.policy_text), "diff": clip_evidence(diff)}

    @staticmethod
    def _charts(comparisons, shifts_std) -> dict[str, Any]:
        shown = next((c for c in comparisons if c.kind in ("different", "whitespace")), None)
        shown = shown or next((c for c in comparisons if c.rm_text is not None and c.policy_text is not None), None)
        charts = []
        if shown is not None:
            charts.append({"kind": "diff", "title": f"Rendered conversation ({shown.origin})",
                           "left_label": "reward model", "right_label": "policy",
                           "left": shown.rm_text, "right": shown.policy_text})
        charts.append({"kind": "histogram", "title": "Reward shift, policy template minus RM template",
                       "x_label": "shift / reward std", "series": [{"name": "shift", "values": [float(v) for v in shifts_std]}],
                       "vlines": [{"x": 0.0, "label": "0"}]})
        return {"charts": charts}

    @staticmethod
    def _summary(metrics: dict[str, Any]) -> str:
        return (f"RM template {metrics['rm_template_family']} vs policy {metrics['policy_template_family']} "
                f"({metrics['policy_template_source']}): {metrics['conversations_identical']} identical, "
                f"{metrics['conversations_whitespace']} whitespace-only, {metrics['conversations_different']} different renderings; "
                f"mean |shift| {metrics['mean_abs_shift_std']} reward-std, accuracy {metrics['accuracy_rm_template']} -> "
                f"{metrics['accuracy_policy_template']}")


