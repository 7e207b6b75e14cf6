"""Benchmark of the `prompt_leakage` probe: 1M train prompts against 100k eval prompts.

Prompts are synthetic but shaped like real ones: words drawn with the real word
frequencies of the hh-rlhf prompts in ../shared/data (Zipf-like), lengths drawn from the
real prompt-length distribution, a mix of single-turn and multi-turn conversations, mixed
case and punctuation. Into the eval split we plant leaks whose ground truth we know:
exact copies of train prompts disguised by case, whitespace and punctuation, and near
duplicates (one word of a train prompt replaced).

The full-size run times the probe end to end (what `rmaudit check` runs) and checks that
every planted leak is found. A smaller run compares the near-duplicate search against a
datasketch MinHashLSH baseline (same hash count and threshold, its fastest per-text path,
``update_batch``) on the same texts, and reports the speed ratio and their agreement.

    python benchmarks/bench_leakage.py                       # 1M x 100k, writes benchmarks/results/leakage.md
    python benchmarks/bench_leakage.py --train 100000 --eval 10000 --no-write   # quick look
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rmaudit.data import PreferencePair, load_pairs  # noqa: E402
from rmaudit.probes.context import AuditContext  # noqa: E402
from rmaudit.text.near_duplicates import (  # noqa: E402
    NearDuplicateConfig,
    find_near_duplicates,
    normalise_text,
    shingle_texts,
)
from rmaudit.probes.prompt_leakage import PromptLeakage, exact_text  # noqa: E402
from rmaudit.runner import run_probe as run_one_probe  # noqa: E402

HH = REPO.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


class PromptMaker:
    """Draws realistic prompts from the word and length statistics of real hh-rlhf prompts."""

    def __init__(self, seed: int = 0):
        pairs = load_pairs(HH)
        counts = collections.Counter(w for p in pairs for m in p.prompt for w in m["content"].split())
        self.words = list(counts)  # a list: a numpy string array would pad every word to the longest
        freq = np.array(list(counts.values()), dtype=np.float64)
        self.p = freq / freq.sum()
        self.turn_lengths = np.array([len(m["content"].split()) for p in pairs for m in p.prompt if m["content"].split()])
        self.turns = np.array([len(p.prompt) for p in pairs])
        self.rng = np.random.default_rng(seed)

    def prompts(self, n: int, chunk: int = 50000) -> list[list[dict]]:
        out: list[list[dict]] = []
        for lo in range(0, n, chunk):
            out += self._chunk(min(chunk, n - lo))
        return out

    def _chunk(self, n: int) -> list[list[dict]]:
        turns = self.rng.choice(self.turns, size=n)
        lengths = self.rng.choice(self.turn_lengths, size=int(turns.sum()))
        ids = self.rng.choice(len(self.words), size=int(lengths.sum()), p=self.p).tolist()
        words = [self.words[i] for i in ids]
        out, w, t = [], 0, 0
        for k in turns:
            conversation = []
            for j in range(k):
                length = int(lengths[t])
                conversation.append({"role": "user" if j % 2 == 0 else "assistant",
                                     "content": " ".join(words[w:w + length])})
                w, t = w + length, t + 1
            out.append(conversation)
        return out


def disguise(prompt: list[dict], rng: random.Random) -> list[dict]:
    """Same prompt after normalisation: case, whitespace and punctuation changed."""
    return [{"role": m["role"], "content": "  " + "\t".join(
        w.upper() if rng.random() < 0.3 else w for w in m["content"].split()) + " ?!"} for m in prompt]


def change_one_word(prompt: list[dict], rng: random.Random) -> list[dict]:
    longest = max(range(len(prompt)), key=lambda i: len(prompt[i]["content"].split()))
    words = prompt[longest]["content"].split()
    words[rng.randrange(len(words))] = "xylophonist"
    return [dict(m, content=" ".join(words)) if i == longest else m for i, m in enumerate(prompt)]


def word_jaccard(a: list[dict], b: list[dict]) -> float:
    """Ground truth: Jaccard of the word sets of the texts the probe compares."""
    sa, sb = ({*normalise_text(exact_text(PreferencePair(prompt=p, chosen="", rejected=""))).split()} for p in (a, b))
    return len(sa & sb) / len(sa | sb)


def make_splits(n_train: int, n_eval: int, leak_fraction: float, seed: int = 0):
    """(train pairs, eval pairs, planted exact eval rows, planted near eval rows -> true Jaccard)."""
    maker = PromptMaker(seed)
    prompts = maker.prompts(n_train + n_eval)
    rng = random.Random(seed)
    train, evaluation = prompts[:n_train], prompts[n_train:]
    n_leak = int(leak_fraction * n_eval)
    rows = rng.sample(range(n_eval), 2 * n_leak)
    exact_rows, near_rows = set(rows[:n_leak]), {}
    for i in rows[:n_leak]:
        evaluation[i] = disguise(train[rng.randrange(n_train)], rng)
    for i in rows[n_leak:]:
        source = train[rng.randrange(n_train)]
        evaluation[i] = change_one_word(source, rng)
        near_rows[i] = word_jaccard(evaluation[i], source)

    def pairs(conversations, name):
        return [PreferencePair(prompt=c, chosen="ok", rejected="no", source=name, row=i + 1) for i, c in enumerate(conversations)]

    return pairs(train, "train"), pairs(evaluation, "eval"), exact_rows, near_rows


def run_probe(train, evaluation) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, result) of one probe run."""
    probe = PromptLeakage()  # default limits and settings, as `rmaudit check` runs it
    ctx = AuditContext(checkpoint=Path("."), train_pairs=train, eval_pairs=evaluation)
    start, cpu = time.perf_counter(), time.process_time()
    result = run_one_probe(probe, ctx)
    return time.perf_counter() - start, time.process_time() - cpu, result


