"""The Bradley-Terry loss and gradient against the reference chapter's hand-worked walkthrough."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rmaudit.train.loss import bradley_terry_loss, pair_statistics, split_stacked

H_CHOSEN = [0.5, 1.0, -0.3, 0.2]
H_REJECTED = [0.1, 0.4, -0.1, -0.2]


def _head(bias: bool = False) -> nn.Linear:
    head = nn.Linear(4, 1, bias=bias)
    nn.init.zeros_(head.weight)
    if bias:
        nn.init.constant_(head.bias, 5.0)
    return head


def _stacked_loss(head: nn.Linear) -> torch.Tensor:
    hidden = torch.tensor([H_CHOSEN, H_REJECTED])  # chosen first, as the trainer stacks them
    chosen, rejected = split_stacked(head(hidden).squeeze(-1))
    return bradley_terry_loss(chosen, rejected)


def test_zero_head_gives_log_two():
    assert _stacked_loss(_head()).item() == pytest.approx(math.log(2), abs=1e-7)


def test_one_sgd_step_reproduces_the_walkthrough():
    head = _head()
    loss = _stacked_loss(head)
    loss.backward()
    torch.testing.assert_close(head.weight.grad, torch.tensor([[-0.2, -0.3, 0.1, -0.2]]))
    torch.optim.SGD(head.parameters(), lr=1.0).step()
    torch.testing.assert_close(head.weight.detach(), torch.tensor([[0.2, 0.3, -0.1, 0.2]]))
    with torch.no_grad():
        chosen, rejected = split_stacked(head(torch.tensor([H_CHOSEN, H_REJECTED])).squeeze(-1))
        margin = (chosen - rejected).item()
        assert chosen.item() == pytest.approx(0.47, abs=1e-6)
        assert rejected.item() == pytest.approx(0.11, abs=1e-6)
        assert margin == pytest.approx(0.36, abs=1e-6)
        assert torch.sigmoid(torch.tensor(margin)).item() == pytest.approx(0.589, abs=5e-4)
        assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(0.529, abs=5e-4)


def test_head_bias_gets_exactly_zero_gradient():
    head = _head(bias=True)
    _stacked_loss(head).backward()
    assert head.bias.grad.item() == 0.0
    assert head.weight.grad.abs().sum() > 0  # the weight does learn
    torch.optim.SGD(head.parameters(), lr=1.0).step()
    assert head.bias.item() == 5.0


def test_margin_shifts_the_loss():
    chosen, rejected = torch.tensor([1.0, 0.2]), torch.tensor([0.5, 0.4])
    plain = bradley_terry_loss(chosen, rejected)
    with_margin = bradley_terry_loss(chosen, rejected, torch.tensor([0.3, 0.0]))
    # A margin m turns d into d - m: identical to shifting the chosen reward down by m.
    torch.testing.assert_close(with_margin, bradley_terry_loss(chosen - torch.tensor([0.3, 0.0]), rejected))
    assert with_margin > plain
    zero = bradley_terry_loss(chosen, rejected, torch.zeros(2))
    torch.testing.assert_close(zero, plain)


def test_loss_is_finite_for_confidently_wrong_pairs():
    loss = bradley_terry_loss(torch.tensor([-200.0]), torch.tensor([200.0]))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(400.0)


def test_loss_asymmetry_matches_the_chapter():
    # At margin -3 the loss is about 3.05; at +3 about 0.05.
    assert bradley_terry_loss(torch.tensor([0.0]), torch.tensor([3.0])).item() == pytest.approx(3.049, abs=1e-3)
    assert bradley_terry_loss(torch.tensor([3.0]), torch.tensor([0.0])).item() == pytest.approx(0.0486, abs=1e-3)


def test_pair_statistics():
    stats = pair_statistics(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 1.0, 1.0]))
    assert stats["accuracy"] == pytest.approx(2 / 3)
    assert stats["margin"] == pytest.approx(1 / 3)
    assert stats["reward_mean"] == pytest.approx(5 / 6)
