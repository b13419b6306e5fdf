"""CIFAR-10 kept decoded in memory, with the standard augmentation done in batched tensor ops.

The data come from :func:`residual_prune.data.load_cifar10`: a torchvision root (downloaded
where there is internet), ``RESIDUAL_PRUNE_DATA``, or the offline JPEG copy
(``../shared/data/cifar10_jpeg.npz`` on the development machines; its pixels differ slightly
from the original binaries, so every result says which copy it came from).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import torch

from residual_prune.data import CIFAR10_MEAN, CIFAR10_STD, load_cifar10

__all__ = ["CifarData", "augment", "normalise"]

PAD = 4  # random crop of 32 from the image zero-padded by 4, as in He et al. 2016


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 32x32 crop of the 4-pixel zero-padded images and random horizontal flip, for a whole batch."""
    n, c, h, w = images.shape
    dev = images.device
    padded = torch.nn.functional.pad(images, (PAD, PAD, PAD, PAD))
    dy = torch.randint(0, 2 * PAD + 1, (n,), generator=generator, device=dev)
    dx = torch.randint(0, 2 * PAD + 1, (n,), generator=generator, device=dev)
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]  # (n, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]  # (n, 1, 1, w)
    cropped = padded[
        torch.arange(n, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None], rows, cols
    ]
    flip = torch.rand(n, generator=generator, device=dev) < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(3), cropped)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to float, standardised with the CIFAR-10 channel statistics."""
    mean = torch.tensor(CIFAR10_MEAN, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=images.device).view(1, -1, 1, 1)
    return (images.float().div(255) - mean) / std


@dataclasses.dataclass
class CifarData:
    """Train and test splits as uint8 tensors, and where they came from."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str

    @classmethod
    def load(
        cls,
        source: str | os.PathLike[str] | None = None,
        *,
        train_limit: int | None = None,
        test_limit: int | None = None,
        seed: int = 0,
    ) -> CifarData:
        """Decode both splits once; ``train_limit``/``test_limit``: seeded class-balanced subsets."""
        train_x, train_y, train_source = load_cifar10(source, "train", limit=train_limit, seed=seed)
        test_x, test_y, test_source = load_cifar10(source, "test", limit=test_limit, seed=seed)
        return cls(train_x, train_y, test_x, test_y, f"{train_source}; {test_source}")

    def to(self, device: torch.device | str) -> CifarData:
        """The splits on ``device`` (a GPU: batches are then drawn and augmented there, with a generator there)."""
        return dataclasses.replace(
            self, **{f: getattr(self, f).to(device) for f in ("train_x", "train_y", "test_x", "test_y")}
        )

    def train_batches(
        self, batch_size: int, generator: torch.Generator, *, augmented: bool = True
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled, augmented, normalised batches (the last, smaller batch is dropped)."""
        order = torch.randperm(len(self.train_y), generator=generator, device=self.train_x.device)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            x = self.train_x[index]
            if augmented:
                x = augment(x, generator)
            yield normalise(x), self.train_y[index]

    def test_batches(self, batch_size: int = 500) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.test_y), batch_size):
            yield normalise(self.test_x[start : start + batch_size]), self.test_y[start : start + batch_size]
