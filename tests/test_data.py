"""Calibration data loaders, on small CIFAR-10-format fixtures built in tmp_path."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from residual_prune import data
from residual_prune.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    cifar10_calibration,
    image_folder_batches,
    load_cifar10_npz,
    load_cifar10_torchvision,
    synthetic_batches,
)
from residual_prune.errors import DataError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _jpeg(label: int, index: int) -> bytes:
    """A flat-colour 32x32 JPEG: red encodes the class, green the image's index within its class."""
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[..., 0] = 20 * label + 10
    pixels[..., 1] = (40 * index + 20) % 256
    pixels[..., 2] = 128
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def write_cifar_npz(path: Path, train_per_class: int = 4, test_per_class: int = 2) -> Path:
    """Write a CIFAR-10 offline JPEG copy in the documented format (sorted by class)."""
    arrays: dict[str, np.ndarray] = {"classes": np.array(CLASSES)}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        blobs = [_jpeg(c, k) for c in range(10) for k in range(per_class)]
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        arrays[f"{split}_labels"] = np.repeat(np.arange(10, dtype=np.uint8), per_class)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def npz(tmp_path: Path) -> Path:
    return write_cifar_npz(tmp_path / "cifar10_jpeg.npz")


def _class_and_index(x: torch.Tensor) -> list[tuple[int, int]]:
    """Recover (class, index within class) from the flat colours of the fixture images."""
    red = x[:, 0].float().mean(dim=(1, 2))
    green = x[:, 1].float().mean(dim=(1, 2))
    return [(round((float(r) - 10) / 20), round((float(g) - 20) / 40)) for r, g in zip(red, green)]


def test_npz_loads_every_image_with_its_label(npz: Path) -> None:
    x, y = load_cifar10_npz(npz)
    assert x.shape == (40, 3, 32, 32) and x.dtype == torch.uint8
    assert y.shape == (40,) and y.dtype == torch.int64
    assert torch.bincount(y, minlength=10).tolist() == [4] * 10
    decoded = _class_and_index(x)
    assert [c for c, _ in decoded] == y.tolist()  # each image carries its own label
    assert sorted(decoded) == [(c, k) for c in range(10) for k in range(4)]  # every image exactly once


def test_npz_test_split(npz: Path) -> None:
    x, y = load_cifar10_npz(npz, split="test")
    assert x.shape == (20, 3, 32, 32)
    assert torch.bincount(y, minlength=10).tolist() == [2] * 10


def test_limit_is_class_balanced_and_interleaved(npz: Path) -> None:
    x, y = load_cifar10_npz(npz, limit=20, seed=3)
    assert torch.bincount(y, minlength=10).tolist() == [2] * 10
    assert sorted(y[:10].tolist()) == list(range(10))  # any prefix (first batch) is balanced too
    assert [c for c, _ in _class_and_index(x)] == y.tolist()
    _, y = load_cifar10_npz(npz, limit=15, seed=3)
    counts = torch.bincount(y, minlength=10)
    assert len(y) == 15 and counts.max() - counts.min() <= 1


