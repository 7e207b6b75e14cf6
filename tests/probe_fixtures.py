"""A planted-defect context and its healthy twin for every registered probe.

The contract test (tests/test_probe_contract.py) runs each registered probe on both and
fails when a probe has no entry here: adding a probe means adding its two fixtures. Each
factory builds a real AuditContext from a real tiny model; the defect is planted the way
it happens in practice (a dropped head bias, a negated head, a leaked prompt...).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Callable

from helpers_audit import CANONICAL_FILE, TOPICS, fit_head_bt, fitted_tiny_rm, save_rm, scaled_head, topic_pairs
from helpers_probe_heads import fitted_rm, synthetic_pairs
from helpers_rollouts import write_rollouts
from helpers_style import HELD_OUT as STYLE_HELD_OUT
from helpers_style import style_rm
from helpers_train import small_pairs, tiny_base_dir, write_pairs
from rmaudit.modeling.loading import load_reward_model
from rmaudit.modeling.manifest import Manifest
from rmaudit.probes.canonical_pairs import load_canonical_pairs
from rmaudit.probes.chat_template import known_templates
from rmaudit.probes.context import AuditContext
from scratch import scratch_dir
from tiny_models import make_tiny_rm, tiny_rm, tiny_tokenizer

Factory = Callable[[Path], AuditContext]


@functools.cache
def _rm(rule: str):
    return fitted_rm(rule)


@functools.cache
def _topic_rm():
    return fitted_tiny_rm(topic_pairs(TOPICS[:20]), shift=1.0)


@functools.cache
def _canonical_rm():
    return fitted_tiny_rm(load_canonical_pairs([CANONICAL_FILE]))


def _ctx(model, tokenizer, **inputs) -> AuditContext:
    return AuditContext(checkpoint=Path("."), model=model, tokenizer=tokenizer, pooling="mask", **inputs)


def _from_folder(folder: Path, **inputs) -> AuditContext:
    loaded = load_reward_model(folder)
    return AuditContext(checkpoint=folder, model=loaded.model, tokenizer=loaded.tokenizer, manifest=loaded.manifest,
                        head_origin=loaded.head_origin, **inputs)


CONTENT_PAIRS = synthetic_pairs(seed=1000, n=40, rule="content")


def two_annotators(rule_b: str, n: int = 40):
    """Annotator A labels by content (polite beats rude); B by ``rule_b``, on other prompts."""
    import dataclasses

    def labelled(pairs, name):
        return [dataclasses.replace(p, meta={**p.meta, "annotator": name}) for p in pairs]

    return (labelled(synthetic_pairs(seed=2000, n=n, rule="content"), "A")
            + labelled(synthetic_pairs(seed=3000, n=n, rule=rule_b), "B"))

# ChatML whose last turn ends at <|im_end|>: the reward is read at the end-of-turn token.
END_AT_EOS = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
              "'<|im_end|>' }}{% if not loop.last %}{{ '\\n' }}{% endif %}{% endfor %}"
              "{% if add_generation_prompt %}{{ '\\n<|im_start|>assistant\\n' }}{% endif %}")


def multi_turn(pairs):
    """The same pairs behind an earlier exchange: end-of-turn tokens inside the prompt."""
    earlier = [{"role": "user", "content": "Hello there."}, {"role": "assistant", "content": "Hi! How can I help?"}]
    return [type(p)(prompt=earlier + list(p.prompt), chosen=p.chosen, rejected=p.rejected) for p in pairs]


MULTI_TRAIN, MULTI_HELD_OUT = multi_turn(topic_pairs(TOPICS[:24])), multi_turn(topic_pairs(TOPICS[24:]))


@functools.cache
def consumer_rm(distinct_pad: bool):
    """A head fitted at rmaudit's readout. ``distinct_pad=False``: SmolLM2's tokenizer as shipped
    (pad == eos, a newline after each turn); True: a distinct pad and the turn ending at eos."""
    tokenizer = tiny_tokenizer()
    if distinct_pad:
        tokenizer.pad_token = "<|endoftext|>"
        tokenizer.chat_template = END_AT_EOS
    model, _ = tiny_rm(tokenizer, hidden=64, seed=3, pad_token_id=tokenizer.pad_token_id)
    fit_head_bt(model, tokenizer, MULTI_TRAIN, shift=1.0)
    return model, tokenizer


def consumer_ctx(distinct_pad: bool, consumer: str | None = "trl-ppo", policy=None) -> AuditContext:
    model, tokenizer = consumer_rm(distinct_pad)
    return AuditContext(checkpoint=Path("."), model=model, tokenizer=tokenizer, eval_pairs=MULTI_HELD_OUT,
                        pooling="mask", consumer=consumer, policy_tokenizer=policy,
                        manifest=Manifest(trainer="rmaudit train (Bradley-Terry)", pooling="mask"))


def _policy(template: str):
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = template
    return tokenizer


@functools.cache
def trained_run(lr: float, steps: int = 24) -> Path:
    """A real `rmaudit train` run folder (tiny base, real metrics.jsonl); a tiny lr never learns."""
    from rmaudit.train import train
    from rmaudit.train.config import build_config

    root = scratch_dir(f"run-lr{lr:g}-")
    data = write_pairs(root / "pairs.jsonl", small_pairs(32))
    train(build_config(overrides=dict(
        base=str(tiny_base_dir()), data=str(data), out=str(root / "run"), dtype="float32", progress=False,
        batch_size=4, lr=lr, head_lr_mult=10.0, log_every=1, warmup_ratio=0.0, eval_fraction=0.25, max_steps=steps)))
    return root / "run"


FIXTURES: dict[str, tuple[Factory, Factory]] = {
    # (healthy, planted)
    "length_bias": (
        lambda tmp: _ctx(*_rm("content"), eval_pairs=CONTENT_PAIRS),
        lambda tmp: _ctx(*_rm("length"), eval_pairs=CONTENT_PAIRS),
    ),
    "padding": (
        lambda tmp: _from_folder(make_tiny_rm(tmp / "rm"), eval_pairs=CONTENT_PAIRS[:12]),
        # config.pad_token_id names a real token that is not the tokenizer's pad
        lambda tmp: _from_folder(make_tiny_rm(tmp / "rm", pad_token_id=0), eval_pairs=CONTENT_PAIRS[:12]),
    ),
    "head_integrity": (
        lambda tmp: _from_folder(save_rm(*_topic_rm(), tmp / "rm"), eval_pairs=topic_pairs(TOPICS[20:])),
        # a causal-LM checkpoint: no reward head in its weights
        lambda tmp: _from_folder(tiny_base_dir(), eval_pairs=topic_pairs(TOPICS[20:])),
    ),
    "consumer_readout": (
        lambda tmp: consumer_ctx(distinct_pad=True),
        lambda tmp: consumer_ctx(distinct_pad=False),
    ),
    "inference_invariance": (
        lambda tmp: _from_folder(make_tiny_rm(tmp / "rm"), eval_pairs=CONTENT_PAIRS[:12]),
        # config.pad_token_id is a real token: the checkpoint's forward reads a pad position in a batch
        lambda tmp: _from_folder(make_tiny_rm(tmp / "rm", pad_token_id=0), eval_pairs=CONTENT_PAIRS[:12]),
    ),
    "chat_template": (
        lambda tmp: _ctx(*_rm("content"), eval_pairs=CONTENT_PAIRS,
                         policy_tokenizer=_policy(_rm("content")[1].chat_template)),
        lambda tmp: _ctx(*_rm("content"), eval_pairs=CONTENT_PAIRS, policy_tokenizer=_policy(known_templates()["llama3"])),
    ),
    "bias_term": (
        lambda tmp: _from_folder(make_tiny_rm(tmp / "rm"), eval_pairs=CONTENT_PAIRS[:12]),
        # Llama's sequence classifier drops score.bias on load: served rewards lose it
        lambda tmp: _from_folder(make_tiny_rm(tmp / "rm", head_bias=0.75), eval_pairs=CONTENT_PAIRS[:12]),
    ),
    "prompt_leakage": (
        lambda tmp: AuditContext(checkpoint=Path("."), train_pairs=topic_pairs(TOPICS[:20]),
                                 eval_pairs=topic_pairs(TOPICS[20:])),
        lambda tmp: AuditContext(checkpoint=Path("."), train_pairs=topic_pairs(TOPICS[:20]),
                                 eval_pairs=topic_pairs(TOPICS[15:])),
    ),
    "canonical_pairs": (
        lambda tmp: _ctx(*_canonical_rm(), canonical_pairs=load_canonical_pairs([CANONICAL_FILE])),
        lambda tmp: _ctx(scaled_head(_canonical_rm()[0], -1.0), _canonical_rm()[1],
                         canonical_pairs=load_canonical_pairs([CANONICAL_FILE])),
    ),
    "reward_scale": (
        lambda tmp: _ctx(*_rm("content"), eval_pairs=CONTENT_PAIRS),
        # the head's scale ran away: margins of tens of units, past the loss's slope
        lambda tmp: _ctx(scaled_head(_rm("content")[0], 10.0), _rm("content")[1], eval_pairs=CONTENT_PAIRS),
    ),
    "training_log": (
        lambda tmp: _from_folder(trained_run(3e-3)),
        # a run whose learning rate was a typo (1e-12): the loss never left log 2
        lambda tmp: _from_folder(trained_run(1e-12)),
    ),
    "annotator": (
        lambda tmp: _ctx(*_rm("content"), eval_pairs=two_annotators("content"), annotator_field="annotator"),
        # B labels by length, the RM learned A's rule (content): it fits one annotator's taste
        lambda tmp: _ctx(*_rm("content"), eval_pairs=two_annotators("length"), annotator_field="annotator"),
    ),
    "policy_rollouts": (
        lambda tmp: _ctx(*_rm("content"), rollouts_file=write_rollouts(tmp / "rollouts.jsonl", style="mixed")),
        # a length-rewarding RM on samples whose lengths vary within each prompt
        lambda tmp: _ctx(*_rm("length"), rollouts_file=write_rollouts(tmp / "rollouts.jsonl", style="neutral")),
    ),
    "overoptimization": (
        lambda tmp: _ctx(*_rm("content"), gold=save_rm(*fitted_rm("content", seed=1), tmp / "gold"),
                         rollouts_file=write_rollouts(tmp / "rollouts.jsonl", style="mixed", per_prompt=8)),
        # a length-rewarding proxy on samples whose longest answers are rude: best-of-n walks away from gold
        lambda tmp: _ctx(*_rm("length"), gold=save_rm(*fitted_rm("content", seed=1), tmp / "gold"),
                         rollouts_file=write_rollouts(tmp / "rollouts.jsonl", style="hackable", per_prompt=8)),
    ),
    "style_interventions": (
        lambda tmp: _ctx(*style_rm(None), eval_pairs=STYLE_HELD_OUT),
        # trained on data where the markdown-formatted copy of an answer was preferred
        lambda tmp: _ctx(*style_rm("markdown"), eval_pairs=STYLE_HELD_OUT),
    ),
    "policy_shift": (
        lambda tmp: _ctx(*_rm("content"), eval_pairs=CONTENT_PAIRS, train_pairs=synthetic_pairs(seed=4000, n=60, rule="content"),
                         rollouts_file=write_rollouts(tmp / "rollouts.jsonl", style="mixed")),
        # the policy drifted to text no training response resembles
        lambda tmp: _ctx(*_rm("content"), eval_pairs=CONTENT_PAIRS, train_pairs=synthetic_pairs(seed=4000, n=60, rule="content"),
                         rollouts_file=write_rollouts(tmp / "rollouts.jsonl", style="drifted")),
    ),
    "accuracy": (
        lambda tmp: _ctx(*_topic_rm(), eval_pairs=topic_pairs(TOPICS[20:])),
        lambda tmp: _ctx(scaled_head(_topic_rm()[0], -1.0), copy.deepcopy(_topic_rm()[1]),
                         eval_pairs=topic_pairs(TOPICS[20:])),
    ),
}
