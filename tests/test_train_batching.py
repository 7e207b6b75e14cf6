"""Length-grouped batching, collation, the lr schedule, the optimizer groups and the config layer."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from rmaudit.errors import RmauditInputError
from rmaudit.train.batching import (EncodedPair, LengthGroupedBatchSampler, collate_pairs, padded_fraction,
                                    stack_batch)
from rmaudit.train.config import TrainConfig, build_config, field_help, read_config_file
from rmaudit.train.optim import build_optimizer, build_scheduler


def _lengths(n: int = 500, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, 400, (n,), generator=g).tolist()


def _padding(batches: list[list[int]], lengths: list[int]) -> float:
    total = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - sum(lengths[i] for b in batches for i in b) / total


def test_batches_are_deterministic_per_epoch_and_full():
    lengths = _lengths()
    a = LengthGroupedBatchSampler(lengths, 8, seed=3)
    b = LengthGroupedBatchSampler(lengths, 8, seed=3)
    assert list(a) == list(b)
    assert all(len(batch) == 8 for batch in a) and len(list(a)) == len(a) == 500 // 8
    b.set_epoch(1)
    assert list(a) != list(b)
    assert len({i for batch in a for i in batch}) == 8 * (500 // 8)  # no index twice


def test_length_grouping_cuts_padding():
    lengths = _lengths()
    grouped = list(LengthGroupedBatchSampler(lengths, 8, seed=0))
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(lengths), generator=g).tolist()
    random_batches = [order[i:i + 8] for i in range(0, 496, 8)]
    assert _padding(grouped, lengths) < 0.1 < _padding(random_batches, lengths)


def test_skip_resumes_at_the_same_batch():
    lengths = _lengths(100)
    sampler = LengthGroupedBatchSampler(lengths, 4, seed=1)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.skip(7)
    assert list(sampler) == full[7:]
    assert list(sampler) == full  # skipping applies to one iteration only


def test_eval_order_keeps_every_pair():
    sampler = LengthGroupedBatchSampler([3, 9, 1, 7, 5], 2, shuffle=False)
    batches = list(sampler)
    assert batches == [[1, 3], [4, 0], [2]] and len(sampler) == 3


def test_collate_pads_chosen_and_rejected_to_one_length_on_the_right():
    pairs = [EncodedPair([1, 2, 3], [4], 0.5), EncodedPair([5], [6, 7], None)]
    batch = collate_pairs(pairs, pad_token_id=0)
    assert batch["chosen_ids"].tolist() == [[1, 2, 3], [5, 0, 0]]
    assert batch["rejected_ids"].tolist() == [[4, 0, 0], [6, 7, 0]]
    assert batch["rejected_mask"].tolist() == [[1, 0, 0], [1, 1, 0]]
    assert batch["margin"].tolist() == [0.5, 0.0]
    ids, mask = stack_batch(batch)
    assert ids[:2].tolist() == batch["chosen_ids"].tolist() and ids.shape == (4, 3)
    assert padded_fraction(mask) == pytest.approx(5 / 12)


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_schedule_warms_up_then_decays(kind):
    scheduler = build_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 100, 0.1, kind)
    factors = []
    for _ in range(101):
        factors.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step(), scheduler.step()
    assert factors[0] == 0.0 and factors[5] == pytest.approx(0.5) and factors[10] == pytest.approx(1.0)
    assert all(b <= a + 1e-12 for a, b in zip(factors[10:], factors[11:]))
    assert factors[100] == pytest.approx({"linear": 0.0, "cosine": 0.0, "constant": 1.0}[kind])
    if kind == "cosine":
        assert factors[55] == pytest.approx(0.5)


def test_schedule_matches_transformers_linear_and_cosine():
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    for ours, theirs in (("linear", get_linear_schedule_with_warmup), ("cosine", get_cosine_schedule_with_warmup)):
        p = [torch.nn.Parameter(torch.zeros(1))]
        a = build_scheduler(torch.optim.SGD(p, lr=1.0), 50, 0.1, ours)
        b = theirs(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), math.ceil(0.1 * 50), 50)
        for _ in range(50):
            assert a.get_last_lr() == pytest.approx(b.get_last_lr())
            a.optimizer.step(), a.step(), b.optimizer.step(), b.step()


def test_head_gets_its_own_learning_rate_and_norms_skip_decay():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    model = LlamaForSequenceClassification(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32,
                                                       num_hidden_layers=1, num_attention_heads=2,
                                                       num_labels=1, pad_token_id=0))
    optimizer = build_optimizer(model, lr=1e-5, head_lr_mult=10.0, weight_decay=0.1)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["head"]["lr"] == pytest.approx(1e-4) and groups["head"]["params"][0] is model.score.weight
    assert groups["body"]["lr"] == pytest.approx(1e-5) and groups["body"]["weight_decay"] == 0.1
    assert groups["body_no_decay"]["weight_decay"] == 0.0
    assert any(p is model.model.norm.weight for p in groups["body_no_decay"]["params"])
    n_params = sum(len(g["params"]) for g in optimizer.param_groups)
    assert n_params == len(list(model.parameters()))


def test_every_config_field_has_help():
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help"), f.name
        assert ("(default:" in field_help(f.name)) == (f.default is not None)


def test_config_precedence_defaults_file_flags(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("lr: 3.0e-5\nbatch-size: 4\ntruncation: truncate\n")
    toml_file = tmp_path / "run.toml"
    toml_file.write_text("lr = 3.0e-5\nbatch_size = 4\ntruncation = 'truncate'\n")
    for path in (yaml_file, toml_file):
        cfg = build_config(read_config_file(path), {"batch_size": 2, "lr": None})
        assert (cfg.lr, cfg.batch_size, cfg.truncation, cfg.seed) == (3e-5, 2, "truncate", TrainConfig().seed)


def test_config_errors_name_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 1e-5\n")
    with pytest.raises(RmauditInputError, match=r"bad.yaml: field 'learning_rat': unknown option"):
        read_config_file(bad)
    bad.write_text("learning_rate: 1e-5\nlr: 2e-5\n")
    with pytest.raises(RmauditInputError, match=r"given twice"):
        read_config_file(bad)
    with pytest.raises(RmauditInputError, match=r"field 'truncation': must be one of drop, truncate"):
        build_config({"truncation": "cut"}, source=str(bad))


@pytest.mark.parametrize("flags, capability, expected", [
    ({"fpu", "avx2", "fma"}, "AVX2", "float32"),                       # AMD EPYC without BF16: emulated, 50-80x slower
    ({"avx512f", "avx512bw"}, "AVX512", "float32"),                    # AVX512 without the BF16 extension
    ({"avx512f", "avx512_bf16"}, "AVX512", "bfloat16"),                # Zen 4/5, Cooper Lake
    ({"avx512f", "amx_bf16", "amx_tile"}, "AVX512", "bfloat16"),       # Sapphire Rapids
    (set(), "AMX", "bfloat16"),                                        # no /proc/cpuinfo, capability says AMX
])
def test_dtype_auto_follows_the_cpu_capability(monkeypatch, flags, capability, expected):
    from rmaudit import devices
    from rmaudit.options import Dtype

    monkeypatch.setattr(devices, "cpu_flags", lambda: flags)
    monkeypatch.setattr(devices, "cpu_capability", lambda: capability)
    dtype, why = Dtype.AUTO.resolved("cpu")
    assert dtype.value == expected and why.startswith("auto: CPU capability " + capability)
    assert Dtype.FLOAT32.resolved("cpu") == (Dtype.FLOAT32, "requested")
