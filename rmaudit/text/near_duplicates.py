"""Exact and near-duplicate text matching between two sets of prompts, fast enough for
1M train prompts against 100k eval prompts on a 2-core CPU.

* :func:`normalise_text`: Unicode NFKC, case folded, punctuation removed, whitespace runs
  collapsed to one space. Two prompts are *exact* duplicates when their normalised texts
  have the same sha256.
* Near duplicates: each normalised text becomes a set of word shingles (word n-grams;
  words get dense ids from one shared vocabulary, shingles are hashed to 64 bits); a
  one-permutation MinHash sketch with densification (one hash per shingle, vectorised
  in numpy over a whole chunk of texts) feeds a banded LSH index; candidates whose
  16-bit bin fingerprints cannot reach the threshold are dropped, and every remaining one
  is confirmed by the exact Jaccard similarity of the two shingle sets. Candidates only
  decide what gets checked; the similarity reported is exact.

Shingles that appear in a large share of the corpus (a template, a shared instruction
block) are dropped before both steps so that boilerplate alone cannot make two different
prompts look alike; see :class:`NearDuplicateConfig`.

Why hand-written and not datasketch's ``MinHashLSH``: on the same 50k x 5k texts this index
is 9.7x faster (5.2x with rmaudit 0.1 on another CPU), and the probe runs 1M x 100k prompts in
50 s with every planted leak found (``benchmarks/bench_leakage.py``,
``benchmarks/results/leakage.md``); datasketch stays a benchmark-only dependency. The
module needs numpy only (no torch), so the data tools can use it without a model stack.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import sys
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

_U32 = np.uint64(32)

# Symbols (currency, maths, emoji) survive normalisation: "2+2" and "22" are different prompts.
_SPACE, _BOUNDARY, _DELETE = np.uint32(32), np.uint32(0), np.uint32(0xFFFFFFFF)

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; called as work advances."""


@functools.lru_cache(maxsize=1)
def _character_map() -> tuple[np.ndarray, np.ndarray]:
    """(replacement, folds to several characters) per code point. Replacement: punctuation
    (Unicode categories P*) -> deleted, any whitespace -> space, else its case fold when
    that is one character. Built on first use (about a second)."""
    table = np.arange(sys.maxunicode + 1, dtype=np.uint32)
    multi = np.zeros(sys.maxunicode + 1, bool)
    for cp in range(sys.maxunicode + 1):
        char = chr(cp)
        folded = char.casefold()
        if unicodedata.category(char)[0] == "P":
            table[cp] = _DELETE
        elif char.isspace():
            table[cp] = _SPACE
        elif len(folded) == 1:
            table[cp] = ord(folded)
        else:
            multi[cp] = True  # e.g. "ß" -> "ss": left to str.casefold
    return table, multi


def normalise_texts(texts: Sequence[str]) -> list[str]:
    """:func:`normalise_text` of many texts at once: NFKC runs once over the joined batch
    (the NUL separator composes with nothing), case folding, punctuation and whitespace
    in numpy over one UTF-32 buffer through a per-code-point table."""
    if not texts:
        return []
    joined = "\0".join(texts)
    if joined.count("\0") != len(texts) - 1:
        joined = "\0".join(t.replace("\0", " ") for t in texts)
    table, multi = _character_map()
    if not joined.isascii():  # ASCII is NFKC-stable
        joined = unicodedata.normalize("NFKC", joined)
    codes = np.frombuffer(joined.encode("utf-32-le"), np.uint32)
    if multi[codes].any():  # rare: let Python expand the characters that fold to several
        codes = np.frombuffer(joined.casefold().encode("utf-32-le"), np.uint32)
    codes = table[codes]
    codes = codes[codes != _DELETE]
    # Collapse runs of spaces to one, then drop a space that starts or ends a text.
    codes = codes[~((codes == _SPACE) & (np.concatenate(([_BOUNDARY], codes[:-1])) == _SPACE))]
    before = np.concatenate(([_BOUNDARY], codes[:-1]))
    after = np.concatenate((codes[1:], [_BOUNDARY]))
    codes = codes[~((codes == _SPACE) & ((before == _BOUNDARY) | (after == _BOUNDARY)))]
    return codes.tobytes().decode("utf-32-le").split("\0")


