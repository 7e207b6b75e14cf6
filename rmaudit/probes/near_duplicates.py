"""Exact and near-duplicate text matching between two sets of prompts, fast enough for
1M train prompts against 100k eval prompts on a 2-core CPU.

* :func:`normalise_text`: Unicode NFKC, case folded, punctuation removed, whitespace runs
  collapsed to one space. Two prompts are *exact* duplicates when their normalised texts
  have the same sha256.
* Near duplicates: each normalised text becomes a set of word shingles (word n-grams,
  hashed to 32 bits entirely in numpy); a MinHash signature (``num_perm`` multiply-shift
  hashes, vectorised over all shingles of a chunk at once) feeds a banded LSH index;
  every LSH candidate is then confirmed by the exact Jaccard similarity of the two shingle
  sets. Candidates only decide what gets checked; the similarity reported is exact.

Shingles that appear in a large share of the corpus (a template, a shared instruction
block) are dropped before both steps so that boilerplate alone cannot make two different
prompts look alike; see :class:`NearDuplicateConfig`.
"""

from __future__ import annotations

import hashlib
import math
import sys
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_U32 = np.uint64(32)

# Every Unicode punctuation code point (categories Pc, Pd, Ps, Pe, Pi, Pf, Po) -> deleted.
# Symbols (currency, maths, emoji) are kept: "2+2" and "22" are different prompts.
_PUNCTUATION = {cp: None for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)).startswith("P")}

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; called as work advances."""


def normalise_text(text: str) -> str:
    """NFKC, casefold, punctuation removed, whitespace collapsed: the form compared for
    exact matches (e.g. "Hello,  WORLD!" -> "hello world")."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().translate(_PUNCTUATION).split())


def text_digest(normalised: str) -> bytes:
    """sha256 of a normalised text: the key of exact matching."""
    return hashlib.sha256(normalised.encode("utf-8")).digest()


@dataclass(frozen=True)
class NearDuplicateConfig:
    """How near duplicates are searched and confirmed."""

    threshold: float = field(default=0.8, metadata={"help": "Jaccard similarity of shingle sets at or above which two texts are near duplicates."})
    shingle_words: int = field(default=1, metadata={"help": "Words per shingle. 1 (a bag of words) keeps one changed word in a short prompt above 0.8; larger n is stricter on word order."})
    num_perm: int = field(default=64, metadata={"help": "MinHash hash functions; the LSH bands are chosen from these and the threshold."})
    boilerplate_fraction: float = field(default=0.5, metadata={"help": "Shingles found in more than this fraction of corpus texts are ignored as template boilerplate."})
    boilerplate_min_texts: int = field(default=100, metadata={"help": "Boilerplate is only judged on corpora with at least this many texts."})
    max_candidates: int = field(default=20, metadata={"help": "Most LSH candidates confirmed per query (the ones sharing the most bands)."})
    max_bucket: int = field(default=64, metadata={"help": "Most corpus texts taken from one LSH bucket per query and band."})
    chunk_texts: int = field(default=20000, metadata={"help": "Texts shingled and hashed per numpy batch (bounds memory)."})
    seed: int = field(default=1, metadata={"help": "Seed of the hash functions (results are deterministic for a given seed)."})


@dataclass(frozen=True)
class NearMatch:
    """The most similar corpus text found for one query text."""

    query: int          # index into the queries given
    corpus: int         # index into the corpus given
    similarity: float   # exact Jaccard of the two shingle sets


# ---------------------------------------------------------------------------------------
# Hashing helpers (numpy, uint64 arithmetic wraps mod 2**64 on purpose)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads every input bit over the whole word."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _random_u64(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


@dataclass
class Shingles:
    """Hashed shingles of many texts in CSR form: text ``i`` owns ``values[offsets[i]:offsets[i+1]]``."""

    values: np.ndarray   # uint64 hashes (only the low 32 bits are used downstream)
    offsets: np.ndarray  # int64, len(texts) + 1

    def of(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)


def shingle_texts(texts: Sequence[str], shingle_words: int, seed: int = 1) -> Shingles:
    """Hash the word n-gram shingles of normalised texts (words separated by single spaces).

    A text with fewer than ``shingle_words`` words gets one shingle of all its words; an
    empty text gets none. Duplicates within a text are kept (MinHash ignores them).
    """
    blob = np.frombuffer(("\n".join(texts) + "\n").encode("utf-8"), dtype=np.uint8)
    n_texts = len(texts)
    is_sep = (blob == 32) | (blob == 10)
    text_of_byte = np.concatenate(([0], np.cumsum(blob == 10)[:-1]))
    starts = np.flatnonzero(~is_sep & np.concatenate(([True], is_sep[:-1])))
    if len(starts) == 0:
        return Shingles(np.zeros(0, np.uint64), np.zeros(n_texts + 1, np.int64))
    # Word hash: sum of byte * (random odd multiplier of its position in the word), mixed.
    is_start = np.zeros(len(blob), bool)
    is_start[starts] = True
    word_of_byte = np.cumsum(is_start) - 1
    pos_in_word = np.arange(len(blob)) - starts[np.maximum(word_of_byte, 0)]
    multipliers = _random_u64(seed, int(pos_in_word.max()) + 1)
    with np.errstate(over="ignore"):
        contrib = np.where(is_sep | (word_of_byte < 0), np.uint64(0),
                           (blob.astype(np.uint64) + np.uint64(1)) * multipliers[np.maximum(pos_in_word, 0)])
        words = _mix64(np.add.reduceat(contrib, starts))
    word_text = text_of_byte[starts]
    return _word_shingles(words, word_text, n_texts, shingle_words, seed)


