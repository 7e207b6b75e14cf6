"""Probe `policy_rollouts`: the reward on the policy's own samples, before PPO sees it.

Every other probe scores human-written responses; PPO scores the policy's. With
``--policy POLICY`` (a causal-LM folder, or ``builtin`` for SmolLM2-135M-Instruct) the
audit samples ``--rollouts`` responses (default 4) to each of the first
``--rollout-prompts`` eval prompts (default 32) at temperature 1, or reads them from
``--rollouts-file`` (JSONL prompt/response from any policy: samples from PPO step 1000 work
too), scores them with the RM and reports:

* **Signal within a prompt.** The share of the reward variance that lies between samples of
  one prompt rather than between prompts. PPO with a per-prompt baseline (GRPO, RLOO, a
  value head) learns only from within-prompt differences; a reward that ranks prompts but
  not the policy's answers to one prompt gives it nothing to climb. 95% interval bootstrapped
  over prompts.
* **Length on policy samples.** R² and slope (reward-std per 100 tokens) of reward on
  response length within prompts (both demeaned per prompt): the length bias PPO will
  actually exploit, on the lengths this policy produces.
* **Best-of-n preview.** Per prompt, the RM's favourite sample against the median one:
  length ratio (geometric mean), share of refusals, of markdown/lists, repetition (share of
  repeated word 3-grams), with examples. Best-of-n tracks what RL over-optimisation finds
  (Gao et al., 2022): what the favourite has more of is what PPO will produce more of.
* **Normalisation.** Mean, std and percentiles of the reward on policy samples, written to
  ``reward_normalization.json`` with the settings for OpenRLHF (``mean``/``std`` in the RM's
  config.json with ``--normalize_reward``) and TRL; the samples go to ``rollouts.jsonl``
  beside the report (reusable with ``--rollouts-file``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

from rmaudit.findings import Comparison, Finding, Limit, Status, note
from rmaudit.probes.base import Probe, ProbeSkipped, clip_evidence, metric, percent, with_reasons
from rmaudit.rollouts import prompt_groups
from rmaudit.stats import cluster_bootstrap_statistic

REFUSAL = re.compile(r"\b(I can(?:no|')t|I cannot|I'm sorry|I am sorry|I apologi[sz]e|As an AI|I'm not able|"
                     r"I am not able|I won't|I will not)\b", re.IGNORECASE)
MARKDOWN = re.compile(r"^\s*(?:[-*+] |\d+[.)] |#{1,6} )|\*\*[^*\n]+\*\*", re.MULTILINE)
EXAMPLES = 6
NORMALIZATION_FILE = "reward_normalization.json"


def is_refusal(text: str) -> bool:
    return bool(REFUSAL.search(text[:300]))


def has_markdown(text: str) -> bool:
    return bool(MARKDOWN.search(text))


def repetition(text: str) -> float:
    """Share of the word 3-grams that repeat an earlier one (0 = none, near 1 = a loop)."""
    words = text.lower().split()
    grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


class PolicyRollouts(Probe):
    """Scores the policy's own samples: within-prompt reward signal, within-prompt length bias,
    a best-of-n preview (length, refusals, markdown, repetition) and the normalisation stats."""

    name = "policy_rollouts"
    order = 90
    section = "On-policy preflight: the policy's own samples"
    description = "On the policy's own samples: within-prompt signal, length bias, best-of-n preview, reward normalisation."
    why = ("PPO scores the policy's samples, not the human responses the other probes read: this is the reward it will\n"
           "climb, the length it will learn and the answers best-of-n (and then RL) will drift towards.")
    inputs = ("model",)
    limits = (
        Limit("within_prompt_share", Comparison.BELOW, warn=0.05, fail=0.01,
              help="share of the reward variance between samples of one prompt (the signal PPO learns from)"),
        Limit("within_prompt_length_r2", Comparison.AT_LEAST, warn=0.1, fail=0.3,
              help="R² of reward on response length within prompts, on policy samples"),
        Limit("bon_length_ratio", Comparison.AT_LEAST, warn=1.5,
              help="geometric-mean length of the RM's favourite sample over the median sample's"),
    )

    def run(self, ctx):
        rollouts, source = ctx.policy_samples()
        rewards = ctx.score([r.messages() for r in rollouts])
        keep = np.isfinite(rewards)
        if keep.sum() < 2:
            raise ProbeSkipped("fewer than 2 policy samples with a finite reward")
        rollouts = [r for r, k in zip(rollouts, keep) if k]
        rewards = rewards[keep]
        encoded = ctx.tokenizer([r.response for r in rollouts], add_special_tokens=False)["input_ids"]
        lengths = np.array([len(ids) for ids in encoded], dtype=np.float64)
        groups = prompt_groups(rollouts)
        multi = [g for g in groups if len(g) >= 2]     # prompts with a within-prompt comparison
        picks = [_best_and_median(g, rewards) for g in multi]
        metrics: dict[str, Any] = {"rollouts_source": source, "n_samples": len(rollouts), "n_prompts": len(groups),
                                   **_distribution(rewards), **_within(rewards, multi),
                                   **_length(rewards, lengths, multi), **_best_of_n(rollouts, lengths, picks)}
        normalization = _normalization(metrics)
        metrics["ppo_settings"] = _settings_line(normalization)   # `rmaudit check` prints it after the summary
        findings = self._findings(metrics) + [note(Status.PASS, metrics["ppo_settings"])]
        from rmaudit.rollouts import ROLLOUTS_FILE, rollouts_jsonl

        files = {ROLLOUTS_FILE: rollouts_jsonl(rollouts), NORMALIZATION_FILE: json.dumps(normalization, indent=2) + "\n"}
        return self.result(findings, with_reasons(_summary(metrics), findings), metrics=metrics,
                           evidence=_examples(rollouts, rewards, lengths, picks, metrics["reward_std"]),
                           chart=_chart(rewards, lengths), files=files)

    def _findings(self, m: dict[str, Any]) -> list[Finding]:
        findings = []
        if m["within_prompt_share"] is not None:
            findings.append(self.limit("within_prompt_share").check(m["within_prompt_share"], (
                f"{m['within_prompt_share']:.1%} of the reward variance on policy samples is within prompts (95% CI "
                f"{percent(m['within_prompt_share_ci_low'])}–{percent(m['within_prompt_share_ci_high'])}); within-prompt std "
                f"{m['within_prompt_std']:.3f} vs between-prompt {m['between_prompt_std']:.3f}")))
        if m["within_prompt_length_r2"] is not None and m["length_slope_std_per_100_tokens"] is None:
            findings.append(note(Status.PASS, "every sample of a prompt has the same length: no within-prompt "
                                              "length effect can be measured"))
        elif m["within_prompt_length_r2"] is not None:
            findings.append(self.limit("within_prompt_length_r2").check(m["within_prompt_length_r2"], (
                f"within prompts, length explains {m['within_prompt_length_r2']:.1%} of the reward on policy samples "
                f"({m['length_slope_std_per_100_tokens']:+.2f} reward-std per 100 tokens, 95% CI "
                f"{m['length_slope_ci_low']:+.2f} to {m['length_slope_ci_high']:+.2f})")))
        if m["bon_length_ratio"] is not None:
            finding = self.limit("bon_length_ratio").check(m["bon_length_ratio"], (
                f"the RM's favourite of each prompt's samples is {m['bon_length_ratio']:.2f}x the median sample's length; "
                f"refusals {m['bon_refusal_best']:.0%} vs {m['bon_refusal_median']:.0%}, markdown "
                f"{m['bon_markdown_best']:.0%} vs {m['bon_markdown_median']:.0%}, repetition "
                f"{m['bon_repetition_best']:.2f} vs {m['bon_repetition_median']:.2f}"))
            if finding.status is not Status.PASS:
                finding.message += ": best-of-n, then PPO, will drift to longer answers"
            findings.append(finding)
        return findings


def _distribution(rewards: np.ndarray) -> dict[str, Any]:
    q = np.quantile(rewards, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"reward_mean": metric(rewards.mean(), 6), "reward_std": metric(rewards.std(ddof=1), 6),
            "reward_min": metric(rewards.min()), "reward_max": metric(rewards.max()),
            "reward_p05": metric(q[0]), "reward_p25": metric(q[1]), "reward_median": metric(q[2]),
            "reward_p75": metric(q[3]), "reward_p95": metric(q[4])}


def _owner(multi: list[np.ndarray]) -> np.ndarray:
    """For each sample of the concatenated groups, the index of its prompt (the bootstrap cluster)."""
    return np.concatenate([np.full(len(g), k) for k, g in enumerate(multi)])


def _within(rewards: np.ndarray, multi: list[np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = {"within_prompt_share": None, "within_prompt_share_ci_low": None,
                           "within_prompt_share_ci_high": None, "within_prompt_std": None, "between_prompt_std": None}
    if len(multi) < 2:
        return out
    owner = _owner(multi)
    values = np.concatenate([rewards[g] for g in multi])

    def share(rows: np.ndarray) -> float:
        r, o = values[rows], owner[rows]
        means = np.array([r[o == k].mean() for k in np.unique(o)])
        within = float(np.mean([r[o == k].var() for k in np.unique(o)]))
        between = float(means.var())
        return within / (within + between) if within + between > 0 else float("nan")

    low, high = cluster_bootstrap_statistic(share, owner)
    within_var = float(np.mean([rewards[g].var(ddof=1) for g in multi]))
    return {"within_prompt_share": metric(share(np.arange(len(values)))), "within_prompt_share_ci_low": metric(low),
            "within_prompt_share_ci_high": metric(high), "within_prompt_std": metric(math.sqrt(within_var)),
            "between_prompt_std": metric(float(np.std([rewards[g].mean() for g in multi])))}


def _length(rewards: np.ndarray, lengths: np.ndarray, multi: list[np.ndarray]) -> dict[str, Any]:
    """Reward on length with both demeaned per prompt (only the differences PPO can exploit)."""
    out: dict[str, Any] = {"within_prompt_length_r2": None, "length_slope_std_per_100_tokens": None,
                           "length_slope_ci_low": None, "length_slope_ci_high": None,
                           "mean_response_tokens": metric(lengths.mean(), 1)}
    if len(multi) < 2:
        return out
    owner = _owner(multi)
    r = np.concatenate([rewards[g] - rewards[g].mean() for g in multi])
    x = np.concatenate([lengths[g] - lengths[g].mean() for g in multi])
    scale = float(rewards.std()) or 1.0

    def slope(rows: np.ndarray) -> float:
        xx = x[rows]
        return float((xx * r[rows]).sum() / (xx * xx).sum()) * 100 / scale if (xx * xx).sum() > 0 else float("nan")

    everything = np.arange(len(r))
    r2 = float(np.corrcoef(x, r)[0, 1] ** 2) if x.std() > 0 and r.std() > 0 else 0.0
    low, high = cluster_bootstrap_statistic(slope, owner)
    out.update(within_prompt_length_r2=metric(r2), length_slope_std_per_100_tokens=metric(slope(everything)),
               length_slope_ci_low=metric(low), length_slope_ci_high=metric(high))
    return out


def _best_and_median(group: np.ndarray, rewards: np.ndarray) -> tuple[int, int]:
    order = group[np.argsort(rewards[group], kind="stable")]
    return int(order[-1]), int(order[(len(order) - 1) // 2])


def _best_of_n(rollouts, lengths: np.ndarray, picks: list[tuple[int, int]]) -> dict[str, Any]:
    """The favourite of each prompt's samples against its median sample (``picks``)."""
    keys = ("bon_length_ratio", "bon_refusal_best", "bon_refusal_median", "bon_markdown_best", "bon_markdown_median",
            "bon_repetition_best", "bon_repetition_median")
    if not picks:
        return dict.fromkeys(keys)
    best, median = [b for b, _ in picks], [m for _, m in picks]
    texts = [r.response for r in rollouts]
    ratio = float(np.exp(np.mean(np.log((lengths[best] + 1) / (lengths[median] + 1)))))
    return {"bon_length_ratio": metric(ratio, 3),
            "bon_refusal_best": metric(float(np.mean([is_refusal(texts[i]) for i in best]))),
            "bon_refusal_median": metric(float(np.mean([is_refusal(texts[i]) for i in median]))),
            "bon_markdown_best": metric(float(np.mean([has_markdown(texts[i]) for i in best]))),
            "bon_markdown_median": metric(float(np.mean([has_markdown(texts[i]) for i in median]))),
            "bon_repetition_best": metric(float(np.mean([repetition(texts[i]) for i in best]))),
            "bon_repetition_median": metric(float(np.mean([repetition(texts[i]) for i in median])))}


