"""Table 5: the CIFAR-10-C-style corruptions, their cache, the CIFAR-10.2 loader, PGD, and the table at a
smoke budget."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from examples.cifar import robustness, table2, table5
from examples.cifar.budgets import BUDGETS
from examples.cifar.robustness import CORRUPTIONS, cifar10c, corrupt, load_cifar102, pgd_accuracy, pgd_attack
from examples.cifar.store import ResultsStore
from examples.cifar.train import Schedule
from residual_prune.errors import DataError, InvalidArgumentError
from tests.examples.test_cifar import _random_data

if importlib.util.find_spec("imagecorruptions") is None:  # imported through robustness' shims, not directly
    pytest.skip("needs the imagecorruptions package (pip install imagecorruptions)", allow_module_level=True)


def _images(n: int = 4) -> torch.Tensor:
    """Smooth images with an object (gradients and a bright square), as corruptions expect natural images."""
    ramp = torch.linspace(40, 200, 32)
    x = torch.stack([ramp[None, :].expand(32, 32), ramp[:, None].expand(32, 32), torch.full((32, 32), 90.0)])
    images = x.repeat(n, 1, 1, 1)
    for i in range(n):
        images[i, :, 8 + i : 20 + i, 10:22] = 230.0 - 20 * i
    return images.round().to(torch.uint8)


def _distortion(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().mean().item()


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_corruption_keeps_shape_changes_the_images_and_is_reproducible(name: str) -> None:
    images = _images(2)
    np.random.seed(123)
    out = corrupt(images, name, 3)
    after = np.random.rand()
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert _distortion(out, images) > 0.5
    assert torch.equal(corrupt(images, name, 3), out)  # seeded per corruption and severity
    np.random.seed(123)
    assert np.random.rand() == after  # the global numpy generator is left as it was


def test_other_seed_gives_other_noise_and_a_prefix_gives_the_same_images() -> None:
    images = _images(4)
    out = corrupt(images, "gaussian_noise", 2)
    assert not torch.equal(corrupt(images, "gaussian_noise", 2, seed=1), out)
    assert torch.equal(corrupt(images[:2], "gaussian_noise", 2), out[:2])


@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise", "defocus_blur", "contrast", "pixelate"])
def test_distortion_grows_with_severity(name: str) -> None:
    images = _images(4)
    d = [_distortion(corrupt(images, name, s), images) for s in (1, 3, 5)]
    assert d[0] < d[1] < d[2]


def test_distortion_grows_with_severity_on_average_over_all_corruptions() -> None:
    images = _images(2)
    mean = {s: np.mean([_distortion(corrupt(images, c, s), images) for c in CORRUPTIONS]) for s in (1, 5)}
    assert mean[1] < mean[5]


def test_upsampled_corruptions_round_trip_exactly() -> None:
    from PIL import Image

    img = _images(1)[0].permute(1, 2, 0).numpy()
    up = Image.fromarray(img).resize((224, 224), Image.NEAREST)
    assert np.array_equal(np.asarray(up.resize((32, 32), Image.BOX)), img)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="unknown corruption"):
        corrupt(_images(1), "rain", 1)
    with pytest.raises(InvalidArgumentError, match="1..5"):
        corrupt(_images(1), "fog", 6)
    with pytest.raises(DataError, match="uint8"):
        corrupt(_images(1).float(), "fog", 1)


def test_sets_are_cached_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = _images(6)
    first = dict(cifar10c(x, ["gaussian_noise", "brightness"], [1, 2], limit=4, cache_dir=tmp_path, progress=False))
    assert sorted(first) == [("brightness", 1), ("brightness", 2), ("gaussian_noise", 1), ("gaussian_noise", 2)]
    assert first[("gaussian_noise", 1)].shape == (4, 3, 32, 32)
    assert torch.equal(first[("gaussian_noise", 1)], corrupt(x[:4], "gaussian_noise", 1))
    files = sorted(tmp_path.rglob("*.npz"))
    assert len(files) == 4 and not list(tmp_path.rglob("*.tmp"))
    mtimes = [f.stat().st_mtime_ns for f in files]

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated a cached set")

    monkeypatch.setattr(robustness, "_corrupt_each", fail)
    again = dict(cifar10c(x, ["gaussian_noise", "brightness"], [1, 2], limit=4, cache_dir=tmp_path, progress=False))
    assert all(torch.equal(again[k], first[k]) for k in first)
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    with pytest.raises(AssertionError, match="regenerated"):  # other images: another cache folder
        dict(cifar10c(x.flip(0), ["brightness"], [1], limit=4, cache_dir=tmp_path, progress=False))


def write_cifar102(path: Path, n: int = 20) -> Path:
    """A CIFAR-10.2 test file in the released format: ``images`` (N, 32, 32, 3) uint8, ``labels``."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    images[:, 0, 0] = [[i, 2 * i, 3 * i] for i in range(n)]  # pixel (0, 0) identifies the image and its channels
    np.savez(path, images=images, labels=np.arange(n) % 10)
    return path