def _word_shingles(words: np.ndarray, word_text: np.ndarray, n_texts: int, k: int, seed: int) -> Shingles:
    """Combine consecutive word hashes of the same text into k-word shingle hashes."""
    n = len(words)
    weights = _random_u64(seed + 7, k)
    combined = np.zeros(n, np.uint64)
    same_text = np.ones(n, bool)
    with np.errstate(over="ignore"):
        for j in range(k):
            shifted_text = np.full(n, -1, np.int64)
            shifted_text[: n - j] = word_text[j:]
            inside = shifted_text == word_text
            shifted = np.zeros(n, np.uint64)
            shifted[: n - j] = words[j:]
            combined += np.where(inside, shifted * weights[j], np.uint64(0))
            if j == k - 1:
                same_text = inside
    words_per_text = np.bincount(word_text, minlength=n_texts)
    first_word = np.concatenate(([True], word_text[1:] != word_text[:-1]))
    keep = same_text | (first_word & (words_per_text[word_text] < k))
    values = _mix64(combined[keep])
    counts = np.bincount(word_text[keep], minlength=n_texts)
    return Shingles(values, np.concatenate(([0], np.cumsum(counts))).astype(np.int64))


def boilerplate_shingles(corpus: Shingles, fraction: float, min_texts: int, sample: int = 20000, seed: int = 0) -> np.ndarray:
    """Sorted shingle hashes present in more than ``fraction`` of the corpus texts
    (estimated on a sample of texts); empty for small corpora."""
    n = len(corpus.offsets) - 1
    if n < min_texts or fraction >= 1.0:
        return np.zeros(0, np.uint64)
    chosen = np.arange(n) if n <= sample else np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    per_text = [np.unique(corpus.of(i)) for i in chosen]
    values, counts = np.unique(np.concatenate(per_text), return_counts=True)
    return values[counts > fraction * len(chosen)]


def drop_shingles(shingles: Shingles, stop: np.ndarray) -> Shingles:
    """The same shingles without those in ``stop``."""
    if len(stop) == 0:
        return shingles
    keep = ~np.isin(shingles.values, stop)
    n = len(shingles.offsets) - 1
    owner = np.repeat(np.arange(n), shingles.sizes)
    counts = np.bincount(owner[keep], minlength=n)
    return Shingles(shingles.values[keep], np.concatenate(([0], np.cumsum(counts))).astype(np.int64))


# ---------------------------------------------------------------------------------------
# MinHash + LSH


def lsh_bands(threshold: float, num_perm: int, recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows) with the most rows per band (fewest false candidates) that still makes
    a pair exactly at ``threshold`` a candidate with probability ``recall``: a missed
    candidate loses a leak, a false one only costs one exact Jaccard."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= recall:
            return bands, rows
    return num_perm, 1