def baseline_comparison(n_train: int, n_eval: int) -> dict:
    """Near-duplicate search only, ours vs datasketch MinHashLSH, on identical normalised texts."""
    from datasketch import MinHash, MinHashLSH

    train, evaluation, _, _ = make_splits(n_train, n_eval, 0.01, seed=1)

    def text(p):
        return normalise_text("\n".join(f"{m['role']}: {m['content']}" for m in p.prompt))

    corpus, queries = [text(p) for p in train], [text(p) for p in evaluation]
    config = NearDuplicateConfig()

    start = time.perf_counter()
    ours = {(m.query, m.corpus) for m in find_near_duplicates(queries, corpus, config)}
    ours_s = time.perf_counter() - start

    start = time.perf_counter()
    lsh = MinHashLSH(threshold=config.threshold, num_perm=config.num_perm)

    def sketch(t):
        m = MinHash(num_perm=config.num_perm)
        m.update_batch([w.encode("utf-8") for w in t.split()])
        return m

    for i, t in enumerate(corpus):
        if t:
            lsh.insert(i, sketch(t))
    candidates = {(q, c) for q, t in enumerate(queries) if t for c in lsh.query(sketch(t))}
    sets_q = {q: set(queries[q].split()) for q, _ in candidates}
    sets_c = {c: set(corpus[c].split()) for _, c in candidates}
    theirs = {(q, c) for q, c in candidates
              if len(sets_q[q] & sets_c[c]) / len(sets_q[q] | sets_c[c]) >= config.threshold}
    theirs_s = time.perf_counter() - start
    ours_q, theirs_q = {q for q, _ in ours}, {q for q, _ in theirs}
    return {"train": n_train, "eval": n_eval, "ours_s": ours_s, "datasketch_s": theirs_s,
            "ours_found": len(ours_q), "datasketch_found": len(theirs_q), "both": len(ours_q & theirs_q)}


