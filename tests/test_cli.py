"""The residual-prune command line, on CIFAR ResNet-20 and tiny data built in tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import residual_prune
from residual_prune import PruningPlan, apply_plan, data
from residual_prune.branch_surgery import ZeroBranch
from residual_prune.cli import main
from residual_prune.criteria import CriterionInfo, _registry
from residual_prune.models import resnet20

from .test_data import write_cifar_npz

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def npz(tmp_path: Path) -> Path:
    return write_cifar_npz(tmp_path / "cifar10_jpeg.npz")


@pytest.fixture
def no_cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No CIFAR-10 anywhere: no env var, an empty default root, and offline."""
    monkeypatch.delenv("RESIDUAL_PRUNE_DATA", raising=False)
    monkeypatch.setattr(data, "DEFAULT_CIFAR10_ROOT", tmp_path / "empty-cache")
    monkeypatch.setattr(data, "_online", lambda *a, **k: False)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_analyze_lists_the_units_of_resnet20(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "analyze", "cifar:resnet20")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("layer")]
    assert [r.split()[0] for r in rows] == [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(3)]
    assert sum(" yes " in r for r in rows) == 7
    assert all("no: it carries downsampling" in r for r in rows if r.split()[0] in ("layer2.0", "layer3.0"))
    assert "9 residual units, 7 removable" in out
    assert "272.47K params" in out


def test_analyze_json_and_paper_policy(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "analyze", "cifar:resnet20", "--policy", "paper", "--json")
    assert code == 0
    report = json.loads(out)  # stdout is pure JSON; progress went to stderr
    assert "tracing" in err
    assert report["input_size"] == [3, 32, 32] and report["policy"] == "paper"
    assert len(report["blocks"]) == 9
    protected = [b for b in report["blocks"] if b["reason"] and "policy='paper'" in b["reason"]]
    assert protected and sum(b["removable"] for b in report["blocks"]) == 7 - len(protected)


def test_analyze_takes_the_capture_front_end(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "analyze", "cifar:resnet20", "--frontend", "export", "--json")
    assert code == 0
    blocks = json.loads(out)["blocks"]
    assert len(blocks) == 9 and {b["frontend"] for b in blocks} == {"export"}


def test_prune_writes_a_plan_and_weights_that_reload(
    tmp_path: Path, npz: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    code, out, _ = _run(
        capsys,
        "prune",
        "cifar:resnet20",
        "--criterion",
        "grasp",
        "--n",
        "2",
        "--data",
        str(npz),
        "--batch-size",
        "8",
        "--seed",
        "0",
        "--out",
        str(out_dir),
    )
    assert code == 0
    assert "CIFAR-10 offline JPEG copy" in out and "1 batch of 8 train images" in out
    plan = PruningPlan.load(out_dir / "plan.json")
    assert plan.criterion == "grasp" and len(plan.removed) == 2 and len(plan.scores) == 7
    assert plan.criterion_kwargs == {"num_batches": 1}
    for name in plan.removed:
        assert name in out  # the removed blocks are reported
    assert "PruningPlan.load" in out and "load_state_dict" in out

    torch.manual_seed(0)  # the command builds the model after torch.manual_seed(--seed)
    expected = apply_plan(resnet20(), plan)
    fresh = apply_plan(resnet20(), plan)
    fresh.load_state_dict(torch.load(out_dir / "pruned_state_dict.pt", weights_only=True))
    assert not any(key.startswith(tuple(n + "." for n in plan.removed)) for key in fresh.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), expected.eval()(x))


def test_prune_reports_before_and_after(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys, "prune", "cifar:resnet20", "--criterion", "l1", "--ratio", "0.5", "--out", str(tmp_path)
    )
    assert code == 0
    assert "data-free" in out
    table = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("params", "FLOPs"))}
    assert table["params"][1] == "272.47K" and table["FLOPs"][1] == "41.22M"
    assert float(table["FLOPs"][3].rstrip("%")) < 100
    assert len(PruningPlan.load(tmp_path / "plan.json").removed) == 4  # 0.5 * 7 rounded half up
    assert "max abs difference 0" in out