def _normalization(m: dict[str, Any]) -> dict[str, Any]:
    """What reward_normalization.json holds: the statistics and the settings that use them."""
    mean, std = m["reward_mean"], m["reward_std"]
    return {
        "n_samples": m["n_samples"], "n_prompts": m["n_prompts"], "source": m["rollouts_source"],
        "mean": mean, "std": std,
        "percentiles": {p: m[f"reward_{k}"] for p, k in (("5", "p05"), ("25", "p25"), ("50", "median"),
                                                          ("75", "p75"), ("95", "p95"))},
        "within_prompt_std": m["within_prompt_std"],
        "settings": {
            "openrlhf": {"config.json": {"mean": mean, "std": std}, "flag": "--normalize_reward"},
            "trl": {"reward_function": f"(reward {_minus(mean)}) / {std}",
                    "grpo_rloo": "scale_rewards='group' divides by the within-prompt std "
                                 f"(here {m['within_prompt_std']}); 'batch' by the batch std (here {std})"},
        },
    }


def _settings_line(n: dict[str, Any]) -> str:
    return (f"normalisation on {n['n_samples']} policy samples: mean {n['mean']:+.4f}, std {n['std']:.4f} "
            f"(reward_normalization.json). OpenRLHF: add \"mean\": {n['mean']:.6g}, \"std\": {n['std']:.6g} to the RM's "
            f"config.json and pass --normalize_reward. TRL: reward = (r {_minus(n['mean'])}) / {n['std']:.6g}")