def test_cifar102_loads_from_a_file_or_its_folder(tmp_path: Path) -> None:
    path = write_cifar102(tmp_path / "cifar102_test.npz")
    for where in (path, tmp_path, str(path)):
        x, y = load_cifar102(where)
        assert x.shape == (20, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
        assert y.tolist() == [i % 10 for i in range(20)]
        assert x[:, :, 0, 0].tolist() == [[i, 2 * i, 3 * i] for i in range(20)]


def test_cifar102_errors_say_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="modestyachts/cifar-10.2"):
        load_cifar102(tmp_path / "missing.npz")
    with pytest.raises(DataError, match="no CIFAR-10.2 file"):
        load_cifar102(tmp_path)  # a folder without cifar102_test.npz
    np.savez(tmp_path / "keys.npz", data=np.zeros((2, 32, 32, 3), np.uint8), labels=np.zeros(2))
    with pytest.raises(DataError, match="'images' and 'labels'"):
        load_cifar102(tmp_path / "keys.npz")
    np.savez(tmp_path / "pickled.npz", images=np.array([object()]), labels=np.zeros(1))
    with pytest.raises(DataError, match="not a readable"):  # never unpickled
        load_cifar102(tmp_path / "pickled.npz")
    np.savez(tmp_path / "shape.npz", images=np.zeros((2, 3, 32, 32), np.uint8), labels=np.zeros(2, np.int64))
    with pytest.raises(DataError, match=r"\(N, 32, 32, 3\)"):
        load_cifar102(tmp_path / "shape.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DataError, match="not a readable"):
        load_cifar102(tmp_path / "text.npz")


def _linear_model() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A linear classifier on normalised images and uint8 images it classifies correctly by construction."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        y = model(robustness.normalise(x)).argmax(1)
    return model, x, y


def test_pgd_lowers_accuracy_within_the_budget() -> None:
    model, x, y = _linear_model()
    assert robustness.accuracy(model, x, y) == 100.0
    eps = 2 / 255
    clean = x.float() / 255
    adv = pgd_attack(model, clean, y, eps=eps, steps=5, alpha=1 / 255)
    assert (adv - clean).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert pgd_accuracy(model, x, y, eps=eps, steps=5, alpha=1 / 255, batch_size=16) < 50
    assert pgd_accuracy(model, x, y, eps=0.0, steps=2) == 100.0  # no budget: no change


def test_table5_smoke(tmp_path: Path) -> None:
    budget = dataclasses.replace(BUDGETS["smoke"], schedule=Schedule(epochs=1, batch_size=16))
    store = ResultsStore(tmp_path / "results")
    data = _random_data(train=160, test=24)
    kwargs = dict(
        runs=tmp_path / "runs",
        corruptions=["gaussian_noise", "frost"],
        severities=[1, 3],
        limit=8,
        cache_dir=tmp_path / "c10c",
        progress=False,
    )
    records = table5.run_table("resnet20", ["snip"], [1], 1, budget, data, store, **kwargs)
    assert len(store.records(table2.TABLE)) == 2  # Table 2 trained on the way
    assert [(r["criterion"], r["p"]) for r in records] == [("dense", 0), ("snip", 1)]
    for r in records:
        assert set(r["corruptions"]) == {"gaussian_noise", "frost"} and set(r["corruption_by_severity"]) == {"1", "3"}
        assert 0 <= r["corruption_mean"] <= 100 and 0 <= r["clean_accuracy"] <= 100
        assert r["corruption_images"] == 8 and r["cifar102_accuracy"] is None and r["pgd"] is None
        assert (
            r["budget"] == "smoke"
            and r["data"] == "random test images"
            and "imagecorruptions" in r["corruption_generator"]
        )
    assert records[1]["removed"] and records[1]["params"] < records[0]["params"]
    assert table5.run_table("resnet20", ["snip"], [1], 1, budget, data, store, **kwargs) == []  # nothing reruns
    assert "not measured" in table5.report(store.records(table5.TABLE))

    c102 = write_cifar102(tmp_path / "cifar102_test.npz", n=10)
    added = table5.run_table("resnet20", ["snip"], [1], 1, budget, data, store, cifar102=c102, pgd=4, **kwargs)
    assert len(added) == 2 and all(0 <= r["cifar102_accuracy"] <= 100 for r in added)
    assert all(
        r["pgd"]["images"] == 4 and r["corruptions"] == old["corruptions"]
        for r, old in zip(added, records, strict=True)
    )
    text = table5.report(store.records(table5.TABLE))
    assert text.startswith("## Table 5: robustness") and "### resnet20, budget `smoke`" in text
    assert (
        text.count("| snip (extra) | 1 |") == 2 and "| dense | 0 |" in text and "8 test images per corruption" in text
    )
    assert "### resnet32, the paper's numbers only" in text  # the paper's GraSP rows, ours not run
    assert "CIFAR-10.2 test set (cifar102_test.npz), 10 images" in text and "PGD (beyond the paper)" in text


def test_report_command_prints_the_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert table5.main(["--report", "--results", str(tmp_path)]) == 0
    assert "## Table 5: robustness" in capsys.readouterr().out
