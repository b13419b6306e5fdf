"""Calibration data for the data-driven criteria: CIFAR-10 (offline JPEG copy or torchvision),
an ImageFolder of the user's images, or clearly synthetic batches. Nothing here unpickles.

A *calibration set* is a list of labelled batches ``(x, y)``: ``x`` float, normalised, of shape
``(B, C, H, W)``; ``y`` int64 class indices. Every function raises
:class:`~residual_prune.errors.DataError` with what to do when the data cannot be had.
"""

from __future__ import annotations

import io
import os
import socket
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .errors import DataError

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATA_ENV_VAR",
    "DEFAULT_CIFAR10_ROOT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "cifar10_calibration",
    "image_folder_batches",
    "load_cifar10",
    "load_cifar10_npz",
    "load_cifar10_torchvision",
    "synthetic_batches",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DATA_ENV_VAR = "RESIDUAL_PRUNE_DATA"
DEFAULT_CIFAR10_ROOT = Path("~/.cache/residual_prune/cifar10")
_TORCHVISION_FOLDER = "cifar-10-batches-py"
_NPZ_NAME = "cifar10_jpeg.npz"
_SPLITS = ("train", "test")
_WHERE = f"pass --data PATH (a CIFAR-10 .npz or torchvision root) or set {DATA_ENV_VAR}"

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise DataError(f"split must be 'train' or 'test', got {split!r}")


def balanced_indices(labels: np.ndarray, limit: int | None, seed: int = 0) -> np.ndarray:
    """A seeded random subset of ``limit`` indices with the classes as equally represented as possible.

    The result interleaves the classes (one image of every class, then a second, ...), so
    any prefix, e.g. the first batch, is balanced too. ``limit=None`` gives every index, shuffled.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit must be a positive integer or None, got {limit!r}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(labels))
    shuffled = np.asarray(labels)[perm]
    by_class = np.argsort(shuffled, kind="stable")
    sorted_labels = shuffled[by_class]
    rank = np.empty(len(labels), dtype=np.int64)  # position of each image among its class
    rank[by_class] = np.arange(len(labels)) - np.searchsorted(sorted_labels, sorted_labels, side="left")
    return perm[np.argsort(rank, kind="stable")[:limit]]


def _open_npz(path: Path) -> np.lib.npyio.NpzFile:
    if not path.is_file():
        raise DataError(f"CIFAR-10 file {path} does not exist; {_WHERE}")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(
            f"{path} is not a readable .npz file ({type(exc).__name__}: {exc}); re-copy it, or {_WHERE}"
        ) from exc


def _npz_arrays(archive: np.lib.npyio.NpzFile, path: Path, split: str) -> tuple[np.ndarray, ...]:
    keys = [f"{split}_jpeg", f"{split}_offsets", f"{split}_labels"]
    missing = [k for k in keys if k not in archive.files]
    if missing:
        raise DataError(
            f"{path} is not a CIFAR-10 JPEG copy: it lacks the array(s) {', '.join(missing)} "
            f"(it has {', '.join(archive.files) or 'none'}); see the format in residual_prune.data.load_cifar10_npz"
        )
    try:
        jpeg, offsets, labels = (archive[k] for k in keys)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path} is damaged: cannot read its {split} arrays ({exc}); re-copy it") from exc
    ok = (
        jpeg.ndim == 1
        and offsets.ndim == 1
        and labels.ndim == 1
        and len(offsets) == len(labels) + 1
        and len(labels) > 0
        and offsets[0] >= 0
        and offsets[-1] <= len(jpeg)
        and np.all(np.diff(offsets) > 0)
        and labels.min() >= 0
        and labels.max() <= 9
    )
    if not ok:
        raise DataError(
            f"{path} is damaged: its {split} arrays are inconsistent (offsets must be increasing, N+1 long and "
            "within the JPEG bytes; labels in 0..9); re-copy it"
        )
    return jpeg, offsets, labels


def _decode(jpeg: np.ndarray, start: int, end: int, what: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(jpeg[start:end].tobytes())).convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{what} is not a valid JPEG image ({exc}); the file is damaged, re-copy it") from exc
    if image.size != (32, 32):
        raise DataError(f"{what} is {image.size[0]}x{image.size[1]} pixels, not 32x32: this is not CIFAR-10")
    return np.asarray(image, dtype=np.uint8)


def load_cifar10_npz(
    path: str | os.PathLike[str], split: str = "train", limit: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read the offline CIFAR-10 JPEG copy: images uint8 ``(N, 3, 32, 32)`` and labels int64 ``(N,)``.

    The ``.npz`` holds ``{split}_jpeg`` (uint8, all JPEG files concatenated), ``{split}_offsets``
    (int64, N+1: image i is ``jpeg[offsets[i]:offsets[i+1]]``), ``{split}_labels`` (uint8) and
    ``classes``. With ``limit``, only a seeded, class-balanced random subset is decoded.
    """
    _check_split(split)
    path = Path(path).expanduser()
    with _open_npz(path) as archive:
        jpeg, offsets, labels = _npz_arrays(archive, path, split)
    chosen = balanced_indices(labels, limit, seed)
    images = [_decode(jpeg, offsets[i], offsets[i + 1], f"{split} image {i} of {path}") for i in chosen]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.from_numpy(labels[chosen].astype(np.int64))