def test_prune_with_synthetic_data_is_labelled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys,
        "prune",
        "cifar:resnet20",
        "--criterion",
        "snip",
        "--n",
        "1",
        "--data",
        "synthetic",
        "--batch-size",
        "4",
        "--out",
        str(tmp_path),
    )
    assert code == 0
    assert "calibration data: SYNTHETIC" in out


def test_prune_loads_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(123)
    trained = resnet20()
    torch.save(trained.state_dict(), tmp_path / "ckpt.pt")
    code, _, _ = _run(
        capsys,
        "prune",
        "cifar:resnet20",
        "--criterion",
        "l1",
        "--n",
        "1",
        "--checkpoint",
        str(tmp_path / "ckpt.pt"),
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 0
    pruned = torch.load(tmp_path / "out" / "pruned_state_dict.pt", weights_only=True)
    reference = trained.state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in pruned.items())


def _factory() -> torch.nn.Module:
    return resnet20()


def test_python_factory_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "analyze", "tests.test_cli:_factory", "--input-size", "3", "32", "32")
    assert code == 0 and "input 3x32x32" in out and "9 residual units, 7 removable" in out
    code, _, err = _run(capsys, "analyze", "tests_no_such_module:factory")
    assert code == 2 and "cannot import 'tests_no_such_module'" in err
    # not a cifar: model, so a data-driven criterion needs an ImageFolder or --data synthetic
    code, _, err = _run(
        capsys, "prune", "tests.test_cli:_factory", "--criterion", "grasp", "--n", "1", "--out", str(tmp_path)
    )
    assert code == 2
    assert "--data DIR" in err and "--data synthetic" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["analyze", "resnet20"], "MODEL must be torchvision:NAME"),
        (["analyze", "cifar:resnet21"], "choose one of resnet20"),
        (["analyze", "torchvision:not_a_model"], "torchvision has no model"),
        (["prune", "cifar:resnet20", "--criterion", "nope", "--n", "1", "--out", "x"], "unknown criterion 'nope'"),
        (["prune", "cifar:resnet20", "--criterion", "random", "--n", "8", "--out", "x"], "only 7 removable"),
        (
            ["prune", "cifar:resnet20", "--criterion", "l1", "--n", "1", "--checkpoint", "missing.pt", "--out", "x"],
            "checkpoint missing.pt does not exist",
        ),
    ],
)
def test_errors_exit_2_with_a_message(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert err.splitlines()[-1].startswith("error: ") and message in err
    assert "Traceback" not in err


def _needs_arguments(depth: int) -> torch.nn.Module:
    return resnet20()


def _broken_factory() -> torch.nn.Module:
    raise RuntimeError("weights file not configured")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("tests.test_cli:_needs_arguments", "_needs_arguments() failed (TypeError: "),
        ("tests.test_cli:_broken_factory", "_broken_factory() failed (RuntimeError: weights file not configured)"),
        ("os:getcwd", "os:getcwd() returned a str, not an nn.Module"),
    ],
)
def test_a_factory_that_fails_is_a_user_error(spec: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "analyze", spec)
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("error: ") and message in err
    assert "the factory must be callable with no arguments and return an nn.Module" in err


def _assert_refused_before_scoring(code: int, out: str, err: str, message: str) -> None:
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("error: ") and message in err
    assert "scoring" not in err and "calibration data" not in out  # checked before any work


