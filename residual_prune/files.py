"""Writing files safely: atomically, with ordinary permissions, never over something that is not a file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "check_writable_file"]


def check_writable_file(path: Path) -> None:
    """Raise ``OSError`` unless ``path`` can be (re)placed by a regular file.

    A directory, a device (``/dev/full``), a pipe or a socket at ``path`` is refused:
    replacing it with a regular file would be a surprise at best and harm at worst.
    """
    if path.exists() and not path.is_file():
        raise IsADirectoryError(21, "it exists and is not a regular file", str(path))
    if os.path.islink(path) and not path.exists():
        raise FileNotFoundError(2, "it is a broken symbolic link", str(path))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` only if the block finishes.

    A kill never leaves a half-written file, a failure leaves no temporary file behind, and the
    result gets the permissions ``open()`` would give (``0o666`` less the umask), not ``mkstemp``'s
    ``0o600``. Raises ``OSError`` (see :func:`check_writable_file`) before writing anything when
    ``path`` cannot be a regular file.
    """
    path = Path(path)
    check_writable_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
