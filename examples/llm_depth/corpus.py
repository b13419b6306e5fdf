"""The corpus every machine has: the ``.py`` files of the Python standard library, as bytes.

Files: every ``*.py`` under ``sysconfig.get_paths()["stdlib"]``, sorted by relative path, except those under a
``site-packages`` / ``dist-packages`` folder (third-party code, different on every machine) and under test folders
(``test``, ``tests``, ``idle_test``: Linux distributions often ship them separately, so skipping them keeps the
corpus the same across installs of one Python version).

Split: by file, never inside one: a file is held out when the first 8 hex digits of the SHA-256 of its relative
path (POSIX form), read as an integer, modulo 100 are below ``held_out_percent`` (10 by default). The rule depends
on the path only, so it is the same on every machine and for every run.

Tokens: the file's bytes (0..255), files joined by the separator token 256; no tokenizer to download.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "SEPARATOR",
    "SKIPPED_FOLDERS",
    "SPLIT_RULE",
    "VOCAB_SIZE",
    "Corpus",
    "is_held_out",
    "random_windows",
    "source_files",
    "spread_windows",
    "stdlib_root",
]

SEPARATOR = 256  # the token between two files
VOCAB_SIZE = 257  # the 256 byte values and the separator
SKIPPED_FOLDERS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})
SPLIT_RULE = "held out iff int(sha256(relative POSIX path).hexdigest()[:8], 16) % 100 < {percent}"


def stdlib_root() -> Path:
    """Where this Python's standard library lives."""
    return Path(sysconfig.get_paths()["stdlib"])


def source_files(root: Path) -> list[str]:
    """The relative POSIX paths of the ``.py`` files under ``root``, sorted, without the skipped folders."""
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [s for s in subfolders if s not in SKIPPED_FOLDERS]
        relative = Path(folder).relative_to(root)
        found += [(relative / name).as_posix() for name in names if name.endswith(".py")]
    return sorted(found)


def is_held_out(relative: str, percent: int = 10) -> bool:
    """Whether the file at ``relative`` (POSIX path) belongs to the held-out split (see the module)."""
    return int(hashlib.sha256(relative.encode("utf-8")).hexdigest()[:8], 16) % 100 < percent


def _tokens(root: Path, files: list[str]) -> torch.Tensor:
    """The bytes of ``files``, each followed by the separator, as one int16 tensor."""
    parts = []
    for relative in files:
        parts += [np.frombuffer((root / relative).read_bytes(), dtype=np.uint8), np.array([SEPARATOR])]
    return torch.from_numpy(np.concatenate(parts).astype(np.int16)) if parts else torch.zeros(0, dtype=torch.int16)


@dataclasses.dataclass
class Corpus:
    """The training and held-out token streams and the files they come from."""

    root: Path
    train_files: list[str]
    held_out_files: list[str]
    train: torch.Tensor  # int16 tokens
    held_out: torch.Tensor
    held_out_percent: int

    @classmethod
    def load(cls, root: Path | None = None, held_out_percent: int = 10) -> Corpus:
        """Read the corpus under ``root`` (default: this Python's standard library) and split it by file."""
        root = Path(root) if root is not None else stdlib_root()
        files = source_files(root)
        held_out = [f for f in files if is_held_out(f, held_out_percent)]
        train = [f for f in files if not is_held_out(f, held_out_percent)]
        if not train or not held_out:
            raise RuntimeError(
                f"{root} gives {len(train)} training and {len(held_out)} held-out .py files; both splits need at "
                "least one: pass a folder with more Python files"
            )
        return cls(root, train, held_out, _tokens(root, train), _tokens(root, held_out), held_out_percent)

    @property
    def digest(self) -> str:
        """A short hash of both token streams: which corpus a checkpoint was trained on."""
        h = hashlib.sha256()
        for stream in (self.train, self.held_out):
            h.update(stream.numpy().tobytes())
            h.update(b"|")
        return h.hexdigest()[:16]

    def description(self) -> str:
        """One line for the records' ``data`` field."""
        return (
            f"Python {platform.python_version()} standard library .py files (no tests, no site-packages): "
            f"{len(self.train_files)} files / {len(self.train):,} byte tokens for training, "
            f"{len(self.held_out_files)} files / {len(self.held_out):,} held out; corpus {self.digest}"
        )

    def describe(self) -> dict[str, Any]:
        """The corpus for a results record: sizes, the split rule and the digest."""
        return {
            "root": str(self.root),
            "python": platform.python_version(),
            "skipped_folders": sorted(SKIPPED_FOLDERS),
            "split_rule": SPLIT_RULE.format(percent=self.held_out_percent),
            "train_files": len(self.train_files),
            "train_tokens": len(self.train),
            "held_out_files": len(self.held_out_files),
            "held_out_tokens": len(self.held_out),
            "digest": self.digest,
        }


def random_windows(tokens: torch.Tensor, count: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` windows of ``length`` tokens at random places of ``tokens`` (a ``(count, length)`` int64 tensor)."""
    starts = torch.randint(0, len(tokens) - length + 1, (count,), generator=generator)
    return torch.stack([tokens[s : s + length] for s in starts.tolist()]).long()


def spread_windows(tokens: torch.Tensor, count: int, length: int) -> torch.Tensor:
    """``count`` windows of ``length`` tokens spread evenly over ``tokens``, first and last included: a fixed
    sample of every part of the stream."""
    starts = torch.linspace(0, len(tokens) - length, count).long()
    return torch.stack([tokens[s : s + length] for s in starts.tolist()]).long()