def load_cifar10_torchvision(
    root: str | os.PathLike[str],
    split: str = "train",
    download: bool = False,
    limit: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read CIFAR-10 with ``torchvision.datasets.CIFAR10`` (downloading it when ``download``).

    Same result as :func:`load_cifar10_npz`. torchvision checks the files' MD5 sums first.
    """
    from torchvision.datasets import CIFAR10

    _check_split(split)
    root = Path(root).expanduser()
    try:
        dataset = CIFAR10(str(root), train=split == "train", download=download)
    except RuntimeError as exc:  # "Dataset not found or corrupted", or a failed download's check
        if download:
            raise DataError(f"CIFAR-10 download to {root} failed ({exc}); {_WHERE}") from exc
        raise DataError(
            f"no intact CIFAR-10 under {root} (expected {root / _TORCHVISION_FOLDER}: {exc}); {_WHERE}, "
            "or download it (download=True) where there is internet"
        ) from exc
    except OSError as exc:  # URLError, connection refused, disk full
        raise DataError(f"could not download CIFAR-10 to {root} ({exc}); no network? {_WHERE}") from exc
    labels = np.asarray(dataset.targets, dtype=np.int64)
    chosen = balanced_indices(labels, limit, seed)
    x = torch.from_numpy(dataset.data[chosen]).permute(0, 3, 1, 2).contiguous()
    return x, torch.from_numpy(labels[chosen])


def _normalised_batches(
    images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float], std: Sequence[float], batch_size: int
) -> Batches:
    x = images.float().div_(255)
    x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    return list(zip(x.split(batch_size), labels.split(batch_size)))


def _check_counts(batch_size: int, num_batches: int) -> None:
    for name, value in (("batch_size", batch_size), ("num_batches", num_batches)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{name} must be a positive integer, got {value!r}")


def _online(host: str = "www.cs.toronto.edu", port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _describe(kind: str, where: Path, batches: Batches, split: str) -> str:
    sizes = sorted({len(y) for _, y in batches}, reverse=True)
    size = " and ".join(str(s) for s in sizes)
    plural = "es" if len(batches) != 1 else ""
    return f"CIFAR-10 {kind} ({where}), {len(batches)} batch{plural} of {size} {split} images"


def _load_source(
    path: Path, split: str, limit: int | None, seed: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], str, Path]:
    """Images, labels, the kind of copy and its location for an explicit ``path``."""
    if path.is_dir() and (path / _TORCHVISION_FOLDER).is_dir():
        return load_cifar10_torchvision(path, split, limit=limit, seed=seed), "torchvision copy", path
    if path.is_dir() and (path / _NPZ_NAME).is_file():
        path = path / _NPZ_NAME
    if path.is_file():
        return load_cifar10_npz(path, split, limit=limit, seed=seed), "offline JPEG copy", path
    raise DataError(
        f"no CIFAR-10 at {path}: give an .npz JPEG copy, a directory holding {_NPZ_NAME}, or a torchvision root "
        f"holding {_TORCHVISION_FOLDER}"
    )


def cifar10_calibration(
    source: str | os.PathLike[str] | None,
    *,
    batch_size: int = 64,
    num_batches: int = 1,
    seed: int = 0,
    train: bool = True,
) -> tuple[Batches, str]:
    """Normalised CIFAR-10 calibration batches and a description of the copy they came from.

    ``source``: an ``.npz`` JPEG copy (or a directory holding ``cifar10_jpeg.npz``), or a
    torchvision root holding ``cifar-10-batches-py``. ``None``: the environment variable
    ``RESIDUAL_PRUNE_DATA``, else ``~/.cache/residual_prune/cifar10`` (downloaded there if
    the CIFAR-10 server is reachable). The ``batch_size * num_batches`` images are a seeded,
    class-balanced subset; a smaller copy gives fewer or smaller batches.

    Raises:
        DataError: nothing usable was found; the message says where it looked.
    """
    _check_counts(batch_size, num_batches)
    split = "train" if train else "test"
    x, y, kind, where = _find_cifar10(source, split, batch_size * num_batches, seed)
    batches = _normalised_batches(x, y, CIFAR10_MEAN, CIFAR10_STD, batch_size)
    return batches, _describe(kind, where, batches, split)


def load_cifar10(
    source: str | os.PathLike[str] | None = None, split: str = "train", *, limit: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """CIFAR-10 images (uint8 ``(N, 3, 32, 32)``), labels and a description of the copy they came from.

    ``source`` is found as in :func:`cifar10_calibration` (an ``.npz`` JPEG copy, a torchvision
    root, ``RESIDUAL_PRUNE_DATA``, the cache, or the download); ``limit``: a seeded,
    class-balanced subset.
    """
    _check_split(split)
    x, y, kind, where = _find_cifar10(source, split, limit, seed)
    return x, y, f"CIFAR-10 {kind} ({where}), {len(y)} {split} images"


def _find_cifar10(
    source: str | os.PathLike[str] | None, split: str, limit: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor, str, Path]:
    if source is None and os.environ.get(DATA_ENV_VAR):
        source = os.environ[DATA_ENV_VAR]
    if source is not None:
        (x, y), kind, where = _load_source(Path(source).expanduser(), split, limit, seed)
        return x, y, kind, where
    where = DEFAULT_CIFAR10_ROOT.expanduser()
    if not (where / _TORCHVISION_FOLDER).is_dir() and not _online():
        raise DataError(
            f"no CIFAR-10 found: {DATA_ENV_VAR} is not set, {where} holds no copy and the CIFAR-10 server "
            f"is unreachable (offline); {_WHERE}"
        )
    x, y = load_cifar10_torchvision(where, split, download=True, limit=limit, seed=seed)
    return x, y, "torchvision copy", where


def synthetic_batches(
    input_shape: Sequence[int], num_classes: int, *, batch_size: int, num_batches: int, seed: int = 0
) -> Batches:
    """Seeded random labelled batches: standard-normal inputs of ``input_shape`` (no batch dimension)
    and uniform labels in ``[0, num_classes)``. Scores computed on them rank blocks on noise."""
    _check_counts(batch_size, num_batches)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise DataError(f"num_classes must be a positive integer, got {num_classes!r}")
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(batch_size, *input_shape, generator=generator),
            torch.randint(0, num_classes, (batch_size,), generator=generator),
        )
        for _ in range(num_batches)
    ]


def image_folder_batches(
    root: str | os.PathLike[str],
    image_size: int | tuple[int, int],
    *,
    batch_size: int = 32,
    num_batches: int = 1,
    seed: int = 0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tuple[Batches, str]:
    """Batches from an ImageFolder directory (``root/CLASS/IMAGE.jpg``) and their description.

    Images are resized (shorter side ``image_size / 0.875``), center-cropped to ``image_size`` and
    normalised with ``mean``/``std`` (ImageNet's by default); a seeded random subset of
    ``batch_size * num_batches`` images is used. Labels are the indices of the sorted class
    folder names, so name the folders so that they match the model's classes.
    """
    from torchvision import datasets, transforms

    _check_counts(batch_size, num_batches)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; pass a directory laid out as ROOT/CLASS/IMAGE.jpg")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    transform = transforms.Compose(
        [
            transforms.Resize(int(round(min(size) / 0.875))),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    try:
        dataset = datasets.ImageFolder(str(root), transform=transform)
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"no images under {root} ({exc}); lay it out as ROOT/CLASS/IMAGE.jpg") from exc
    chosen = balanced_indices(np.asarray(dataset.targets), batch_size * num_batches, seed)
    try:
        samples = [dataset[int(i)] for i in chosen]
    except OSError as exc:  # PIL.UnidentifiedImageError is an OSError
        raise DataError(f"an image under {root} cannot be read ({exc}); remove or replace it") from exc
    x = torch.stack([s[0] for s in samples])
    y = torch.tensor([s[1] for s in samples], dtype=torch.int64)
    batches = list(zip(x.split(batch_size), y.split(batch_size)))
    count = f"{len(batches)} batch{'es' if len(batches) != 1 else ''} of up to {batch_size}"
    return batches, f"ImageFolder {root} ({len(dataset.classes)} classes), {count} images"