def normalise_text(text: str) -> str:
    """NFKC, casefold, punctuation removed, whitespace collapsed to single spaces and trimmed:
    the form compared for exact matches (e.g. "Hello,  WORLD!" -> "hello world")."""
    return normalise_texts([text])[0]


def text_digest(normalised: str) -> bytes:
    """sha256 of a normalised text: the key of exact matching."""
    return hashlib.sha256(normalised.encode("utf-8")).digest()


@dataclass(frozen=True)
class NearDuplicateConfig:
    """How near duplicates are searched and confirmed."""

    threshold: float = field(default=0.8, metadata={"help": "Jaccard similarity of shingle sets at or above which two texts are near duplicates."})
    shingle_words: int = field(default=1, metadata={"help": "Words per shingle. 1 (a bag of words) keeps one changed word in a short prompt above 0.8; larger n is stricter on word order."})
    num_perm: int = field(default=64, metadata={"help": "MinHash bins (a power of two); the LSH bands are chosen from these and the threshold."})
    boilerplate_fraction: float = field(default=0.8, metadata={"help": "Shingles found in more than this fraction of corpus texts (one template or instruction block shared by nearly every prompt) are ignored; lower values also drop common words and lower every similarity."})
    boilerplate_min_texts: int = field(default=100, metadata={"help": "Boilerplate is only judged on corpora with at least this many texts."})
    max_candidates: int = field(default=20, metadata={"help": "Most LSH candidates confirmed per query (those with the highest MinHash estimate)."})
    max_bucket: int = field(default=16, metadata={"help": "Most corpus texts taken from one LSH bucket per query and band (a crowded bucket holds texts that are alike; 16 bands give each true match many chances)."})
    chunk_texts: int = field(default=5000, metadata={"help": "Texts shingled and hashed per numpy batch (bounds memory)."})
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

    values: np.ndarray   # uint64 shingle hashes
    offsets: np.ndarray  # int64, len(texts) + 1

    def of(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)


class WordIds:
    """Dense integer ids for words, shared by every text of one search so that the same
    word always gets the same id (and shingle sets compare exactly, without hash collisions)."""

    def __init__(self) -> None:
        self._ids: collections.defaultdict[str, int] = collections.defaultdict()
        self._ids.default_factory = self._ids.__len__  # a new word gets the next id

    def __len__(self) -> int:
        return len(self._ids)

    def shingles(self, texts: Sequence[str], shingle_words: int, seed: int = 1) -> "Shingles":
        """Hash the word n-gram shingles of normalised texts (words separated by spaces).

        A text with fewer than ``shingle_words`` words gets one shingle of all its words; an
        empty text gets none. Repeats within a text are kept (MinHash ignores them).
        """
        # Normalised texts have single spaces and no ends to trim: words = spaces + 1.
        lengths = np.fromiter((t.count(" ") + 1 if t else 0 for t in texts), np.int64, len(texts))
        flat = " ".join(texts).split()
        ids = np.fromiter(map(self._ids.__getitem__, flat), np.int64, len(flat))
        word_text = np.repeat(np.arange(len(texts)), lengths)
        words = _mix64(ids.astype(np.uint64) + np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64))
        return _word_shingles(words, word_text, len(texts), shingle_words, seed)


def shingle_texts(texts: Sequence[str], shingle_words: int, seed: int = 1) -> "Shingles":
    """Shingles of texts with a fresh vocabulary (see :meth:`WordIds.shingles`)."""
    return WordIds().shingles(texts, shingle_words, seed)


