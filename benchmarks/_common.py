"""What the benchmarks share: a description of the machine and atomic JSON results."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

from residual_prune.files import atomic_path

__all__ = ["atomic_path", "machine", "shell_command", "write_json_atomic"]


def machine() -> dict[str, Any]:
    """CPU model, core count and library versions, for the header of every generated report."""
    import timm
    import torch
    import torchvision

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = f"{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}"
    return info


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1))


def shell_command(module: str, argv: list[str] | None = None) -> str:
    """The command line that ran ``python -m module`` with ``argv`` (default: this process's arguments)."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", "-m", module, *(shlex.quote(a) for a in args)])
