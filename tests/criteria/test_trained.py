"""Criteria for trained networks (hrank, expectabs, pls, kl) against hand-checked cases."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import residual_prune as rp
from residual_prune.criteria.kl import bypassed
from residual_prune.criteria.pls import vip_scores
from residual_prune.models.cifar_resnet import resnet20
from residual_prune.surgery import replace_with_identity
from tests.helpers import assert_same_state, state_snapshot

TRAINED = ["hrank", "expectabs", "pls", "kl"]


class Residual(nn.Module):
    """x + conv1x1(x), the 1x1 convolution set by hand."""

    def __init__(self, weight: float | list[list[float]], bias: list[float] | None = None, channels: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=bias is not None)
        with torch.no_grad():
            w = torch.eye(channels) * weight if isinstance(weight, (int, float)) else torch.tensor(weight)
            self.conv.weight.copy_(w.reshape(channels, channels, 1, 1))
            if bias is not None:
                self.conv.bias.copy_(torch.tensor(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class TwoBlocks(nn.Module):
    """head(b(a(x))): two removable residual blocks on a 2-channel input, then pooling and a linear head."""

    def __init__(self, a: Residual, b: Residual, classes: int = 3):
        super().__init__()
        self.a, self.b = a, b
        self.head = nn.Linear(2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.b(self.a(x)).mean((2, 3)))


def _blocks(model: nn.Module, x: torch.Tensor, **kwargs) -> list[rp.ResidualBlock]:
    return [b for b in rp.find_blocks(model, x, **kwargs) if b.removable]


def _integer_batch(seed: int = 0, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Small integers: every sum and product in TwoBlocks stays exact in float32."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-4, 5, (n, 2, 8, 8), generator=g).float(), torch.arange(n) % 3


def _exact_model() -> TwoBlocks:
    """a: x -> 1.5 x (full-rank maps); b: y -> y + (c - y) = c, constant per channel (rank 1)."""
    torch.manual_seed(0)
    return TwoBlocks(Residual(0.5), Residual(-1.0, bias=[1.0, 2.0]))


def test_registered_as_data_driven_builtins() -> None:
    names = rp.list_criteria()
    for name in TRAINED:
        info = rp.get_criterion_info(name)
        assert name in names and info.source == "builtin"
        assert info.requires_data and not info.gradient_based


def test_hrank_full_rank_block_versus_constant_block() -> None:
    model = _exact_model()
    x, y = _integer_batch()
    assert torch.equal(model.b(model.a(x)), torch.tensor([1.0, 2.0]).view(1, 2, 1, 1).expand(4, 2, 8, 8))
    full = float(torch.linalg.matrix_rank(x).float().mean())
    assert full == 8.0  # the random integer maps are full rank (checked, not assumed)
    scores = rp.get_criterion("hrank")(model, _blocks(model, x[:1]), [(x, y)], progress=False)
    assert scores == {"a": 8.0, "b": 1.0}
    relative = rp.get_criterion("hrank")(model, _blocks(model, x[:1]), [(x, y)], relative=True, progress=False)
    assert relative == {"a": 1.0, "b": 1 / 8}


def test_hrank_averages_over_images_and_batches() -> None:
    model = TwoBlocks(Residual(0.0), Residual(0.0))  # both blocks are the identity: ranks of the inputs
    x = torch.zeros(2, 2, 8, 8)
    x[0, :, :3, :3] = torch.eye(3)  # rank 3 in both channels
    x[1, 0, 0, 0] = 1.0  # rank 1 and rank 0
    batches = [(x[:1], torch.tensor([0])), (x[1:], torch.tensor([1]))]
    scores = rp.get_criterion("hrank")(model, _blocks(model, x[:1]), batches, num_batches=None, progress=False)
    assert scores == {"a": pytest.approx((3 + 0.5) / 2), "b": pytest.approx((3 + 0.5) / 2)}
    first = rp.get_criterion("hrank")(model, _blocks(model, x[:1]), batches, num_batches=1, progress=False)
    assert first["a"] == pytest.approx(3.0)


def test_expectabs_hand_computed() -> None:
    model = _exact_model()
    x, y = _integer_batch()
    x2, y2 = _integer_batch(seed=1)
    scores = rp.get_criterion("expectabs")(model, _blocks(model, x[:1]), [(x, y), (x2, y2)], progress=False)
    both = torch.cat([x, x2])
    c = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    # a adds 0.5 x; b turns 1.5 x into c, adding c - 1.5 x
    assert scores["a"] == pytest.approx(float(0.5 * both.abs().mean()), rel=1e-12)
    assert scores["b"] == pytest.approx(float((c - 1.5 * both).abs().mean()), rel=1e-12)


def test_expectabs_scores_what_a_post_activation_block_adds() -> None:
    """For relu(x + F(x)) the contribution is the output minus the input, not F(x)."""
    model = resnet20()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    blocks = [b for b in _blocks(model, x[:1]) if b.name == "layer1.1"]
    seen = {}
    hooks = [
        model.layer1[1].register_forward_pre_hook(lambda m, a: seen.setdefault("in", a[0].clone())),
        model.layer1[1].register_forward_hook(lambda m, a, out: seen.setdefault("out", out.clone())),
    ]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    scores = rp.get_criterion("expectabs")(model, blocks, [(x, y)], progress=False)
    assert scores["layer1.1"] == pytest.approx(float((seen["out"] - seen["in"]).abs().double().mean()), rel=1e-6)


def test_kl_is_zero_for_a_block_that_does_nothing() -> None:
    torch.manual_seed(0)
    model = TwoBlocks(Residual(0.0, bias=[0.0, 0.0]), Residual(torch.randn(2, 2).tolist()))
    x, y = torch.randn(4, 2, 8, 8), torch.tensor([0, 1, 2, 0])
    scores = rp.get_criterion("kl")(model, _blocks(model, x[:1]), [(x, y)], progress=False)
    assert scores["a"] == 0.0 and scores["b"] > 0.0

    # b's score is KL(p_full || p_without_b), averaged over the images
    without = replace_with_identity(copy.deepcopy(model), ["b"]).eval()
    with torch.no_grad():
        log_p = torch.log_softmax(model(x).double(), -1)
        log_q = torch.log_softmax(without(x).double(), -1)
    expected = float((log_p.exp() * (log_p - log_q)).sum(-1).mean())
    assert scores["b"] == pytest.approx(expected, rel=1e-9)


def test_bypassed_block_equals_the_removed_block() -> None:
    torch.manual_seed(0)
    model = resnet20().eval()
    x = torch.randn(2, 3, 32, 32)
    removed = replace_with_identity(copy.deepcopy(model), ["layer2.1"])
    with torch.no_grad(), bypassed(model.layer2[1]):
        out = model(x)
    with torch.no_grad():
        assert torch.equal(out, removed(x))
        assert not torch.equal(out, model(x))  # and the hooks are gone afterwards


def test_vip_one_component_by_hand() -> None:
    # columns [1, 1, -1, -1] and [1, 0, 0, -1] (both centred); classes [0, 0, 1, 1]
    x = torch.tensor([[1.0, 1.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, -1.0]])
    y = torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 1])).double()
    # one component: w = X^T y0 / |X^T y0| = [2, 1] / sqrt(5), VIP_j = sqrt(p) |w_j|
    vip = vip_scores(x, y, n_components=1, scale=False)
    assert vip.tolist() == pytest.approx([2 * math.sqrt(2 / 5), math.sqrt(2 / 5)], rel=1e-12)
    two = vip_scores(x, y, n_components=2, scale=False)
    assert float(two.pow(2).mean()) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("n_components", [1, 2, 3, 5])
def test_vip_squares_average_to_one(n_components: int) -> None:
    g = torch.Generator().manual_seed(n_components)
    x = torch.randn(60, 10, generator=g)
    y = torch.nn.functional.one_hot(torch.randint(0, 4, (60,), generator=g))
    for scale in (True, False):
        vip = vip_scores(x, y, n_components, scale=scale)
        assert vip.shape == (10,) and float(vip.pow(2).mean()) == pytest.approx(1.0, rel=1e-10)


def test_vip_ranks_the_informative_column_first() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 6, generator=g)
    x[:, 4] *= 50.0  # a loud but uninformative column: standardisation must not let it win
    labels = (x[:, 2] > 0).long()
    vip = vip_scores(x, torch.nn.functional.one_hot(labels), n_components=2)
    assert int(vip.argmax()) == 2 and float(vip[2]) > 2.0
    with pytest.raises(rp.InvalidArgumentError, match="covariance"):
        vip_scores(torch.ones(5, 3), torch.nn.functional.one_hot(torch.tensor([0, 1, 0, 1, 0])))


def test_pls_gives_a_constant_block_zero_importance() -> None:
    model = _exact_model()
    x, _ = _integer_batch(n=12)
    y = torch.arange(12) % 3
    scores = rp.get_criterion("pls")(model, _blocks(model, x[:1]), [(x, y)], progress=False)
    # b's pooled features are the constant c (VIP 0); a's two features carry all of sum VIP^2 = p = 4,
    # so their VIPs are sqrt(2) times those of a PLS on a's features alone (sum VIP^2 = 2)
    expected = math.sqrt(2) * vip_scores(1.5 * x.mean((2, 3)), torch.nn.functional.one_hot(y)).mean()
    assert scores["b"] == 0.0 and scores["a"] == pytest.approx(float(expected), rel=1e-9) and scores["a"] > 1.0
    with pytest.raises(rp.DataError, match="two classes"):
        rp.get_criterion("pls")(model, _blocks(model, x[:1]), [(x, torch.zeros(12, dtype=torch.long))], progress=False)


@pytest.mark.parametrize("criterion", TRAINED)
def test_model_state_is_exactly_restored(cifar_model: nn.Module, cifar_batch, criterion: str) -> None:
    model = cifar_model
    model.train()
    model.layer3[1].eval()
    model.layer1[0].conv1.weight.grad = torch.full_like(model.layer1[0].conv1.weight, 0.5)
    model.fc.weight.requires_grad_(False)
    with torch.no_grad():
        model.layer2[1].bn1.running_mean.fill_(0.25)
    snapshot = state_snapshot(model)
    modes = [m.training for m in model.modules()]
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    blocks = _blocks(model, cifar_batch[0][:1])

    scores = rp.get_criterion(criterion)(model, blocks, [cifar_batch], progress=False)
    assert set(scores) == {b.name for b in blocks} and all(math.isfinite(v) for v in scores.values())
    assert_same_state(model, snapshot)
    assert [m.training for m in model.modules()] == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert torch.equal(model.layer1[0].conv1.weight.grad, torch.full_like(model.layer1[0].conv1.weight, 0.5))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "layer1.0.conv1.weight")
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("criterion", TRAINED)
def test_plan_pruning_on_resnet20(criterion: str) -> None:
    torch.manual_seed(0)
    model = resnet20()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, 32, 32, generator=g), torch.arange(8) % 10
    before = state_snapshot(model)
    plan = rp.plan_pruning(model, criterion=criterion, n=1, data=[(x, y)], policy="paper", progress=False)
    assert_same_state(model, before)
    assert len(plan.removed) == 1 and plan.removed == [min(plan.scores, key=plan.scores.get)]
    assert all(math.isfinite(v) for v in plan.scores.values()) and len(set(plan.scores.values())) > 1


def test_sublayers_are_refused_with_advice() -> None:
    model = resnet20()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    with pytest.raises(rp.InvalidArgumentError, match="granularity='block'"):
        rp.plan_pruning(model, criterion="hrank", n=1, data=[(x, y)], granularity="sublayer", progress=False)


def test_criteria_need_data() -> None:
    model = resnet20()
    blocks = _blocks(model, torch.randn(1, 3, 32, 32))
    for name in TRAINED:
        with pytest.raises(rp.MissingDataError, match=name):
            rp.get_criterion(name)(model, blocks, None, progress=False)