@pytest.mark.parametrize(
    "out, message",
    [
        ("afile", "--out afile is a file, not a directory"),
        ("afile/sub", "--out afile/sub is under afile, which is a file, not a directory"),
        ("", "--out is empty"),
        ("  ", "--out is empty"),
    ],
)
def test_a_bad_out_is_refused_before_scoring(
    out: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a directory")
    code, stdout, err = _run(capsys, "prune", "cifar:resnet20", "--criterion", "l1", "--n", "1", "--out", out)
    _assert_refused_before_scoring(code, stdout, err, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing written, not even into the cwd


def test_an_unwritable_out_is_refused_before_scoring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from residual_prune import cli

    def no_files_here(*args: object, **kwargs: object) -> None:  # as a read-only folder answers, even for root
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cli.tempfile, "TemporaryFile", no_files_here)
    code, stdout, err = _run(
        capsys, "prune", "cifar:resnet20", "--criterion", "l1", "--n", "1", "--out", str(tmp_path / "runs" / "r20")
    )
    _assert_refused_before_scoring(code, stdout, err, f"no file can be created in {tmp_path} (Permission denied)")
    assert not (tmp_path / "runs").exists()


def test_n_and_ratio_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["prune", "cifar:resnet20", "--criterion", "l1", "--n", "1", "--ratio", "0.5", "--out", "x"])
    assert info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_criteria_lists_builtins_and_registered(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def by_params(model, blocks, data, **kwargs):
        """Bigger blocks first."""
        return {b.name: float(b.params) for b in blocks}

    monkeypatch.setitem(_registry._registry, "by_params", CriterionInfo("by_params", by_params, source="user"))
    code, out, _ = _run(capsys, "criteria")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["grasp"][1:4] == ["builtin", "yes", "yes"]
    assert rows["synflow"][1:4] == ["builtin", "no", "yes"]
    assert rows["random"][1:4] == ["builtin", "no", "no"]
    assert rows["by_params"][1:3] == ["user", "no"] and "Bigger blocks first." in out


def test_demo_with_a_cifar_npz(npz: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        capsys, "demo", "--data", str(npz), "--arch", "resnet20", "--n", "2", "--batch-size", "8", "--num-batches", "2"
    )
    assert code == 0
    assert "CIFAR-10 offline JPEG copy" in out and "2 batches of 8" in out
    assert "SYNTHETIC" not in out + err
    removed = out.split("removed blocks")[1].split("verified")[0]
    assert sum(line.startswith("layer") for line in removed.splitlines()) == 2
    stages = out.split("GraSP scores per stage")[1]
    rows = {line.split()[0]: line.split() for line in stages.splitlines() if line.startswith("layer")}
    assert [rows[s][1] for s in ("layer1", "layer2", "layer3")] == ["3", "2", "2"]  # removable blocks scored
    assert sum(int(r[2]) for r in rows.values()) == 2  # removed
    assert "done in" in out


def test_demo_without_data_falls_back_to_synthetic(no_cifar: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "demo", "--arch", "resnet20", "--n", "1", "--batch-size", "4", "--num-batches", "1")
    assert code == 0
    assert "WARNING: no CIFAR-10 found" in err and "--data" in err
    assert "calibration data: SYNTHETIC" in out


def test_demo_with_a_bad_path_does_not_fall_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "demo", "--data", str(tmp_path / "missing.npz"), "--arch", "resnet20")
    assert code == 2 and "error: no CIFAR-10 at" in err
    assert "SYNTHETIC" not in out


def test_python_dash_m_runs_the_command_line() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "residual_prune", "criteria"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()[2:]]
    assert set(residual_prune.list_criteria()) <= set(names)


