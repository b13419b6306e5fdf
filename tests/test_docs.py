"""The documentation runs: its Python blocks top to bottom, its command lines through the CLI's parser.

Each document's ```python blocks run in order in one namespace, in a temporary folder, with small
in-memory stand-ins for the few names a block takes from the reader (a data loader, a dataset).
"""

from __future__ import annotations

import math
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import residual_prune as rp
from residual_prune.cli import _parser, main
from residual_prune.criteria._registry import _registry
from residual_prune.data import load_cifar10_npz
from residual_prune.models import resnet32

from .test_data import write_cifar_npz

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/getting-started.md", "docs/guide.md")
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _labelled(n: int, size: int, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n * size)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def _stand_ins(doc: str) -> dict[str, Any]:
    """What a document's code takes from the reader, as small in-memory objects."""
    if doc == "README.md":  # CIFAR-10 sized batches for a ResNet-56
        return {"train_loader": [_labelled(4, 32, 10) for _ in range(2)]}
    if doc == "docs/getting-started.md":  # a labelled dataset for an ImageNet ResNet-50, at a small size
        return {"train_set": torch.utils.data.TensorDataset(*_labelled(2, 32, 1000))}
    return {}


def code_blocks(doc: str, language: str) -> list[str]:
    return [code for lang, code in _FENCE.findall((REPO / doc).read_text()) if lang == language]


@pytest.fixture(autouse=True, scope="module")
def single_thread() -> Iterator[None]:
    """Intra-op threads only add overhead on these tiny inputs (many times slower on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary working folder, and criteria registered by the documents removed afterwards."""
    monkeypatch.chdir(tmp_path)
    before = set(_registry)
    yield tmp_path
    for name in set(_registry) - before:
        del _registry[name]


@pytest.mark.parametrize("doc", [d for d in DOCS if code_blocks(d, "python")])
def test_python_blocks_run_top_to_bottom(doc: str, scratch: Path) -> None:
    stand_ins = _stand_ins(doc)
    blocks = code_blocks(doc, "python")
    for name in stand_ins:  # a stand-in replaces what the reader brings, never what the document defines
        assert any(name in code for code in blocks) and not any(re.search(rf"^{name}\s*=", c, re.M) for c in blocks)
    namespace: dict[str, Any] = {"__name__": f"doc:{doc}", **stand_ins}
    torch.manual_seed(0)
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{doc} python block {i + 1}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{doc}, python block {i + 1} fails: {type(exc).__name__}: {exc}\n{code}") from exc


def _commands(doc: str) -> list[list[str]]:
    """The arguments of every ``residual-prune`` command in the document's shell blocks."""
    commands = []
    for code in code_blocks(doc, "bash"):
        for line in code.splitlines():
            words = shlex.split(line, comments=True)
            segments: list[list[str]] = [[]]
            for word in words:
                if word in ("&&", "||", ";", "|"):
                    segments.append([])
                else:
                    segments[-1].append(word)
            for segment in segments:
                while segment and re.fullmatch(r"[A-Z_]+=.*", segment[0]):  # VAR=value before the command
                    segment = segment[1:]
                if segment[:1] == ["residual-prune"]:
                    commands.append(segment[1:])
    return commands


DOC_COMMANDS = [(doc, argv) for doc in DOCS for argv in _commands(doc)]


def test_the_documents_show_commands() -> None:
    shown = {argv[0] for _, argv in DOC_COMMANDS}
    assert {"analyze", "prune", "criteria", "demo"} <= shown


@pytest.mark.parametrize("doc, argv", DOC_COMMANDS, ids=[f"{d}:{' '.join(a)}" for d, a in DOC_COMMANDS])
def test_every_command_shown_is_accepted(doc: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        _parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"{doc}: `residual-prune {' '.join(argv)}` is refused: {capsys.readouterr().err}") from exc


_CHEAP = [(doc, argv) for doc, argv in DOC_COMMANDS if argv[0] in ("criteria", "analyze")]