def _word_shingles(words: np.ndarray, word_text: np.ndarray, n_texts: int, k: int, seed: int) -> Shingles:
    """Combine consecutive word hashes of the same text into k-word shingle hashes."""
    if k == 1:  # the word hashes are the shingles
        counts = np.bincount(word_text, minlength=n_texts)
        return Shingles(words, np.concatenate(([0], np.cumsum(counts))).astype(np.int64))
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


def boilerplate_shingles(sample: Shingles, fraction: float, min_texts: int) -> np.ndarray:
    """Sorted shingle hashes present in more than ``fraction`` of the sampled corpus texts;
    empty when the sample has fewer than ``min_texts`` texts (too few to tell)."""
    n = len(sample.offsets) - 1
    if n < min_texts or fraction >= 1.0:
        return np.zeros(0, np.uint64)
    values, counts = np.unique(distinct_shingles(sample).values, return_counts=True)  # each text counts once
    return values[counts > fraction * n]


def distinct_shingles(shingles: Shingles) -> Shingles:
    """The same texts' shingles with repeats within a text dropped, each text's sorted: its
    shingle set as 8 bytes a shingle (a Python set of them costs about ten times more)."""
    n = len(shingles.offsets) - 1
    owner = np.repeat(np.arange(n), shingles.sizes)
    order = np.lexsort((shingles.values, owner))  # by text, then value
    values, owner = shingles.values[order], owner[order]
    first = np.concatenate(([True], (values[1:] != values[:-1]) | (owner[1:] != owner[:-1])))[:len(values)]
    counts = np.bincount(owner[first], minlength=n)
    return Shingles(values[first], np.concatenate(([0], np.cumsum(counts))).astype(np.int64))


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


def lsh_bands(threshold: float, num_perm: int, recall: float = 0.999) -> tuple[int, int]:
    """(bands, rows) with the most rows per band (fewest false candidates) that still makes
    a pair exactly at ``threshold`` a candidate with probability ``recall`` under ideal
    MinHash: a missed candidate loses a leak, a false one costs a 16-bit signature check.
    Densified one-permutation sketches of short texts are noisier than ideal MinHash; this
    target keeps their measured recall at the threshold at 0.99 or better (0.8, 64 bins:
    16 bands of 4)."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= recall:
            return bands, rows
    return num_perm, 1


def minhash_signatures(shingles: Shingles, num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """(signatures, filled): (n_texts, num_perm) uint64 one-permutation MinHash signatures
    and the number of bins each text filled itself (its independent samples).

    One hash per shingle instead of ``num_perm`` (Li, Owen & Zhang 2012): its top bits pick
    one of ``num_perm`` bins, the bin keeps the smallest low 32 bits. Empty bins borrow the
    next non-empty bin to the right, tagged with the distance (rotation densification,
    Shrivastava & Li 2014), so two texts still collide in a bin with probability equal to
    their Jaccard similarity. Texts without shingles fill no bin and have all-ones rows;
    callers leave them out of the index. ``num_perm`` must be a power of two.
    """
    n, k = len(shingles.offsets) - 1, num_perm
    bits = k.bit_length() - 1
    if k != 1 << bits:
        raise ValueError(f"num_perm must be a power of two, got {k}")
    empty = np.uint64(0xFFFFFFFFFFFFFFFF)
    owner = np.repeat(np.arange(n, dtype=np.uint64), shingles.sizes)
    # Re-mixed: shingle hashes of dense word ids (k=1) are one finaliser away from a counter.
    h = _mix64(shingles.values ^ np.uint64(0x6A09E667F3BCC909))
    cell = owner * np.uint64(k) + (h >> np.uint64(64 - bits))
    # Sort by (cell, low bits): the first entry of each cell is its minimum.
    keyed = np.sort((cell << _U32) | (h & np.uint64(0xFFFFFFFF)))
    cells = keyed >> _U32
    first = np.concatenate(([True], cells[1:] != cells[:-1]))
    sig = np.full(n * k, empty, np.uint64)
    sig[cells[first].astype(np.int64)] = keyed[first] & np.uint64(0xFFFFFFFF)
    return _densify(sig.reshape(n, k))


def _densify(sig: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill each empty bin from the next non-empty bin to the right (circularly), adding the
    distance in the high bits so borrowed values differ from owned ones."""
    n, k = sig.shape
    filled = sig != np.uint64(0xFFFFFFFFFFFFFFFF)
    columns = np.arange(2 * k)
    doubled = np.where(np.concatenate([filled, filled], axis=1), columns, 4 * k)
    next_filled = np.minimum.accumulate(doubled[:, ::-1], axis=1)[:, ::-1][:, :k]
    has = filled.any(axis=1)
    next_filled[~has] = np.arange(k)  # all-empty rows stay all-ones
    distance = (next_filled - columns[:k]).astype(np.uint64)
    borrowed = np.take_along_axis(sig, next_filled % k, axis=1)
    return np.where(has[:, None], borrowed + (distance << _U32), sig), filled.sum(axis=1)