def test_the_command_line_counts_flops_without_fvcore() -> None:
    """fvcore is the tests' reference counter; the library counts FLOPs in its own capture."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    code = (
        "import sys\nfrom residual_prune.cli import main\n"
        "assert main(['analyze', 'cifar:resnet20']) == 0 and 'fvcore' not in sys.modules"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "41.22M FLOPs" in result.stdout


def test_prune_at_sublayer_granularity(tmp_path, capsys) -> None:
    from residual_prune.cli import main

    assert (
        main(
            [
                "prune",
                "cifar:resnet20",
                "--granularity",
                "sublayer",
                "--criterion",
                "l1",
                "--n",
                "2",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "#0  layer" in out and "verified" in out
    import residual_prune as rp

    plan = rp.PruningPlan.load(tmp_path / "plan.json")
    assert plan.granularity == "sublayer" and all(name.endswith("#0") for name in plan.removed)


WORDS = "the quick brown fox jumps over lazy dog and cat".split()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama saved with ``save_pretrained`` and a word-level tokenizer, as a local hub directory."""
    import transformers as hf
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    config = hf.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(vocab),
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("hf") / "tiny-llama"
    hf.LlamaForCausalLM(config).save_pretrained(folder)
    hf.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]").save_pretrained(folder)
    (folder.parent / "corpus.txt").write_text(" ".join(WORDS * 40))
    return folder


def test_a_hugging_face_directory_is_analysed_and_pruned_into_a_directory_from_pretrained_loads(
    hf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import transformers as hf

    assert main(["analyze", f"hf:{hf_dir}", "--seq-len", "16"]) == 0
    shown = capsys.readouterr().out
    assert "model.layers.5" in shown and "6 residual units, 6 removable" in shown
    out = tmp_path / "pruned"
    corpus = str(hf_dir.parent / "corpus.txt")
    argv = ["prune", f"hf:{hf_dir}", "--criterion", "block_influence", "--n", "2", "--data", corpus]
    assert main([*argv, "--seq-len", "16", "--batch-size", "4", "--num-batches", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 batches of 4 x 16 tokens" in printed and "params" in printed and "FLOPs" in printed
    assert "max abs difference 0 on inputs input_ids=(1, 16)" in printed
    assert {"config.json", "model.safetensors", "tokenizer.json", "plan.json"} <= {p.name for p in out.iterdir()}
    reloaded = hf.AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.config.num_hidden_layers == 4 and len(reloaded.model.layers) == 4
    removed = PruningPlan.load(out / "plan.json").removed
    assert len(removed) == 2 and all(name.startswith("model.layers.") for name in removed)
    assert hf.AutoTokenizer.from_pretrained(out)("the dog")["input_ids"] == [1, 8]


def test_a_hugging_face_sublayer_plan_is_saved_with_the_dense_model_and_the_plan(
    hf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import transformers as hf

    out, corpus = tmp_path / "finercut", str(hf_dir.parent / "corpus.txt")
    argv = ["prune", f"hf:{hf_dir}", "--criterion", "loss_drop", "--n", "3", "--granularity", "sublayer"]
    assert (
        main([*argv, "--data", corpus, "--seq-len", "16", "--batch-size", "4", "--num-batches", "1", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        "max abs difference 0 on inputs input_ids=(1, 16)" in printed and "residual_prune.apply_plan(model" in printed
    )
    plan = PruningPlan.load(out / "plan.json")
    assert plan.granularity == "sublayer" and len(plan.removed) == 3
    dense = hf.AutoModelForCausalLM.from_pretrained(out)
    assert dense.config.num_hidden_layers == 6  # the dense model: a config cannot drop one attention
    pruned = apply_plan(dense, plan)
    assert sum(isinstance(m, ZeroBranch) for m in pruned.modules()) == 6  # each branch: its norm, its attention or MLP


def test_hugging_face_mistakes_say_what_to_pass(
    hf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["analyze", f"hf:{tmp_path / 'missing'}"]) == 2
    assert "cannot load the config of hf:" in capsys.readouterr().err
    assert main(["prune", f"hf:{hf_dir}", "--criterion", "snip", "--n", "1", "--out", str(tmp_path / "o")]) == 2
    assert "pass --data FILE.txt (text models)" in capsys.readouterr().err
    short = tmp_path / "short.txt"
    short.write_text("the dog")
    argv = ["prune", f"hf:{hf_dir}", "--criterion", "snip", "--n", "1", "--data", str(short), "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "has 2 tokens, fewer than one batch of 64 x 128" in capsys.readouterr().err
