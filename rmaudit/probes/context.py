"""Everything a probe may read, built once per audit and shared by all probes.

The context owns the score cache: every distinct rendered text is scored once per audit,
whichever probes ask for it. Probes call :meth:`AuditContext.score` with conversations
(lists of messages) and get rewards back in input order. Conversations are rendered and
scored a chunk at a time and the cache (``rmaudit/score_cache.py``) keeps an 8-byte key and
the reward per text, 16 bytes, so an audit of 100k pairs holds rewards, not rendered
conversations.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterator, Sequence

import numpy as np

from rmaudit.data.pairs import Message, PreferencePair
from rmaudit.data.store import PairChain, column, head, keep_where, sequence_index
from rmaudit.modeling.manifest import Manifest
from rmaudit.probes.base import ProbeSkipped
from rmaudit.score_cache import ScoreCache, text_keys


# Labelled pairs (ctx.short_pairs) whose float32 rewards are the reference of the precision and
# batching comparisons; padding and inference_invariance draw from the same ones and share them.
FLOAT32_SAMPLE_PAIRS = 12
# A reward margin moves by the errors of two texts, and 24 sampled texts understate the largest
# error of a hundred (hh20: the battery's largest margin error was 2.5x the sample's largest
# text error), so a margin decides at reduced precision only beyond 4x that error (0.5.4).
MARGIN_BOUND_FACTOR = 4.0

# How a user supplies each input, for the skip reason.
INPUT_FLAGS = {"eval_pairs": "--data", "all_eval_pairs": "--data", "train_pairs": "--train-data",
               "policy_tokenizer": "--policy", "policy": "--policy", "gold": "--gold", "rollouts_file": "--rollouts-file", "model": "a loadable checkpoint", "canonical_pairs": "--pairs",
               "tokenizer": "a checkpoint with a tokenizer", "manifest": "an rmaudit checkpoint (rmaudit.json)"}


def _missing(value: Any) -> bool:
    return value is None or (hasattr(value, "__len__") and len(value) == 0)


@dataclass
class AuditContext:
    """Inputs of one audit. Optional inputs are ``None`` when the user did not supply them
    and the manifest had no default; probes call :meth:`require` to skip cleanly."""

    checkpoint: Path
    model: Any = None                      # a transformers *ForSequenceClassification, eval mode
    tokenizer: Any = None                  # the RM's tokenizer (with its chat template)
    manifest: Manifest | None = None       # rmaudit.json of the checkpoint, if any
    # Pair sequences: a PairStore (rmaudit/data/store.py) when read from a file, so iterate or
    # index them; a list() of a store holds every pair in memory again.
    eval_pairs: Sequence[PreferencePair] | None = None      # the scored sample (--max-pairs)
    all_eval_pairs: Sequence[PreferencePair] | None = None  # the whole eval split, for model-free counts
    train_pairs: Sequence[PreferencePair] | None = None
    policy_tokenizer: Any = None           # --policy: tokenizer (and chat template) PPO will use
    policy: str | None = None              # --policy as given: a causal-LM folder or "builtin"
    rollouts_file: Path | None = None      # --rollouts-file: samples from any policy (JSONL prompt/response)
    rollouts: int = 4                      # --rollouts: samples per prompt
    rollout_prompts: int = 32              # --rollout-prompts: eval prompts sampled
    max_new_tokens: int = 128              # --max-new-tokens
    device: str = "cpu"
    seed: int = 0
    canonical_pairs: list[PreferencePair] = field(default_factory=list)
    annotator_field: str | None = None     # --annotator-field: the column naming each row's annotator
    training_log: Path | None = None       # --training-log; else the training_log probe looks in the checkpoint
    gold: Path | None = None               # --gold: a second RM, the overoptimization probe's reference
    dtype: Any = None                      # torch dtype used for scoring
    max_length: int | None = None
    batch_size: int = 16
    share_prefixes: bool = True            # --share-prefixes: texts sharing a prefix forward it once
    pooling: str = "auto"
    progress: bool = False
    consumer: str | None = None            # --consumer: the RL trainer that will read the reward
    head_origin: dict | None = None        # the loader's account of where the head came from
    notes: dict[str, Any] = field(default_factory=dict)   # facts for the report context
    record: dict[str, Any] = field(default_factory=dict)  # content-addressed identity of the inputs (rmaudit/record.py)
    _cache: ScoreCache = field(default_factory=ScoreCache, repr=False)  # key(pooling, text) -> reward
    _norms: ScoreCache = field(default_factory=ScoreCache, repr=False)  # same keys -> norm of the state the head read
    # Keys whose hidden state the head read is kept when a forward reads it (keep_hidden), and
    # those states: a probe's few hundred texts, not every text's d floats.
    _hidden_wanted: set[int] = field(default_factory=set, repr=False)
    _hidden: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    keep_policy_sample_hidden: bool = False  # keep the policy samples' hidden states too (policy_shift's plan)
    _advance: Callable[[int], None] | None = field(default=None, repr=False)  # the open progress bar
    _rollouts: list | None = field(default=None, repr=False)
    _gold: "AuditContext | None" = field(default=None, repr=False)
    _labelled_texts: "RenderedPairs | None" = field(default=None, repr=False)
    # a pair's content fingerprint -> its chosen and its rejected reward: see pair_rewards
    _pair_chosen: ScoreCache = field(default_factory=ScoreCache, repr=False)
    _pair_rejected: ScoreCache = field(default_factory=ScoreCache, repr=False)
    _sharing: Any = field(default=None, repr=False)  # SharingStats of every scoring call so far
    _token_rewards: Any = field(default=None, repr=False)  # PrefixRewards: see token_rewards
    # Loads the checkpoint again with float32 weights (build_context sets it): the reference
    # that bf16-loaded weights are checked against (bf16 rounding of the weights alone moved
    # SmolLM2's hh rewards by a median 0.04 reward-std).
    float32_loader: Callable[[], Any] | None = field(default=None, repr=False)
    _float32_model: Any = field(default=None, repr=False)
    _float32_cache: ScoreCache = field(default_factory=ScoreCache, repr=False)
    _shared: dict[Hashable, Any] = field(default_factory=dict, repr=False)  # see shared

    def require(self, *names: str) -> None:
        """Raise ProbeSkipped naming every missing input, e.g. ``require("eval_pairs", "model")``."""
        missing = [name for name in names if _missing(getattr(self, name))]
        if missing:
            needs = ", ".join(f"{m} ({INPUT_FLAGS.get(m, m)})" for m in missing)
            raise ProbeSkipped(f"missing input: {needs}")

    def render(self, messages: Sequence[Message], chat_template: str | None = None) -> str:
        from rmaudit.scoring import render

        return render(self.tokenizer, messages, chat_template=chat_template)

    def score(self, conversations: Sequence[Sequence[Message]], chat_template: str | None = None) -> np.ndarray:
        """Rewards for conversations rendered with the RM's template (or ``chat_template``),
        rendered and scored a chunk at a time."""
        from rmaudit.scoring import CHUNK_TEXTS

        rewards = np.empty(len(conversations), dtype=np.float64)
        with self.progress_bar(len(conversations)):
            for start in range(0, len(conversations), CHUNK_TEXTS):
                texts = [self.render(c, chat_template) for c in conversations[start:start + CHUNK_TEXTS]]
                rewards[start:start + len(texts)] = self.score_texts(texts)
        return rewards

    def score_texts(self, texts: Sequence[str], readings: Sequence[Sequence[int]] = ()) -> np.ndarray:
        """Rewards for already-rendered texts; each distinct text is scored once per audit.
        ``readings``: token ids another trainer reads (:class:`TokenReadings`), read with the
        texts where prefixes are shared and kept in :meth:`token_rewards`."""
        from rmaudit.scoring import padding_cap, score_texts

        keys = self._keys(texts)
        todo = self._cache.missing(keys)  # the first text of each key not scored yet
        readings = [r for r in readings if not self.token_rewards().knows(r)]
        with self.progress_bar(len(texts)) as advance:
            advance(len(texts) - len(todo))
            if len(todo):
                keys_todo = keys[todo].tolist()
                result = score_texts(
                    self.model, self.tokenizer, [texts[i] for i in todo], batch_size=self.batch_size,
                    dtype=self.dtype, pooling=self.pooling, max_length=self.max_length, progress=advance,
                    share_prefixes=self.share_prefixes, max_padding=padding_cap(self.device), also=readings,
                    keep_hidden=[j for j, key in enumerate(keys_todo) if key in self._hidden_wanted],
                )
                self.notes["pooling"] = result.pooling
                self._note_sharing(result.sharing)
                self._cache.update(keys[todo], result.rewards)
                if result.hidden_norms is not None:
                    read = np.isfinite(result.hidden_norms)
                    self._norms.update(keys[todo][read], result.hidden_norms[read])
                self._hidden.update((keys_todo[j], state) for j, state in result.hidden.items())
                if result.also_rewards is not None:
                    self.token_rewards().add(readings, result.also_rewards)
        return self._cache.get(keys)

    def token_rewards(self) -> Any:
        """The audit's rewards of token-id readings (``PrefixRewards``, ``rmaudit/readouts.py``):
        what the scoring plan read of the probes' :class:`TokenReadings`, and what probes
        read since; under the audit's model and dtype."""
        if self._token_rewards is None:
            from rmaudit.readouts import PrefixRewards

            self._token_rewards = PrefixRewards(share_prefixes=self.share_prefixes)
        return self._token_rewards

    def pair_rewards(self, pairs: Sequence[PreferencePair]) -> tuple[np.ndarray, np.ndarray]:
        """(chosen rewards, rejected rewards) for pairs, through the shared cache."""
        from rmaudit.scoring import CHUNK_TEXTS

        # Pairs seen before are looked up by a fingerprint of their content: at 100k pairs,
        # rendering 200k conversations again to find their cache keys cost each probe about
        # 40 s (benchmarks/results/scale.md). Content, not id(): a PairStore reads a new object
        # each time, and the memo holds 16 bytes a pair, not the pair.
        keys = column(pairs, "rmaudit.fingerprint", _fingerprint, np.uint64)
        fresh = self._pair_chosen.missing(keys).tolist()
        step = max(1, CHUNK_TEXTS // 2)
        with self.progress_bar(2 * len(fresh)):
            for start in range(0, len(fresh), step):
                rows = fresh[start:start + step]
                part = [pairs[i] for i in rows]
                both = self.score([p.chosen_messages() for p in part] + [p.rejected_messages() for p in part])
                self._pair_chosen.update(keys[rows], both[:len(part)])
                self._pair_rejected.update(keys[rows], both[len(part):])
        return self._pair_chosen.get(keys), self._pair_rejected.get(keys)

    @contextlib.contextmanager
    def progress_bar(self, total: int, description: str = "scoring") -> Iterator[Callable[[int], None]]:
        """One bar per outermost scoring call (nested calls advance it); none without --progress."""
        if self._advance is not None:
            yield self._advance
            return
        if not self.progress:
            yield lambda n: None
            return
        from rmaudit.scoring import scoring_progress

        with scoring_progress(total, description) as advance:
            self._advance = advance
            try:
                yield advance
            finally:
                self._advance = None

    def _keys(self, texts: Sequence[str]) -> np.ndarray:
        """The cache keys of rendered texts: one text read under another pooling is another reading."""
        return text_keys(texts, salt=self.pooling.encode())

    def keep_hidden(self, texts: Sequence[str]) -> None:
        """Keep the hidden state the head reads of these rendered texts when a later scoring
        call forwards them (a probe's plan, so :meth:`pooled_hidden` needs no forward of its own)."""
        self._hidden_wanted.update(self._keys(texts).tolist())

    def pooled_hidden(self, conversations: Sequence[Sequence[Message]]) -> np.ndarray:
        """(N, d) float64 hidden states where the head reads each conversation (its last token;
        under native pooling its last non-pad one, or what an encoder's head reads in its own
        forward: the pooled first position), rendered with the RM's template and
        truncated as scoring does: kept from the forward that scored it where it was asked for
        beforehand (:meth:`keep_hidden`), the rest forwarded here and not cached."""
        texts = [self.render(c) for c in conversations]
        if not texts:
            return np.zeros((0, 0))
        keys = self._keys(texts).tolist()
        states = {i: self._hidden[key] for i, key in enumerate(keys) if key in self._hidden}
        rest = [i for i in range(len(texts)) if i not in states]
        with self.progress_bar(len(texts), "hidden states") as advance:
            advance(len(states))
            if rest:
                states.update(zip(rest, self._forward_hidden([texts[i] for i in rest], advance)))
        return np.stack([states[i] for i in range(len(texts))])

    def _forward_hidden(self, texts: Sequence[str], advance: Callable[[int], None]) -> np.ndarray:
        """(N, d) hidden states read where scoring reads them, from forwards of their own.
        Texts that share a prefix share its forward where the audit shares prefixes."""
        import torch

        from rmaudit.modeling.pooling import attends_causally
        from rmaudit.prefix_sharing import last_token_hidden, prefix_sharing_support
        from rmaudit.scoring import BATCH_TOKENS, autocast_for, padding_cap, plain_readings, resolve_pooling, \
            tokenize_rendered, truncation_keep

        pooling = resolve_pooling(self.model, self.pooling)
        ids, _ = tokenize_rendered(self.tokenizer, texts, self.max_length, truncation_keep(self.model, pooling))
        readings = plain_readings(self.model, self.tokenizer, ids, pooling)
        if readings is None and pooling == "native" and not attends_causally(self.model):
            return self._own_head_inputs(ids, advance)
        ids = readings or ids
        share = self.share_prefixes and prefix_sharing_support(self.model)[0]
        with torch.inference_mode(), autocast_for(self.model, self.dtype):
            hidden, _ = last_token_hidden(self.model, ids, batch_size=self.batch_size, batch_tokens=BATCH_TOKENS,
                                          share=share, max_padding=padding_cap(self.device), advance=advance)
        return hidden

    def _own_head_inputs(self, ids: Sequence[Sequence[int]], advance: Callable[[int], None]) -> np.ndarray:
        """(N, d) float64: what the head reads in the model's own forward (an encoder's pooled
        state, not its last token's), right-padded length-sorted batches as scoring runs them."""
        import torch

        from rmaudit.modeling.pooling import head_inputs
        from rmaudit.scoring import BATCH_TOKENS, autocast_for, length_sorted_batches, pad_batch, padding_cap

        out: np.ndarray | None = None
        device = next(self.model.parameters()).device
        with torch.inference_mode(), autocast_for(self.model, self.dtype):
            for rows in length_sorted_batches([len(r) for r in ids], self.batch_size, BATCH_TOKENS,
                                              padding_cap(self.device)):
                input_ids, mask = pad_batch([ids[i] for i in rows], self.tokenizer.pad_token_id, "right")
                states = head_inputs(self.model, input_ids.to(device), mask.to(device)).double().cpu().numpy()
                out = np.zeros((len(ids), states.shape[1])) if out is None else out
                out[rows] = states
                advance(len(rows))
        return out if out is not None else np.zeros((0, 0))

    def hidden_norms(self, conversations: Sequence[Sequence[Message]]) -> np.ndarray:
        """(N,) norms of the hidden states the head reads for each conversation: from the
        scoring plan's forwards where they read them (shared-prefix forwards do, at no cost),
        the rest forwarded here (:meth:`pooled_hidden`)."""
        texts = [self.render(c) for c in conversations]
        keys = self._keys(texts)
        norms = np.full(len(texts), np.nan)
        known = self._norms.has(keys)
        norms[known] = self._norms.get(keys[known])
        rest = np.flatnonzero(~known).tolist()
        if rest:
            norms[rest] = np.linalg.norm(self.pooled_hidden([conversations[i] for i in rest]), axis=1)
        return norms

    def has_policy_samples(self) -> bool:
        """Whether :meth:`policy_samples` has samples to give (without drawing them)."""
        if self._rollouts is not None or self.rollouts_file is not None:
            return True
        if self.policy is None or _missing(self.eval_pairs):
            return False
        from rmaudit.rollouts import has_weights

        return has_weights(self.policy)

    def policy_samples(self) -> tuple[list, str]:
        """(rollouts, where they came from): read from --rollouts-file, else sampled once per
        audit from --policy (every probe that needs them shares the one draw)."""
        if self._rollouts is not None:
            return self._rollouts, self.notes["rollouts_source"]
        from rmaudit import rollouts as policy_io

        if self.rollouts_file is not None:
            samples, source = policy_io.read_rollouts(self.rollouts_file), str(self.rollouts_file)
        elif self.policy is not None:
            samples, source = self._sample_policy(policy_io), f"sampled from --policy {self.policy}"
        else:
            raise ProbeSkipped("no policy samples: give --policy POLICY (a causal-LM folder, or 'builtin') "
                               "or --rollouts-file FILE")
        self._rollouts = samples
        self.notes["rollouts_source"] = source
        if self.keep_policy_sample_hidden:
            self.keep_hidden([self.render(r.messages()) for r in samples])
        return samples, source

    def _sample_policy(self, policy_io: Any) -> list:
        if not self.eval_pairs:
            raise ProbeSkipped("missing input: eval_pairs (--data): the policy is sampled on the eval prompts")
        prompts = policy_io.distinct_prompts(self.eval_pairs, self.rollout_prompts)
        if not policy_io.has_weights(self.policy):
            raise ProbeSkipped(f"--policy {self.policy} holds a tokenizer but no model weights: sampling needs a "
                               "causal-LM checkpoint (or pass its samples with --rollouts-file)")
        model, tokenizer, dtype = policy_io.load_policy(self.policy, device=self.device)
        self.notes["rollouts_dtype"] = dtype
        with self.progress_bar(len(prompts) * self.rollouts, "policy samples") as advance:
            return policy_io.sample_rollouts(model, tokenizer, prompts, n=self.rollouts, max_new_tokens=self.max_new_tokens,
                                             seed=self.seed, advance=advance)

    def gold_context(self) -> "AuditContext":
        """A context that scores with the --gold reward model (loaded once, same dtype, device,
        batch and length settings; its own tokenizer, chat template and pooling)."""
        if self._gold is None:
            if self.gold is None:
                raise ProbeSkipped("missing input: gold (--gold)")
            from rmaudit.inputs import load_gold_context

            self._gold = load_gold_context(self)
        return self._gold

    def float32_model(self) -> Any:
        """The audited model with float32 weights and arithmetic: itself when its weights are
        float32; else the checkpoint loaded again in float32 (its stored weights, not the
        rounded ones), once per audit; else, with no loader, a float32 copy of the loaded
        weights (the report context says which)."""
        import torch

        if next(self.model.parameters()).dtype == torch.float32:
            return self.model
        if self._float32_model is None:
            if self.float32_loader is not None:
                self._float32_model = self.float32_loader()
                self.notes["float32_reference"] = "the checkpoint reloaded with float32 weights"
            else:
                import copy

                self._float32_model = copy.deepcopy(self.model).float()
                self.notes["float32_reference"] = "the loaded weights cast to float32 (no reload available)"
        return self._float32_model

    def float32_rewards(self, texts: Sequence[str], pooling: str | None = None, *, alone: bool = False) -> np.ndarray:
        """Rewards of rendered texts read with float32 weights and arithmetic, under ``pooling``
        (default the audit's); cached per (mode, ids read), so probes share the forwards.
        By default in the audit's own batching (shared prefixes, little padding), exact to
        float32 rounding (1e-5 reward-std on SmolLM2, far below bfloat16's effects): for
        verdicts and precision comparisons. ``alone``: each text a batch of one (no padding,
        no shared prefix), the reference that padding and batching comparisons are measured
        against; it costs a forward per text (a float32 call reads every weight: about 85 ms
        for SmolLM2-135M on a 2-core AMD EPYC with AVX512-BF16, however short the text), and a
        batched reading reuses it where it exists."""
        from rmaudit.scoring import padding_cap, score_texts

        model = self.float32_model()
        alone_keys, keys = self._float32_keys(model, texts, pooling, (b"float32-alone:", b"float32:"))
        if alone:
            keys = alone_keys
        else:  # a batch-of-one reading is as exact: reuse it rather than read again
            known = self._float32_cache.has(alone_keys)
            self._float32_cache.update(keys[known], self._float32_cache.get(alone_keys[known]))
        todo = self._float32_cache.missing(keys)
        if len(todo):
            batching: dict[str, Any] = ({"batch_size": 1} if alone else
                                        {"batch_size": self.batch_size, "share_prefixes": self.share_prefixes,
                                         "max_padding": padding_cap(self.device)})
            # a bar of its own: float32 is the audit's slowest read a token (1.6x bf16 on an
            # AVX512-BF16 CPU, benchmarks/results/scoring.md), 10 s of canonical_pairs on SmolLM2
            with self.progress_bar(len(todo), "float32 reference") as advance:
                result = score_texts(model, self.tokenizer, _Picked(texts, todo), progress=advance,
                                     pooling=self._float32_pooling(model, pooling), max_length=self.max_length,
                                     **batching)
            self._float32_cache.update(keys[todo], result.rewards)
        return self._float32_cache.get(keys)

    def precision_sample(self) -> tuple[list[PreferencePair], np.ndarray, np.ndarray]:
        """(pairs, audit rewards, float32 rewards) of the ``short_pairs`` precision sample,
        chosen texts then rejected: the audit's own reading of each text next to its exact
        one. accuracy reports the verdicts bf16 flips on it; :meth:`margin_error_bound` (for
        canonical_pairs and head_integrity) is read from it. Computed once per audit
        (:meth:`shared`), so its several callers do not render, tokenise and look up the
        same texts again."""
        def compute() -> tuple[list[PreferencePair], np.ndarray, np.ndarray]:
            pairs = self.short_pairs(FLOAT32_SAMPLE_PAIRS)
            texts = self.pair_texts(pairs)
            return pairs, self.score_texts(texts), self.float32_rewards(texts)

        return self.shared("precision_sample", compute)

    def margin_error_bound(self) -> float:
        """How far this audit's reading may move a reward margin from its float32 value: 0 when
        it reads float32; else :data:`MARGIN_BOUND_FACTOR` times the largest reward error of the
        precision sample. A margin within it is a close call this audit's dtype cannot decide."""
        import torch

        from rmaudit.probes.padding import model_dtype  # padding imports this module

        if model_dtype(self) == torch.float32:
            return 0.0
        _, audit, exact = self.precision_sample()
        return MARGIN_BOUND_FACTOR * float(np.abs(audit - exact).max())

    def _float32_pooling(self, model: Any, pooling: str | None) -> str:
        from rmaudit.scoring import resolve_pooling

        return resolve_pooling(model, pooling or self.pooling)

    def _float32_keys(self, model: Any, texts: Sequence[str], pooling: str | None,
                      modes: Sequence[bytes]) -> list[np.ndarray]:
        """Keys of ``texts`` in the float32 cache under each of ``modes`` (texts tokenised once,
        CHUNK_TEXTS at a time, so accuracy's regrade of 100k pairs holds keys, not token ids):
        by the ids read where they name the reward (a plain reading), so the two poolings of one
        text share a forward when they read the same ids; else by text and pooling."""
        from rmaudit.scoring import CHUNK_TEXTS, plain_readings, tokenize_rendered, truncation_keep

        pooling = self._float32_pooling(model, pooling)
        parts: list[list[np.ndarray]] = [[] for _ in modes]
        for start in range(0, len(texts), CHUNK_TEXTS):
            chunk = texts[start:start + CHUNK_TEXTS]
            ids = tokenize_rendered(self.tokenizer, chunk, self.max_length, truncation_keep(model, pooling))[0]
            readings = plain_readings(model, self.tokenizer, ids, pooling)
            named = [" ".join(map(str, r)) for r in readings] if readings is not None else chunk
            suffix = b"ids" if readings is not None else pooling.encode()
            for part, mode in zip(parts, modes):
                part.append(text_keys(named, salt=mode + suffix))
        return [np.concatenate(part) if part else np.empty(0, dtype=np.uint64) for part in parts]

    def shared(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per audit for ``key``: a result several probes compute the same
        way (padding's and inference_invariance's padded float32 batch). A failure is not kept:
        each caller sees it."""
        if key not in self._shared:
            self._shared[key] = compute()
        return self._shared[key]

    def short_pairs(self, limit: int) -> list[PreferencePair]:
        """``limit`` labelled pairs spread over the shorter half by length: held-out pairs when
        there are enough, else with the canonical battery. For probes whose question does not
        depend on length (does batching, padding or precision move a reward) and whose float32
        forwards cost grows with it; probes asking for the same number get the same pairs."""
        def compute() -> list[PreferencePair]:
            pool = self.eval_pairs or []
            if len(pool) < limit:
                pool = self.labelled_pairs()
            if len(pool) <= limit:
                return list(pool)
            characters = np.fromiter((_characters(p) for p in pool), dtype=np.int64, count=len(pool))
            shorter = np.argsort(characters, kind="stable")[: max(limit, len(pool) // 2)]
            picks = np.unique(np.linspace(0, len(shorter) - 1, num=limit).round().astype(int))
            return [pool[int(shorter[i])] for i in picks]

        return self.shared(("short_pairs", limit), compute)

    def preference_pairs(self) -> Sequence[PreferencePair]:
        """The held-out pairs whose chosen differs from their rejected: a pair of two identical
        responses carries no preference and can only tie. One pass over the pairs per audit."""
        return self.shared("preference_pairs", lambda: keep_where(self.eval_pairs or [], lambda p: p.chosen != p.rejected))

    def labelled_pairs(self, limit: int | None = None) -> Sequence[PreferencePair]:
        """Held-out pairs first, then the canonical battery, at most ``limit`` (a list): the most
        labelled evidence available (a demo split of 8 pairs alone proves nothing)."""
        pairs = PairChain(self.eval_pairs or [], self.canonical_pairs or [])
        return head(pairs, limit) if limit is not None else pairs

    def scores(self, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(text keys, rewards) in the cache, less the keys in ``exclude``: what one process
        hands the others."""
        return self._cache.export(exclude)

    def add_scores(self, keys: np.ndarray, rewards: np.ndarray) -> None:
        """Rewards scored elsewhere (another process of the same audit) under the same keys."""
        self._cache.update(keys, rewards)

    def _note_sharing(self, sharing: Any) -> None:
        """Add one scoring call's prefix sharing to the report context (``prefix_sharing``)."""
        from rmaudit.prefix_sharing import SharingStats, prefix_sharing_support

        why = prefix_sharing_support(self.model)[1] if self.share_prefixes else "--no-share-prefixes"
        if sharing is None:
            self.notes["prefix_sharing"] = {"enabled": False, "why": why}
            return
        if self._sharing is None:
            self._sharing = SharingStats()
        self._sharing.add(sharing)
        self.notes["prefix_sharing"] = {"enabled": True, "why": why, **self._sharing.as_dict()}

    @property
    def n_scored(self) -> int:
        """Distinct texts scored so far in this audit (the cache's size)."""
        return len(self._cache)

    def pair_texts(self, pairs: Sequence[PreferencePair]) -> list[str]:
        """The pairs' chosen texts, then their rejected texts, rendered with the RM's template."""
        return list(RenderedPairs(self, pairs))

    def labelled_texts(self) -> "RenderedPairs":
        """The chosen and rejected texts of the held-out and canonical pairs, rendered lazily
        (the plan every model-reading probe shares; one object, so the runner reads it once)."""
        if self._labelled_texts is None:
            self._labelled_texts = RenderedPairs(self, self.labelled_pairs())
        return self._labelled_texts

    def reference_rewards(self) -> np.ndarray:
        """Rewards of every response in the eval pairs (else the canonical pairs): the
        reference set whose spread is the unit for 'shift in reward-std'."""
        pairs = self.eval_pairs or self.canonical_pairs
        if not pairs:
            raise ProbeSkipped("no reference set: give --data or keep the canonical pairs")
        chosen, rejected = self.pair_rewards(pairs)
        return np.concatenate([chosen, rejected])

    def reward_std(self) -> float:
        """Std of rewards over the reference set; probes express shifts in these units."""
        std = float(self.reference_rewards().std())
        return std if std > 0 else float("nan")


def _fingerprint(pair: PreferencePair) -> int:
    """A 64-bit hash of what a pair's rewards depend on (a tuple, not a render); a pair edited
    in place gets a new one. Two pairs share one with probability about n^2 / 2^65."""
    content = (pair.chosen, pair.rejected, tuple((str(m.get("role")), str(m.get("content"))) for m in pair.prompt))
    return hash(content) & 0xFFFF_FFFF_FFFF_FFFF


class TokenReadings(list):
    """Token ids a probe will read at their last token, planned besides its texts
    (``Probe.plan``): another trainer's tokenisation of the audit's conversations. The
    scoring plan reads them with the texts, so one that begins a text (OpenRLHF's ids are
    the audit's less a trailing newline) costs no forward pass of its own."""


class _Picked(Sequence[str]):
    """``texts[i]`` for each of ``indices``, read on access (a lazy ``texts`` stays lazy)."""

    def __init__(self, texts: Sequence[str], indices: np.ndarray):
        self._texts, self._indices = texts, indices

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self._texts[int(i)] for i in self._indices[index]]
        return self._texts[int(self._indices[index])]


class RenderedPairs(Sequence[str]):
    """The chosen then rejected text of each pair, rendered with the RM's template on access:
    a plan over 100k pairs holds the pairs, not 200k rendered strings."""

    def __init__(self, ctx: AuditContext, pairs: Sequence[PreferencePair]):
        self._ctx, self._pairs = ctx, pairs

    def __len__(self) -> int:
        return 2 * len(self._pairs)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = sequence_index(index, len(self))
        pair = self._pairs[index % len(self._pairs)]
        return self._ctx.render(pair.chosen_messages() if index < len(self._pairs) else pair.rejected_messages())


def _characters(pair: PreferencePair) -> int:
    return sum(len(m["content"]) for m in pair.prompt) + len(pair.chosen) + len(pair.rejected)