def _minus(mean: float) -> str:
    """"- 1.5" or "+ 2.5": subtracting the mean, written the way a person would."""
    return f"- {mean:.6g}" if mean >= 0 else f"+ {-mean:.6g}"


def _summary(m: dict[str, Any]) -> str:
    parts = [f"{m['n_samples']} policy samples on {m['n_prompts']} prompts; reward mean {m['reward_mean']:+.3f}, "
             f"std {m['reward_std']:.3f}"]
    if m["within_prompt_share"] is not None:
        parts.append(f"{m['within_prompt_share']:.0%} of the variance within prompts")
    if m["bon_length_ratio"] is not None:
        parts.append(f"best-of-n length x{m['bon_length_ratio']:.2f}")
    return "; ".join(parts)


def _examples(rollouts, rewards, lengths, picks, std) -> list[dict[str, Any]]:
    """The prompts where the RM's favourite beats the median sample by the most."""
    rows = []
    for best, median in sorted(picks, key=lambda bm: -(rewards[bm[0]] - rewards[bm[1]]))[:EXAMPLES]:
        rows.append({"prompt": clip_evidence(rollouts[best].prompt[-1]["content"]),
                     "favourite": clip_evidence(rollouts[best].response), "median_sample": clip_evidence(rollouts[median].response),
                     "reward_gap_std": metric((rewards[best] - rewards[median]) / std if std else None, 2),
                     "tokens_favourite": int(lengths[best]), "tokens_median": int(lengths[median])})
    return rows


def _chart(rewards: np.ndarray, lengths: np.ndarray) -> dict[str, Any]:
    return {"charts": [
        {"kind": "scatter", "title": "Reward vs length on policy samples", "x_label": "response tokens",
         "y_label": "reward", "series": [{"name": "sample", "x": [float(v) for v in lengths],
                                           "y": [metric(v) for v in rewards]}]},
        {"kind": "histogram", "title": "Reward on policy samples", "x_label": "reward",
         "series": [{"name": "reward", "values": [metric(v) for v in rewards]}]},
    ]}