@pytest.mark.parametrize("doc, argv", _CHEAP, ids=[f"{d}:{' '.join(a)}" for d, a in _CHEAP])
def test_commands_that_need_no_data_run(doc: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, f"{doc}: `residual-prune {' '.join(argv)}` failed: {err}"


def test_data_paths_shown_are_placeholders() -> None:
    """A path of this repository's development layout (``../shared/...``) means nothing to a reader."""
    for doc in DOCS:
        for line in "\n".join(code_blocks(doc, "bash")).splitlines():
            command = line.split("#", 1)[0]
            for value in re.findall(r"(?:--data|--checkpoint|--cifar102|RESIDUAL_PRUNE_DATA)[ =]([^\s\"'$]+)", command):
                assert value == "synthetic" or value.startswith("path/to/"), f"{doc}: {line}"


def test_readme_describes_the_npz_the_reader_reads(tmp_path: Path) -> None:
    """The arrays the README lists are exactly those ``residual_prune.data`` needs."""
    section = (REPO / "README.md").read_text().split("### CIFAR-10 offline", 1)[1].split("\n#", 1)[0]
    listed = re.findall(r"`\{split\}_(\w+)`", section)
    assert listed, "the README no longer lists the arrays of the .npz"
    with np.load(write_cifar_npz(tmp_path / "full.npz")) as full:
        documented = {f"{split}_{name}": full[f"{split}_{name}"] for split in ("train", "test") for name in listed}
    np.savez(tmp_path / "documented.npz", **documented)
    for split in ("train", "test"):
        x, y = load_cifar10_npz(tmp_path / "documented.npz", split)
        assert x.shape[1:] == (3, 32, 32) and len(x) == len(y) > 0
    for key in documented:  # and each is needed
        np.savez(tmp_path / "partial.npz", **{k: v for k, v in documented.items() if k != key})
        with pytest.raises(rp.DataError, match=key):
            load_cifar10_npz(tmp_path / "partial.npz", key.split("_")[0])


def test_guide_states_the_ratio_rounding_the_code_uses() -> None:
    """docs/guide.md's formula for ``ratio``, evaluated, gives the number of blocks ``plan_pruning`` removes."""
    guide = (REPO / "docs/guide.md").read_text()
    formulas = re.findall(r"`((?:round|floor|ceil|int)\([^`]*ratio \* removable[^`]*)`", guide)
    assert formulas, "docs/guide.md no longer says how ratio becomes a number of blocks"
    torch.manual_seed(0)
    model, x = resnet32(), torch.randn(1, 3, 32, 32)
    removable = sum(b.removable for b in rp.find_blocks(model, x, count_flops=False))
    assert removable == 13  # 0.5 * 13 = 6.5: rounding half up and Python's round differ
    plan = rp.plan_pruning(model, criterion="l1", ratio=0.5, example_inputs=x)
    for formula in formulas:
        documented = eval(
            formula,
            {"round": round, "floor": math.floor, "ceil": math.ceil, "int": int},
            {"ratio": 0.5, "removable": removable},
        )
        assert documented == len(plan.removed), f"docs/guide.md: `{formula}` = {documented}, not {len(plan.removed)}"


def test_the_readme_slow_test_command_selects_tests() -> None:
    """``python -m pytest -m slow`` overrides the default ``-m 'not slow'`` and finds the slow tests.

    Collected in the files that mark tests slow only: collecting the whole suite takes several times longer.
    """
    command = ["python", "-m", "pytest", "-m", "slow"]
    assert f"`{' '.join(command)}` runs them" in (REPO / "README.md").read_text()
    marked = [
        str(p.relative_to(REPO))
        for p in sorted((REPO / "tests").rglob("test_*.py"))
        if re.search(r"@pytest\.mark\.slow\b|^pytestmark\b.*\bslow\b", p.read_text(), re.MULTILINE)
    ]
    assert marked, "no test is marked slow, so the README's `python -m pytest -m slow` collects nothing"
    result = subprocess.run(
        [sys.executable, *command[1:], "--collect-only", "-q", "-p", "no:cacheprovider", *marked],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    collected = re.search(r"(\d+)(?:/\d+)? tests? collected", result.stdout)
    assert collected and int(collected.group(1)) > 0, result.stdout[-2000:]