def test_limit_decodes_only_the_chosen_images(npz: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    decode = data._decode
    monkeypatch.setattr(data, "_decode", lambda *a: calls.append(a) or decode(*a))
    load_cifar10_npz(npz, limit=10)
    assert len(calls) == 10


def test_subset_is_deterministic_per_seed(npz: Path) -> None:
    a, ya = load_cifar10_npz(npz, limit=10, seed=0)
    b, yb = load_cifar10_npz(npz, limit=10, seed=0)
    c, _ = load_cifar10_npz(npz, limit=10, seed=1)
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert _class_and_index(a) != _class_and_index(c)


def test_limit_larger_than_the_split_gives_everything(npz: Path) -> None:
    _, y = load_cifar10_npz(npz, limit=1000)
    assert len(y) == 40


@pytest.mark.parametrize("limit", [0, -1, 2.5, True])
def test_bad_limit(npz: Path, limit: object) -> None:
    with pytest.raises(DataError, match="limit"):
        load_cifar10_npz(npz, limit=limit)  # type: ignore[arg-type]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist.*--data"):
        load_cifar10_npz(tmp_path / "nope.npz")


def test_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(b"this is not a zip archive" * 10)
    with pytest.raises(DataError, match="not a readable .npz"):
        load_cifar10_npz(path)


def test_npz_without_the_cifar_arrays(tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.zeros(3))
    with pytest.raises(DataError, match="lacks the array.*train_jpeg"):
        load_cifar10_npz(path)


def test_npz_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "objects.npz"
    np.savez(
        path,
        train_jpeg=np.array([{"a": 1}], dtype=object),
        train_offsets=np.array([0, 1]),
        train_labels=np.array([0], dtype=np.uint8),
    )
    with pytest.raises(DataError, match="cannot read"):
        load_cifar10_npz(path)


def test_damaged_jpeg_bytes(npz: Path, tmp_path: Path) -> None:
    with np.load(npz) as archive:
        arrays = dict(archive)
    arrays["train_jpeg"] = arrays["train_jpeg"].copy()
    arrays["train_jpeg"][: arrays["train_offsets"][-1]] = 7  # every image overwritten
    path = tmp_path / "damaged.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="not a valid JPEG"):
        load_cifar10_npz(path, limit=1)


def test_inconsistent_offsets(npz: Path, tmp_path: Path) -> None:
    with np.load(npz) as archive:
        arrays = dict(archive)
    arrays["train_offsets"] = arrays["train_offsets"][:-1]
    path = tmp_path / "short.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="inconsistent"):
        load_cifar10_npz(path)


def test_bad_split(npz: Path) -> None:
    with pytest.raises(DataError, match="split"):
        load_cifar10_npz(npz, split="validation")


def test_torchvision_root_without_cifar(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no intact CIFAR-10.*--data"):
        load_cifar10_torchvision(tmp_path)


def test_synthetic_batches() -> None:
    batches = synthetic_batches((3, 8, 8), 5, batch_size=4, num_batches=3, seed=1)
    assert len(batches) == 3
    for x, y in batches:
        assert x.shape == (4, 3, 8, 8) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) < 5
    again = synthetic_batches((3, 8, 8), 5, batch_size=4, num_batches=3, seed=1)
    other = synthetic_batches((3, 8, 8), 5, batch_size=4, num_batches=3, seed=2)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    assert not torch.equal(batches[0][0], other[0][0])
    assert not torch.equal(batches[0][0], batches[1][0])


@pytest.mark.parametrize("kwargs", [{"batch_size": 0, "num_batches": 1}, {"batch_size": 2, "num_batches": 0}])
def test_synthetic_batches_bad_counts(kwargs: dict) -> None:
    with pytest.raises(DataError, match="positive integer"):
        synthetic_batches((3, 8, 8), 10, **kwargs)


def test_calibration_from_env_var(npz: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESIDUAL_PRUNE_DATA", str(npz))
    batches, description = cifar10_calibration(None, batch_size=8, num_batches=2, seed=0)
    assert [tuple(x.shape) for x, _ in batches] == [(8, 3, 32, 32)] * 2
    assert "offline JPEG copy" in description and str(npz) in description and "2 batches of 8" in description
    raw, labels = load_cifar10_npz(npz, limit=16, seed=0)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    expected = (raw.float() / 255 - mean) / std
    assert torch.allclose(torch.cat([x for x, _ in batches]), expected, atol=1e-6)
    assert torch.equal(torch.cat([y for _, y in batches]), labels)


def test_calibration_from_a_directory_and_test_split(npz: Path) -> None:
    batches, description = cifar10_calibration(npz.parent, batch_size=64, num_batches=1, train=False)
    assert len(batches) == 1 and len(batches[0][1]) == 20  # the test split has only 20 images
    assert "1 batch of 20 test images" in description


def test_calibration_explicit_path_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no CIFAR-10 at"):
        cifar10_calibration(tmp_path / "missing")


def test_calibration_nothing_found_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RESIDUAL_PRUNE_DATA", raising=False)
    monkeypatch.setattr(data, "DEFAULT_CIFAR10_ROOT", tmp_path / "cache")
    monkeypatch.setattr(data, "_online", lambda *a, **k: False)
    with pytest.raises(DataError, match="no CIFAR-10 found.*--data.*RESIDUAL_PRUNE_DATA"):
        cifar10_calibration(None)


def test_image_folder_batches(tmp_path: Path) -> None:
    for c, colour in enumerate(["red", "blue"]):
        (tmp_path / f"class{c}").mkdir()
        for k in range(3):
            Image.new("RGB", (50, 40), colour).save(tmp_path / f"class{c}" / f"{k}.png")
    batches, description = image_folder_batches(tmp_path, 32, batch_size=4, num_batches=2, seed=0)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.shape == (6, 3, 32, 32) and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    red = x[:, 0].mean(dim=(1, 2)) > x[:, 2].mean(dim=(1, 2))  # normalised, red stays redder than blue
    assert red.tolist() == (y == 0).tolist()
    assert "2 classes" in description


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        image_folder_batches(tmp_path / "missing", 32)
    with pytest.raises(DataError, match="CLASS/IMAGE"):
        image_folder_batches(tmp_path, 32)  # no class folders


def test_load_cifar10_gives_uint8_images_and_says_which_copy(npz: Path) -> None:
    from residual_prune.data import load_cifar10

    x, y, source = load_cifar10(npz, "test", limit=10)
    assert x.dtype == torch.uint8 and x.shape == (10, 3, 32, 32) and sorted(y.tolist()) == list(range(10))
    assert source == f"CIFAR-10 offline JPEG copy ({npz}), 10 test images"