def minhash_signatures(shingles: Shingles, num_perm: int, seed: int = 1) -> np.ndarray:
    """(n_texts, num_perm) uint32 MinHash signatures; rows of texts without shingles are
    all 0xFFFFFFFF (callers leave those texts out of the index)."""
    n = len(shingles.offsets) - 1
    sig = np.full((n, num_perm), np.uint32(0xFFFFFFFF), dtype=np.uint32)
    has = shingles.sizes > 0
    if not has.any():
        return sig
    starts = shingles.offsets[:-1][has]
    x = shingles.values & np.uint64(0xFFFFFFFF)
    a = _random_u64(seed + 11, num_perm)
    b = _random_u64(seed + 13, num_perm)
    with np.errstate(over="ignore"):
        for k in range(num_perm):
            # Multiply-shift hashing: the top 32 bits of a*x+b (mod 2**64) are a 2-universal family.
            hashed = ((x * a[k] + b[k]) >> _U32).astype(np.uint32)
            sig[has, k] = np.minimum.reduceat(hashed, starts)
    return sig


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n_texts, bands) uint64 keys: texts sharing a key in any band are candidates."""
    weights = _random_u64(99, rows)
    keys = np.empty((sig.shape[0], bands), np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            block = sig[:, band * rows:(band + 1) * rows].astype(np.uint64)
            keys[:, band] = _mix64((block * weights).sum(axis=1, dtype=np.uint64) + np.uint64(band))
    return keys


def _texts_keys(texts: Sequence[str], config: NearDuplicateConfig, stop: np.ndarray | None,
                bands: int, rows: int, stage: str, progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    """Band keys of all texts (chunked), and which texts have any shingle."""
    keys = np.empty((len(texts), bands), np.uint64)
    has = np.zeros(len(texts), bool)
    for lo in range(0, len(texts), config.chunk_texts):
        hi = min(lo + config.chunk_texts, len(texts))
        shingles = shingle_texts(texts[lo:hi], config.shingle_words, config.seed)
        if stop is not None:
            shingles = drop_shingles(shingles, stop)
        keys[lo:hi] = band_keys(minhash_signatures(shingles, config.num_perm, config.seed), bands, rows)
        has[lo:hi] = shingles.sizes > 0
        if progress:
            progress(stage, hi, len(texts))
    return keys, has


def _candidate_pairs(query_keys: np.ndarray, query_has: np.ndarray, corpus_keys: np.ndarray,
                     corpus_has: np.ndarray, config: NearDuplicateConfig) -> tuple[np.ndarray, np.ndarray]:
    """(query, corpus) index pairs sharing at least one band, best max_candidates per query."""
    corpus_ids = np.flatnonzero(corpus_has)
    query_ids = np.flatnonzero(query_has)
    codes = []
    n_corpus = np.int64(len(corpus_has))
    for band in range(corpus_keys.shape[1]):
        order = np.argsort(corpus_keys[corpus_ids, band], kind="stable")
        sorted_keys = corpus_keys[corpus_ids[order], band]
        q_keys = query_keys[query_ids, band]
        lo = np.searchsorted(sorted_keys, q_keys, side="left")
        hi = np.searchsorted(sorted_keys, q_keys, side="right")
        take = np.minimum(hi - lo, config.max_bucket)
        if take.sum() == 0:
            continue
        q = np.repeat(query_ids, take)
        first = np.repeat(lo, take)
        within = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
        c = corpus_ids[order[first + within]]
        codes.append(q.astype(np.int64) * n_corpus + c)
    if not codes:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pair_codes, shared = np.unique(np.concatenate(codes), return_counts=True)
    q, c = pair_codes // n_corpus, pair_codes % n_corpus
    # Per query, the candidates sharing the most bands first (most similar by MinHash).
    order = np.lexsort((-shared, q))
    q, c = q[order], c[order]
    rank = np.arange(len(q)) - np.searchsorted(q, q, side="left")
    keep = rank < config.max_candidates
    return q[keep], c[keep]


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = set(a.tolist()), set(b.tolist())
    union = len(sa | sb)
    return len(sa & sb) / union if union else 0.0


def _shingle_sets(texts: Sequence[str], ids: np.ndarray, config: NearDuplicateConfig, stop: np.ndarray) -> dict[int, np.ndarray]:
    """Low-32-bit shingle hashes of the given texts, recomputed (cheap: only candidates)."""
    ids = np.unique(ids)
    shingles = drop_shingles(shingle_texts([texts[i] for i in ids], config.shingle_words, config.seed), stop)
    low = shingles.values & np.uint64(0xFFFFFFFF)
    return {int(i): low[shingles.offsets[j]:shingles.offsets[j + 1]] for j, i in enumerate(ids)}


def find_near_duplicates(queries: Sequence[str], corpus: Sequence[str], config: NearDuplicateConfig | None = None,
                         progress: Progress | None = None) -> list[NearMatch]:
    """For each normalised query text, its most similar corpus text when their Jaccard
    similarity is at least ``config.threshold``; queries without one are left out.

    Inputs should be normalised (:func:`normalise_text`) and ideally de-duplicated.
    """
    config = config or NearDuplicateConfig()
    if not queries or not corpus:
        return []
    bands, rows = lsh_bands(config.threshold, config.num_perm)
    stop = boilerplate_shingles(shingle_texts(_sample(corpus, 20000), config.shingle_words, config.seed),
                                config.boilerplate_fraction, config.boilerplate_min_texts)
    corpus_keys, corpus_has = _texts_keys(corpus, config, stop, bands, rows, "corpus MinHash", progress)
    query_keys, query_has = _texts_keys(queries, config, stop, bands, rows, "query MinHash", progress)
    q, c = _candidate_pairs(query_keys, query_has, corpus_keys, corpus_has, config)
    if len(q) == 0:
        return []
    q_sets = _shingle_sets(queries, q, config, stop)
    c_sets = _shingle_sets(corpus, c, config, stop)
    best: dict[int, NearMatch] = {}
    for i, (qi, ci) in enumerate(zip(q.tolist(), c.tolist())):
        sim = _jaccard(q_sets[qi], c_sets[ci])
        if sim >= config.threshold and (qi not in best or sim > best[qi].similarity):
            best[qi] = NearMatch(qi, ci, sim)
        if progress and (i + 1) % 50000 == 0:
            progress("confirm", i + 1, len(q))
    return [best[k] for k in sorted(best)]


def _sample(texts: Sequence[str], n: int, seed: int = 0) -> list[str]:
    """Up to n texts chosen evenly at random (deterministic), for corpus statistics."""
    if len(texts) <= n:
        return list(texts)
    idx = np.sort(np.random.default_rng(seed).choice(len(texts), n, replace=False))
    return [texts[i] for i in idx]