def band_keys(sig: np.ndarray, bands: int, rows: int, seed: int = 1) -> np.ndarray:
    """(n_texts, bands) uint64 keys: texts sharing a key in any band are candidates.

    Bands take bins in a fixed random order rather than side by side, because densified
    neighbours are correlated (they may borrow from the same bin)."""
    order = np.random.default_rng(seed + 17).permutation(sig.shape[1])
    weights = _random_u64(99, rows)
    keys = np.empty((sig.shape[0], bands), np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            block = sig[:, order[band * rows:(band + 1) * rows]]
            keys[:, band] = _mix64((block * weights).sum(axis=1, dtype=np.uint64) + np.uint64(band))
    return keys


@dataclass
class Sketches:
    """What the search keeps per text: LSH band keys, a 16-bit fingerprint per MinHash bin
    (to estimate similarity cheaply before the exact check) and the bins it filled."""

    keys: np.ndarray     # (n, bands) uint64
    bins: np.ndarray     # (n, num_perm) uint16
    filled: np.ndarray   # (n,) int64; 0 = no shingles, left out of the index


def _sketch(texts: Sequence[str], vocab: WordIds, config: NearDuplicateConfig, stop: np.ndarray,
            bands: int, rows: int, stage: str, progress: Progress | None) -> Sketches:
    """Sketches of all texts, computed in chunks of ``config.chunk_texts``."""
    out = Sketches(np.empty((len(texts), bands), np.uint64), np.empty((len(texts), config.num_perm), np.uint16),
                   np.zeros(len(texts), np.int64))
    for lo in range(0, len(texts), config.chunk_texts):
        hi = min(lo + config.chunk_texts, len(texts))
        shingles = drop_shingles(vocab.shingles(texts[lo:hi], config.shingle_words, config.seed), stop)
        sig, out.filled[lo:hi] = minhash_signatures(shingles, config.num_perm)
        out.keys[lo:hi] = band_keys(sig, bands, rows, config.seed)
        out.bins[lo:hi] = ((sig ^ (sig >> _U32)) & np.uint64(0xFFFF)).astype(np.uint16)
        if progress:
            progress(stage, hi, len(texts))
    return out


def _band_collisions(queries: Sketches, corpus: Sketches, max_bucket: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (query, corpus) index pairs that share at least one band key."""
    corpus_ids = np.flatnonzero(corpus.filled > 0)
    query_ids = np.flatnonzero(queries.filled > 0)
    n_corpus = np.int64(len(corpus.filled))
    codes = []
    for band in range(corpus.keys.shape[1]):
        order = np.argsort(corpus.keys[corpus_ids, band], kind="stable")
        sorted_keys = corpus.keys[corpus_ids[order], band]
        q_keys = queries.keys[query_ids, band]
        lo = np.searchsorted(sorted_keys, q_keys, side="left")
        take = np.minimum(np.searchsorted(sorted_keys, q_keys, side="right") - lo, max_bucket)
        if take.sum() == 0:
            continue
        first = np.repeat(lo, take)
        within = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
        codes.append(np.repeat(query_ids, take).astype(np.int64) * n_corpus + corpus_ids[order[first + within]])
    if not codes:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pair_codes = np.unique(np.concatenate(codes))
    return pair_codes // n_corpus, pair_codes % n_corpus


def _candidate_pairs(queries: Sketches, corpus: Sketches, config: NearDuplicateConfig) -> tuple[np.ndarray, np.ndarray]:
    """Band collisions whose MinHash estimate could still reach the threshold, at most
    ``max_candidates`` per query, most similar first.

    The estimate from ``n`` filled bins has a standard deviation of at most 0.5/sqrt(n), so
    a slack of 4 such deviations (2/sqrt(n)) keeps practically every true near duplicate."""
    q, c = _band_collisions(queries, corpus, config.max_bucket)
    estimate = np.empty(len(q))
    for lo in range(0, len(q), 200000):  # bounded memory: 200k pairs x num_perm bins at a time
        sl = slice(lo, lo + 200000)
        estimate[sl] = (queries.bins[q[sl]] == corpus.bins[c[sl]]).mean(axis=1)
    samples = np.minimum(queries.filled[q], corpus.filled[c])
    keep = estimate >= config.threshold - 2.0 / np.sqrt(samples)
    q, c, estimate = q[keep], c[keep], estimate[keep]
    order = np.lexsort((-estimate, q))
    q, c = q[order], c[order]
    rank = np.arange(len(q)) - np.searchsorted(q, q, side="left")
    keep = rank < config.max_candidates
    return q[keep], c[keep]


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted arrays of distinct shingles."""
    if not len(a) or not len(b):
        return 0.0
    shared = int(np.count_nonzero(b[np.minimum(np.searchsorted(b, a), len(b) - 1)] == a))
    return shared / (len(a) + len(b) - shared)


def _shingle_sets(texts: Sequence[str], ids: np.ndarray, vocab: WordIds, config: NearDuplicateConfig,
                  stop: np.ndarray) -> tuple[np.ndarray, Shingles]:
    """(the distinct ``ids``, sorted; their texts' shingle sets in that order), recomputed (cheap:
    only candidates are asked for). As arrays: at 100k candidate prompts, Python sets held
    about 5 KiB a text (benchmarks/results/scale.md, 0.5.10)."""
    ids = np.unique(ids)
    parts = [distinct_shingles(drop_shingles(vocab.shingles([texts[i] for i in ids[lo:lo + config.chunk_texts]],
                                                            config.shingle_words, config.seed), stop))
             for lo in range(0, len(ids), config.chunk_texts)]  # a chunk's words as strings are the peak
    sizes = np.concatenate([part.sizes for part in parts]) if parts else np.zeros(0, np.int64)
    values = np.concatenate([part.values for part in parts]) if parts else np.zeros(0, np.uint64)
    return ids, Shingles(values, np.concatenate(([0], np.cumsum(sizes))).astype(np.int64))


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
    vocab = WordIds()
    stop = boilerplate_shingles(vocab.shingles(_sample(corpus, 20000), config.shingle_words, config.seed),
                                config.boilerplate_fraction, config.boilerplate_min_texts)
    corpus_sketches = _sketch(corpus, vocab, config, stop, bands, rows, "corpus MinHash", progress)
    query_sketches = _sketch(queries, vocab, config, stop, bands, rows, "query MinHash", progress)
    q, c = _candidate_pairs(query_sketches, corpus_sketches, config)
    if len(q) == 0:
        return []
    q_texts, q_sets = _shingle_sets(queries, q, vocab, config, stop)
    c_texts, c_sets = _shingle_sets(corpus, c, vocab, config, stop)
    q_rows, c_rows = np.searchsorted(q_texts, q).tolist(), np.searchsorted(c_texts, c).tolist()
    best: dict[int, NearMatch] = {}
    for i, (qi, ci) in enumerate(zip(q.tolist(), c.tolist())):
        sim = _jaccard(q_sets.of(q_rows[i]), c_sets.of(c_rows[i]))
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

