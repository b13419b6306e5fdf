"""Linear CKA and representation collection."""

from __future__ import annotations

import math

import pytest
import torch

import residual_prune as rp
from residual_prune.models.cifar_resnet import resnet20
from residual_prune.similarity import linear_cka, representations
from tests.helpers import assert_same_state, state_snapshot


def _features(seed: int, n: int, d: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _cka_by_hsic(x: torch.Tensor, y: torch.Tensor) -> float:
    """tr(K H L H) / sqrt(tr(K H K H) tr(L H L H)) with linear kernels (Kornblith et al., Eq. 3-4)."""
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l_ = x.double() @ x.double().T, y.double() @ y.double().T
    hsic = lambda a, b: torch.trace(a @ h @ b @ h)  # noqa: E731
    return float(hsic(k, l_) / torch.sqrt(hsic(k, k) * hsic(l_, l_)))


def test_identical_features_give_one() -> None:
    x = _features(0, 50, 7)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x.float(), x.float()) == pytest.approx(1.0, abs=1e-6)


def test_hand_computed_cases() -> None:
    # one feature each: CKA is the squared Pearson correlation; corr([1, 2, 3], [1, 3, 2]) = 1/2
    assert linear_cka(torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[1.0], [3.0], [2.0]])) == pytest.approx(0.25)
    # X^T X = 2 I (Frobenius norm 2 sqrt 2), Y = first column of X: Y^T Y = 2, |Y^T X|^2 = 4
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert linear_cka(x, x[:, :1]) == pytest.approx(1 / math.sqrt(2))


@pytest.mark.parametrize("n, d1, d2", [(40, 3, 5), (10, 30, 20)])  # feature-space and Gram-matrix paths
def test_matches_the_hsic_definition(n: int, d1: int, d2: int) -> None:
    x, y = _features(1, n, d1), _features(2, n, d2)
    y = y + x[:, :1]  # some shared signal
    assert linear_cka(x, y) == pytest.approx(_cka_by_hsic(x, y), rel=1e-10)


def test_invariances_and_symmetry() -> None:
    x, y = _features(3, 60, 6), _features(4, 60, 4)
    y = y + 0.5 * x[:, :4]
    q, _ = torch.linalg.qr(_features(5, 6, 6))
    base = linear_cka(x, y)
    assert 0.1 < base < 0.99
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(3.7 * x, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x + 5.0, y) == pytest.approx(base, rel=1e-10)  # centring
    assert linear_cka(y, x) == pytest.approx(base, rel=1e-12)
    skew = torch.diag(torch.tensor([1.0, 10.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    assert linear_cka(x @ skew, y) != pytest.approx(base, rel=1e-3)  # not invariant to anisotropic scaling


def test_independent_features_are_dissimilar() -> None:
    assert linear_cka(_features(6, 2000, 4), _features(7, 2000, 4)) < 0.01


def test_errors_say_what_is_wrong() -> None:
    with pytest.raises(rp.InvalidArgumentError, match="same n"):
        linear_cka(torch.randn(10, 3), torch.randn(11, 3))
    with pytest.raises(rp.InvalidArgumentError, match="constant"):
        linear_cka(torch.ones(5, 2), torch.randn(5, 2))
    with pytest.raises(rp.InvalidArgumentError, match="two examples"):
        linear_cka(torch.randn(1, 2), torch.randn(1, 2))


def test_flattens_higher_dimensional_features() -> None:
    x = _features(8, 20, 12)
    assert linear_cka(x.reshape(20, 3, 2, 2), x) == pytest.approx(1.0, abs=1e-12)


def test_representations_flattened_and_pooled() -> None:
    torch.manual_seed(0)
    model = resnet20()
    model.train()
    model.layer2.eval()
    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(3, 3, 32, 32, generator=g), torch.tensor([0, 1, 2])),
        torch.randn(2, 3, 32, 32, generator=g),
    ]
    snapshot = state_snapshot(model)
    modes = [m.training for m in model.modules()]

    feats = representations(model, batches, ["layer1.1", "layer3"])
    pooled = representations(model, batches, ["layer1.1", "layer3"], pool=True)
    assert_same_state(model, snapshot)
    assert [m.training for m in model.modules()] == modes
    assert not any(m._forward_hooks for m in model.modules())
    assert feats["layer1.1"].shape == (5, 16 * 32 * 32) and feats["layer3"].shape == (5, 64 * 8 * 8)
    assert pooled["layer3"].shape == (5, 64)

    model.eval()
    x = torch.cat([batches[0][0], batches[1]])
    with torch.no_grad():
        expected = model.layer3(model.layer2(model.layer1(model.relu(model.bn1(model.conv1(x))))))
    assert torch.allclose(feats["layer3"], expected.flatten(1), atol=1e-5)
    assert torch.allclose(pooled["layer3"], expected.mean((2, 3)), atol=1e-5)
    assert representations(model, batches, ["layer3"], num_batches=1)["layer3"].shape == (3, 64 * 8 * 8)
    assert linear_cka(feats["layer3"], feats["layer3"]) == pytest.approx(1.0)


def test_representations_rejects_unknown_layers() -> None:
    with pytest.raises(rp.InvalidArgumentError, match="no module named"):
        representations(resnet20(), [torch.randn(1, 3, 32, 32)], ["layer9"])