def timed(fn, *args):
    """(result, wall seconds, CPU seconds of this process)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - start, time.process_time() - cpu


def stage_timings(train, evaluation) -> tuple[dict, list]:
    """Where the time goes, measured on the library functions directly; also the leaks found."""
    from rmaudit.probes.prompt_leakage import find_leaks, unique_prompts

    out = {}
    t, *out["normalise + dedupe train prompts"] = timed(unique_prompts, train)
    e, *out["normalise + dedupe eval prompts"] = timed(unique_prompts, evaluation)
    _, *out["word ids + shingles of 100k train prompts"] = timed(shingle_texts, t.near_texts[:100000], 1)
    leaks, *out["exact + near-duplicate search, all eval vs all train"] = timed(find_leaks, t, e, NearDuplicateConfig())
    found = {evaluation[e.first_row[leak.eval_unique]].row - 1: leak for leak in leaks}
    return out, found


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1_000_000)
    parser.add_argument("--eval", type=int, default=100_000)
    parser.add_argument("--leak-fraction", type=float, default=0.005, help="planted exact leaks; as many near ones")
    parser.add_argument("--baseline-train", type=int, default=50_000)
    parser.add_argument("--baseline-eval", type=int, default=5_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    start = time.perf_counter()
    train, evaluation, exact_rows, near_rows = make_splits(args.train, args.eval, args.leak_fraction)
    print(f"generated {len(train):,} train / {len(evaluation):,} eval pairs in {time.perf_counter() - start:.0f}s", flush=True)

    load_before = os.getloadavg()[0]
    seconds, cpu, result = run_probe(train, evaluation)
    args.load = f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after the probe run"
    m = result.metrics
    print(f"probe: {seconds:.1f}s wall, {cpu:.1f}s CPU  {result.status.value}: {result.summary}", flush=True)
    stages, leaks = stage_timings(train, evaluation)
    for name, (wall, cpu_s) in stages.items():
        print(f"  {name}: {wall:.1f}s wall, {cpu_s:.1f}s CPU", flush=True)

    exact_found = sum(1 for i in exact_rows if i in leaks and leaks[i].kind == "exact")
    # Recall of the planted near duplicates whose true word Jaccard reaches 0.8 (LSH is
    # probabilistic: right at the threshold a few may be missed) and clearly above it.
    near_recall = {}
    for floor in (0.8, 0.85):
        due = [i for i, j in near_rows.items() if j >= floor]
        near_recall[floor] = (sum(1 for i in due if i in leaks), len(due))
    print(f"planted exact found {exact_found}/{len(exact_rows)}, planted near found {near_recall}", flush=True)

    base = baseline_comparison(args.baseline_train, args.baseline_eval)
    ratio = base["datasketch_s"] / base["ours_s"]
    print(f"baseline {base}  ratio {ratio:.1f}x", flush=True)
    if not args.no_write:
        write_results(args, seconds, cpu, m, result.status.value, stages, exact_found, len(exact_rows), near_recall, base, ratio)


def write_results(args, seconds, cpu, m, status, stages, exact_found, exact_total, near_recall, base, ratio) -> None:
    lines = [
        "# prompt_leakage benchmark",
        "",
        f"Machine: {machine()}. Run: `python benchmarks/bench_leakage.py` on {time.strftime('%Y-%m-%d')}.",
        f"1-minute load average {args.load} (this run's own work counts; above about 1 another job shared "
        "the cores and wall times are upper bounds); CPU seconds are this process's own.",
        "",
        "Synthetic prompts with the real word frequencies, turn counts and turn lengths of the hh-rlhf prompts "
        "in ../shared/data; leaks planted into eval: exact copies disguised by case/whitespace/punctuation and near "
        "duplicates with one word replaced.",
        "",
        "## Full size: the probe end to end",
        "",
        "| train pairs | eval pairs | unique train prompts | unique eval prompts | wall seconds | CPU seconds | status |",
        "|---:|---:|---:|---:|---:|---:|---|",
        f"| {m['train_pairs']:,} | {m['eval_pairs']:,} | {m['train_unique_prompts']:,} | {m['eval_unique_prompts']:,} | {seconds:.1f} | {cpu:.1f} | {status} |",
        "",
        f"Found {m['leaked_prompts_exact']:,} exact and {m['leaked_prompts_near']:,} near-duplicate leaked prompts. "
        f"Planted exact leaks found: {exact_found}/{exact_total}. Planted one-word-changed near duplicates found: "
        f"{near_recall[0.8][0]}/{near_recall[0.8][1]} of those whose true word Jaccard is >= 0.8, "
        f"{near_recall[0.85][0]}/{near_recall[0.85][1]} of those >= 0.85 (candidates come from LSH, so a pair right at "
        "the threshold is found with probability about 0.99).",
        "",
        "Stage times (measured again, separately):",
        "",
        "| stage | wall seconds | CPU seconds |",
        "|---|---:|---:|",
        *[f"| {name} | {wall:.1f} | {cpu_s:.1f} |" for name, (wall, cpu_s) in stages.items()],
        "",
        "## Near-duplicate search against datasketch",
        "",
        f"Same normalised texts, {base['train']:,} train x {base['eval']:,} eval, 64 hash functions, threshold 0.8, both "
        "confirmed by exact Jaccard; datasketch uses `MinHash.update_batch` per text and `MinHashLSH`.",
        "",
        "| implementation | seconds | eval prompts with a near duplicate |",
        "|---|---:|---:|",
        f"| rmaudit (numpy MinHash + banded LSH) | {base['ours_s']:.2f} | {base['ours_found']} |",
        f"| datasketch MinHashLSH | {base['datasketch_s']:.2f} | {base['datasketch_found']} |",
        "",
        f"rmaudit is {ratio:.1f}x faster; {base['both']} eval prompts were found by both.",
        "",
    ]
    out = REPO / "benchmarks" / "results" / "leakage.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
