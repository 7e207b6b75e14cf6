"""prompt_leakage: planted leaks (exact after case/whitespace/punctuation changes, near
duplicates with a word changed) in real hh-rlhf and PandaLM prompts, written to real files
and read back with the data loader; healthy twins pass."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from helpers_probe import run_configured
from rmaudit.data import load_pairs, split_by_prompt
from rmaudit.probes.context import AuditContext
from rmaudit.text.near_duplicates import (
    NearDuplicateConfig,
    distinct_shingles,
    find_near_duplicates,
    normalise_text,
    normalise_texts,
    shingle_texts,
)
from rmaudit.probes.prompt_leakage import PromptLeakage
from rmaudit.report.charts import validate_chart
from rmaudit.results import Status
from rmaudit.stats import pair_credit

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HH = SHARED / "hh-rlhf-harmless-base-test.jsonl.gz"
PANDALM = SHARED / "pandalm" / "testset-v1.json"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (../shared is only present for developers and CI)")
    return path


@pytest.fixture(scope="module")
def hh_pairs():
    """Real hh-rlhf pairs, one per distinct opening user turn (hh-rlhf holds several
    branches of some conversations: those are real near duplicates), in a fixed shuffled order."""
    pairs = load_pairs(_need(HH))
    seen, unique = set(), []
    for pair in pairs:
        key = normalise_text(pair.prompt[0]["content"])
        if key not in seen:
            seen.add(key)
            unique.append(pair)
    random.Random(0).shuffle(unique)
    return unique


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _row(prompt: list[dict], chosen: str, rejected: str) -> dict:
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def _rows(pairs) -> list[dict]:
    return [_row(p.prompt, p.chosen, p.rejected) for p in pairs]


def _disguise(prompt: list[dict], rng: random.Random) -> list[dict]:
    """The same prompt with case, whitespace and punctuation changed (an exact leak after normalising)."""
    out = []
    for m in prompt:
        words = m["content"].split()
        text = "  ".join(w.upper() if rng.random() < 0.5 else w.lower() for w in words)
        out.append({"role": m["role"], "content": "\n " + text.rstrip("?.!") + " \t"})
    return out


def _change_one_word(prompt: list[dict]) -> list[dict]:
    """Replace one word in the longest message (a near duplicate)."""
    longest = max(range(len(prompt)), key=lambda i: len(prompt[i]["content"].split()))
    words = prompt[longest]["content"].split()
    words[len(words) // 2] = "zanzibar"
    return [dict(m, content=" ".join(words)) if i == longest else m for i, m in enumerate(prompt)]


def _run(train, evaluation, **thresholds):
    ctx = AuditContext(checkpoint=Path("."), train_pairs=train, eval_pairs=evaluation)
    return run_configured(PromptLeakage, ctx, **thresholds)


# --- the planted defect and its healthy twin, through real files ---------------------------


def test_five_percent_shared_prompts_with_case_and_whitespace_changes_fail(tmp_path, hh_pairs):
    train, evaluation = hh_pairs[:1500], hh_pairs[1500:1900]
    rng = random.Random(1)
    planted = rng.sample(range(len(evaluation)), 20)  # 5% of 400 eval prompts
    eval_rows = _rows(evaluation)
    for k, i in enumerate(planted):
        source = train[k * 7]
        eval_rows[i] = _row(_disguise(source.prompt, rng), evaluation[i].chosen, evaluation[i].rejected)
    train_file = _write(tmp_path / "train.jsonl", _rows(train))
    eval_file = _write(tmp_path / "eval.jsonl", eval_rows)

    result = _run(load_pairs(train_file), load_pairs(eval_file))

    assert result.status is Status.FAIL
    assert result.metrics["leaked_prompts_exact"] == 20
    assert result.metrics["leaked_prompts"] == 20
    assert result.metrics["leaked_fraction"] == pytest.approx(20 / 400)
    leaked_rows = {int(r["eval_at"].rsplit(":", 1)[1]) for r in result.evidence}
    assert leaked_rows <= {i + 1 for i in planted}
    assert all(r["kind"] == "exact" and r["similarity"] == 1.0 for r in result.evidence)
    assert validate_chart(result.chart) == []
    json.dumps(result.to_dict(), allow_nan=False)  # the report writes strict JSON


def test_disjoint_twin_passes(tmp_path, hh_pairs):
    train_file = _write(tmp_path / "train.jsonl", _rows(hh_pairs[:1500]))
    eval_file = _write(tmp_path / "eval.jsonl", _rows(hh_pairs[1500:1900]))

    result = _run(load_pairs(train_file), load_pairs(eval_file))

    assert result.status is Status.PASS, result.evidence
    assert result.metrics["leaked_prompts"] == 0
    assert result.metrics["eval_unique_prompts"] == 400
    assert result.chart["series"][0]["values"] == [0, 0, 400] and validate_chart(result.chart) == []


def test_one_word_changed_is_a_near_duplicate_with_its_similarity(hh_pairs):
    train, evaluation = list(hh_pairs[:1500]), list(hh_pairs[1500:1900])
    # Near duplicates need enough words for one change to stay above 0.8 Jaccard.
    long_train = [i for i, p in enumerate(train) if len(set(normalise_text(p.prompt[-1]["content"]).split())) >= 12
                  and len(p.prompt) == 1][:3]
    assert len(long_train) == 3
    for k, i in enumerate(long_train):
        evaluation[k] = type(train[i])(prompt=_change_one_word(train[i].prompt), chosen="a", rejected="b", row=k + 1)

    result = _run(train, evaluation)

    near = [r for r in result.evidence if r["kind"] == "near"]
    assert result.metrics["leaked_prompts_near"] == 3 and result.metrics["leaked_prompts_exact"] == 0
    assert result.status is Status.WARN  # 3 of 400 = 0.75% < 1%
    assert len(near) == 3 and all(0.8 <= row["similarity"] < 1.0 for row in near)
    bars, spread = result.chart["charts"]
    assert bars["series"][0]["values"] == [0, 3, 397]
    assert sorted(spread["series"][0]["values"]) == pytest.approx(sorted(r["similarity"] for r in near), abs=1e-4)
    assert validate_chart(result.chart) == []
    assert {r["train_prompt"] for r in near} == {train[i].prompt[0]["content"] for i in long_train}


def test_stricter_similarity_threshold_drops_the_near_duplicates(hh_pairs):
    train, evaluation = list(hh_pairs[:1500]), list(hh_pairs[1500:1900])
    i = next(i for i, p in enumerate(train) if len(p.prompt) == 1 and len(p.prompt[0]["content"].split()) >= 15)
    evaluation[0] = type(train[i])(prompt=_change_one_word(train[i].prompt), chosen="a", rejected="b")

    assert _run(train, evaluation).metrics["leaked_prompts_near"] == 1
    assert _run(train, evaluation, near_duplicate_similarity=0.99).metrics["leaked_prompts"] == 0


def test_a_prompt_repeated_in_ten_rows_counts_once(hh_pairs):
    train, evaluation = list(hh_pairs[:1000]), list(hh_pairs[1000:1300])
    repeated = train[5]
    evaluation += [type(repeated)(prompt=repeated.prompt, chosen=f"answer {k}", rejected=f"other {k}") for k in range(10)]
    train += [repeated] * 4

    m = _run(train, evaluation).metrics

    assert m["leaked_prompts"] == 1
    assert m["leaked_pairs"] == 10
    assert m["eval_unique_prompts"] == 301
    assert m["leaked_fraction"] == pytest.approx(1 / 301, abs=1e-6)
    assert m["train_pairs_matched"] == 5


def test_pandalm_split_by_prompt_passes_and_split_by_row_fails():
    pairs = load_pairs(_need(PANDALM))
    train, evaluation = split_by_prompt(pairs, 0.2)
    by_prompt = _run(train, evaluation)
    assert by_prompt.status is Status.PASS, by_prompt.evidence
    assert by_prompt.metrics["leaked_prompts"] == 0

    shuffled = list(pairs)
    random.Random(0).shuffle(shuffled)
    cut = int(0.8 * len(shuffled))
    by_row = _run(shuffled[:cut], shuffled[cut:])
    assert by_row.status is Status.FAIL
    # 170 prompts over ~900 rows: a random row split puts most eval prompts in train too.
    assert by_row.metrics["leaked_fraction"] > 0.5
    assert by_row.metrics["leaked_prompts"] <= by_row.metrics["eval_unique_prompts"] <= 170
    assert by_row.metrics["leaked_pairs"] > by_row.metrics["leaked_prompts"]


# --- general cases beyond the fixtures ---------------------------------------------------


def test_shared_system_prompt_does_not_make_different_prompts_near_duplicates(hh_pairs):
    system = {"role": "system", "content": " ".join(
        ["You are a careful, honest assistant. Answer the user's question helpfully and refuse anything harmful."] * 4)}

    def with_system(pairs):
        return [type(p)(prompt=[system, *p.prompt], chosen=p.chosen, rejected=p.rejected) for p in pairs]

    train, evaluation = with_system(hh_pairs[:800]), with_system(hh_pairs[800:1000])
    assert _run(train, evaluation).metrics["leaked_prompts"] == 0

    evaluation[3] = type(train[0])(prompt=[{"role": "system", "content": "Be terse."}, *train[10].prompt[1:]],
                                   chosen="a", rejected="b")
    result = _run(train, evaluation)
    assert result.metrics["leaked_prompts_near"] == 1  # same conversation, different system prompt
    assert result.evidence[0]["similarity"] == 1.0


def test_unicode_compatibility_forms_and_punctuation_match_exactly(hh_pairs):
    train = list(hh_pairs[:300])
    train.append(type(train[0])(prompt=[{"role": "user", "content": "What is the ＣＡＰＩＴＡＬ of France?!"}],
                                chosen="Paris", rejected="Lyon"))
    evaluation = list(hh_pairs[300:400])
    evaluation.append(type(train[0])(prompt=[{"role": "user", "content": "what is the capital of france"}],
                                     chosen="Paris", rejected="Rome"))
    m = _run(train, evaluation).metrics
    assert (m["leaked_prompts_exact"], m["leaked_prompts_near"]) == (1, 0)


def test_multi_turn_prompt_compares_the_whole_conversation(hh_pairs):
    multi = [p for p in hh_pairs if len(p.prompt) >= 3]
    train, evaluation = multi[:400], multi[400:600]
    same_start = type(train[0])(prompt=[*train[0].prompt[:-1], {"role": "user", "content": "ok thanks, bye"}],
                                chosen="a", rejected="b")
    assert _run(train, [*evaluation, same_start]).metrics["leaked_prompts_exact"] == 0
    assert _run(train, [*evaluation, train[1]]).metrics["leaked_prompts_exact"] == 1


def test_empty_prompts_are_not_counted_as_leaks(hh_pairs):
    empty = [type(p)(prompt=[], chosen=p.chosen, rejected=p.rejected) for p in hh_pairs[:50]]
    m = _run(empty + list(hh_pairs[100:300]), empty[:10] + list(hh_pairs[300:400])).metrics
    assert m["leaked_prompts"] == 0 and m["eval_empty_prompt_pairs"] == 10
    skipped = _run(empty, empty[:10])
    assert skipped.status is Status.SKIP and "no prompt text" in skipped.summary


def test_skips_without_train_pairs(hh_pairs):
    skipped = _run(None, hh_pairs[:10])
    assert skipped.status is Status.SKIP and "--train-data" in skipped.summary


# --- the near-duplicate machinery against brute force ------------------------------------


def test_normalise_text():
    assert normalise_text("  Hello,\tWORLD!!  “It’s” ｆｉｎｅ…\n") == "hello world its fine"
    messy = ["a  b \t", " \n", "c!", "  d  e  ", "x . y", "", "ok\u00a0\u2003 ."]
    assert normalise_texts(messy) == [" ".join(t.split()) for t in ["a b", "", "c", "d e", "x y", "", "ok"]]
    assert normalise_texts(messy) == [normalise_text(t) for t in messy]
    assert normalise_text("2+2 = 4 $") == "2+2 = 4 $"  # symbols are content, punctuation is not


def test_shingles_match_python_sets():
    texts = ["a b c d", "a b", "", "x", "a b c d a b"]
    for k in (1, 2, 3):
        sh = shingle_texts(texts, k)
        for i, t in enumerate(texts):
            words = t.split()
            expected = ({tuple(words[j:j + k]) for j in range(len(words) - k + 1)} if len(words) >= k
                        else ({tuple(words)} if words else set()))
            assert len(set(sh.of(i).tolist())) == len(expected), (k, t)
            # the confirmation step's shingle set: sorted, each shingle once
            assert distinct_shingles(sh).of(i).tolist() == sorted(set(sh.of(i).tolist())), (k, t)
    assert set(shingle_texts(["a b c d"], 2).of(0).tolist()) <= set(shingle_texts(["a b c d a b"], 2).of(0).tolist())


@pytest.mark.parametrize("shingle_words", [1, 2])
def test_lsh_finds_every_pair_brute_force_finds(hh_pairs, shingle_words):
    texts = [normalise_text(" ".join(m["content"] for m in p.prompt)) for p in hh_pairs[:700]]
    rng = random.Random(3)
    queries = texts[600:700]
    for i in range(0, 100, 3):  # perturb a third of the queries towards a corpus text
        words = texts[rng.randrange(600)].split()
        if len(words) > 3:
            words[rng.randrange(len(words))] = "qqq"
        queries[i] = " ".join(words)
    corpus = texts[:600]
    # Boilerplate filtering off: the similarity must then be the plain Jaccard of shingle sets.
    config = NearDuplicateConfig(threshold=0.7, shingle_words=shingle_words, boilerplate_fraction=1.0)

    found = {m.query: m for m in find_near_duplicates(queries, corpus, config)}

    def shingle_set(t):
        w = t.split()
        return {tuple(w[j:j + shingle_words]) for j in range(max(1, len(w) - shingle_words + 1))} if w else set()

    corpus_sets = [shingle_set(t) for t in corpus]
    for qi, q in enumerate(queries):
        qs = shingle_set(q)
        sims = [len(qs & cs) / len(qs | cs) if qs | cs else 0.0 for cs in corpus_sets]
        best = max(sims)
        if best >= 0.7 and qs:
            assert qi in found, (q, best)
            assert found[qi].similarity == pytest.approx(best, abs=1e-9)
        else:
            assert qi not in found
    assert len(found) >= 20
    # Texts are shingled a chunk at a time (bounded memory); chunk edges change nothing.
    chunked = find_near_duplicates(queries, corpus, NearDuplicateConfig(
        threshold=0.7, shingle_words=shingle_words, boilerplate_fraction=1.0, chunk_texts=7))
    assert chunked == [found[k] for k in sorted(found)]


def test_template_boilerplate_alone_does_not_make_a_near_duplicate(hh_pairs):
    """A long few-shot block shared by every prompt: only the questions after it count."""
    shots = ("Here are examples of good answers. Q: how do plants make food A: photosynthesis turns light into "
             "sugar. Q: why is the sky blue A: air scatters blue light more than red light. Now answer: ")
    texts = [normalise_text(shots + p.prompt[0]["content"]) for p in hh_pairs[:600]]
    corpus, queries = texts[:500], texts[500:]
    assert find_near_duplicates(queries, corpus) == []
    assert len(find_near_duplicates(queries, corpus, NearDuplicateConfig(boilerplate_fraction=1.0))) > 20
    assert [m.corpus for m in find_near_duplicates([corpus[7]], corpus)] == [7]


def test_accuracy_on_leaked_vs_clean_pairs_with_a_real_model(tmp_path, hh_pairs):
    from rmaudit.modeling.loading import load_reward_model
    from tiny_models import make_tiny_rm

    loaded = load_reward_model(make_tiny_rm(tmp_path / "rm"))
    train, clean = list(hh_pairs[:300]), list(hh_pairs[300:330])
    # Leaked rows whose two answers are identical: a tie, which counts half (the one tie rule).
    leaked = [type(p)(prompt=_disguise(p.prompt, random.Random(k)), chosen="Same answer.", rejected="Same answer.")
              for k, p in enumerate(train[:6])]
    ctx = AuditContext(checkpoint=tmp_path / "rm", model=loaded.model, tokenizer=loaded.tokenizer,
                       train_pairs=train, eval_pairs=clean + leaked)

    m = run_configured(PromptLeakage, ctx).metrics

    assert m["leaked_prompts_exact"] == 6
    assert m["accuracy_leaked"] == 0.5
    chosen, rejected = ctx.pair_rewards(clean)
    assert m["accuracy_clean"] == pytest.approx(float(np.mean(pair_credit(chosen - rejected))), abs=1e-4)
    assert m["accuracy_gap"] == pytest.approx(0.5 - m["accuracy_clean"], abs=1e-4)

    # A --max-pairs sample: the split is counted whole, accuracy is read on the sample only.
    sample = [*clean[:10], *leaked[:2]]
    ctx = AuditContext(checkpoint=tmp_path / "rm", model=loaded.model, tokenizer=loaded.tokenizer,
                       train_pairs=train, eval_pairs=sample, all_eval_pairs=clean + leaked)
    m = run_configured(PromptLeakage, ctx).metrics
    assert m["leaked_prompts_exact"] == 6 and m["accuracy_leaked"] == 0.5
    chosen, rejected = ctx.pair_rewards(clean[:10])
    assert m["accuracy_clean"] == pytest.approx(float(np.mean(pair_credit(chosen - rejected))), abs=1e-4)


def test_progress_bars_do_not_change_the_result(hh_pairs):
    results = []
    for progress in (False, True):
        ctx = AuditContext(checkpoint=Path("."), train_pairs=hh_pairs[:500], eval_pairs=[*hh_pairs[500:600], hh_pairs[3]],
                           progress=progress)
        results.append(run_configured(PromptLeakage, ctx).metrics)
    assert results[0] == results[1] and results[0]["leaked_prompts_exact"] == 1


def test_counts_cover_the_whole_eval_split_not_the_scored_sample(hh_pairs):
    """--max-pairs samples what the model scores; leakage counting needs no model and must
    see every eval prompt, or a leak outside the sample would go unnoticed."""
    train = list(hh_pairs[:300])
    leaked = [type(p)(prompt=_disguise(p.prompt, random.Random(k)), chosen=p.chosen, rejected=p.rejected)
              for k, p in enumerate(train[:3])]
    full_eval = list(hh_pairs[300:400]) + leaked
    ctx = AuditContext(checkpoint=Path("."), train_pairs=train, eval_pairs=full_eval[:20], all_eval_pairs=full_eval)
    m = run_configured(PromptLeakage, ctx).metrics
    assert m["eval_pairs"] == len(full_eval)
    assert m["leaked_prompts_exact"] == 3
