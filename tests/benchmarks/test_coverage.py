"""A fast subset of the model-zoo coverage sweep, and the sweep's bookkeeping (resume, report)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from benchmarks import coverage, zoos

QUICK = {
    "torchvision:resnet18": "pruned",
    "torchvision:mobilenet_v3_small": "pruned",
    "torchvision:swin_t": "pruned",
    "timm:resnet18": "pruned",
    "timm:vit_tiny_patch16_224": "pruned",
    "timm:efficientvit_b0": "pruned",
    "timm:mvitv2_tiny": "pruned",  # its blocks return (x, size): only the last one's size is dropped
    "timm:resnest14d": "pruned",  # one block per stage: checked as resnest26d, the next variant of its family
    "torchvision:vgg11": "not residual",
    "timm:dpn48b": "no removable block",  # DPN concatenates: no unit of it or of 3 larger variants keeps its shape
}


@pytest.fixture(scope="module")
def records() -> dict[str, dict]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the sweep runs each model; much faster than contending for shared cores
    try:
        return {spec: coverage.check_model(spec) for spec in QUICK}
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("spec", list(QUICK))
def test_quick_zoo_subset(records, spec: str) -> None:
    record = records[spec]
    assert record["status"] == QUICK[spec], record.get("error")
    if record["status"] == "pruned":
        assert record["verify_max_error"] <= 1e-4 and record["roundtrip_max_error"] == 0
        assert record["params_after"] < record["params_before"] and record["flops_after"] < record["flops_before"]
        removable = record["removable"] or record["removable_sublayers"]
        assert len(record["removed"]) == min(2, removable) and record["joins"] >= record["units"]
        assert removable >= (1 if spec == "timm:mvitv2_tiny" else 2)
        assert record["granularity"] == "block"
    if record["status"] == "no removable block":
        assert record["units"] > 0 and sum(record["excluded"].values()) == record["units"]
    if spec not in ("timm:resnest14d", "timm:dpn48b"):
        assert "representative" not in record  # a removable unit, or no residual unit at all


def test_a_timm_family_with_one_block_per_stage_is_checked_on_its_next_variant(records) -> None:
    resnest, dpn = records["timm:resnest14d"], records["timm:dpn48b"]
    assert resnest["model"] == "timm:resnest14d" and resnest["smallest"] == "resnest14d"
    assert resnest["representative"] == "resnest26d" and resnest["removable"] >= 2
    assert [v["name"] for v in resnest["variants_checked"]] == ["resnest14d", "resnest26d"]
    assert resnest["variants_checked"][0]["excluded"] == {"it carries downsampling": 4}
    assert dpn["representative"] is None and len(dpn["variants_checked"]) == 1 + coverage.REPRESENTATIVE_TRIES
    assert all(v["excluded"].keys() == {"it carries downsampling"} for v in dpn["variants_checked"])
    assert dpn["units"] == dpn["variants_checked"][0]["units"]  # the smallest's results are kept


def test_report_summarises_and_lists_failures(records) -> None:
    failing = {"model": "timm:broken", "zoo": "timm", "status": "error", "error": "trace: TraceError: boom", "units": 3}
    text = coverage.report({**records, "timm:broken": failing})
    residual = sum(1 for spec, r in records.items() if r.get("units") and spec != "timm:dpn48b") + 1
    pruned = sum(r["status"] == "pruned" for r in records.values())
    assert f"**{pruned} of {residual} residual models pruned exactly**; 1 more with residual additions" in text
    assert f"**{pruned} of {residual} ({100 * pruned / residual:.1f}%) handled exactly**" in text
    assert "- `timm:broken`: trace: TraceError: boom" in text
    assert "- `timm:dpn48b`: it carries downsampling (16x); larger variant `dpn68`: it carries downsampling" in text
    assert "Families with a representative: `timm:resnest14d` by `resnest26d`." in text
    assert "No variant checked had a removable unit for `timm:dpn48b` (dpn68, dpn68b, dpn92)." in text
    assert "\n| timm:resnest14d (as `resnest26d`) | pruned |" in text
    assert text.count("\n| timm:") + text.count("\n| torchvision:") == len(records) + 1


def test_report_shows_the_versions_stored_with_the_results(monkeypatch, tmp_path) -> None:
    """``--report`` labels the results with the environment that produced them, not the current one."""
    import torch

    stored = {
        "cpu": "Stored CPU",
        "cores": 96,
        "python": "3.0.1",
        "torch": "0.4.0",
        "torchvision": "0.2.0",
        "timm": "0.1.0",
        "threads_per_model": 1,
    }
    results = {
        "machine": stored,
        "command": coverage.COMMAND,
        "models": [{"model": "torchvision:vgg11", "zoo": "torchvision", "status": "not residual", "units": 0}],
    }
    (tmp_path / "coverage.json").write_text(json.dumps(results))
    monkeypatch.setattr(coverage, "RESULTS", tmp_path / "coverage.json")
    monkeypatch.setattr(coverage, "REPORT", tmp_path / "coverage.md")
    assert coverage.main(["--report"]) == 0
    text = (tmp_path / "coverage.md").read_text()
    assert (
        "Machine: Stored CPU, 96 cores, one thread per model; Python 3.0.1, torch 0.4.0, torchvision 0.2.0, timm 0.1.0."
    ) in text
    assert f"torch {torch.__version__}" not in text


def _run_with(monkeypatch, run) -> None:
    """Check models with ``run(spec, timeout)``, in forked children (Linux) or subprocesses alike."""
    monkeypatch.setattr(coverage, "_run_forked", run)
    monkeypatch.setattr(coverage, "_run_isolated", run)


def test_a_partial_rerun_keeps_the_environment_of_the_older_results(monkeypatch, tmp_path) -> None:
    old = {"cpu": "Old CPU", "cores": 2, "python": "3.11.0", "torch": "2.9.1", "torchvision": "0.24.1", "timm": "1.0"}
    results = {
        "machine": old,  # the format before records kept their own environment
        "command": coverage.COMMAND,
        "models": [{"model": "torchvision:vgg11", "zoo": "torchvision", "status": "not residual", "units": 0}],
    }
    (tmp_path / "coverage.json").write_text(json.dumps(results))
    monkeypatch.setattr(coverage, "RESULTS", tmp_path / "coverage.json")
    monkeypatch.setattr(coverage, "machine", lambda: {**old, "cpu": "New CPU", "torch": "2.14.1"})
    _run_with(monkeypatch, lambda spec, timeout: {"model": spec, "zoo": "timm", "status": "not residual"})
    records = coverage.sweep(["torchvision:vgg11", "timm:new"])
    text = coverage.report(records)
    assert "the results come from 2 environments" in text
    assert (
        "Old CPU, 2 cores, one thread per model; Python 3.11.0, torch 2.9.1, torchvision 0.24.1, timm 1.0 (1 models)"
        in (text)
    )
    assert "New CPU, 2 cores, one thread per model; Python 3.11.0, torch 2.14.1" in text
    assert coverage._load()["torchvision:vgg11"]["machine"]["torch"] == "2.9.1"  # saved with its own environment


def test_report_of_results_without_a_machine_says_so() -> None:
    text = coverage.report({})
    assert "not recorded with the results" in text and "torch " not in text


def test_sweep_resumes_and_writes_atomically(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(coverage, "RESULTS", tmp_path / "coverage.json")
    calls = []

    def fake_run(spec, timeout):
        calls.append(spec)
        return {"model": spec, "zoo": spec.split(":")[0], "status": "not residual", "units": 0}

    _run_with(monkeypatch, fake_run)
    coverage.sweep(["torchvision:a", "timm:b"])
    coverage.sweep(["torchvision:a", "timm:b", "timm:c"])
    assert calls == ["torchvision:a", "timm:b", "timm:c"]
    data = json.loads((tmp_path / "coverage.json").read_text())
    assert [r["model"] for r in data["models"]] == ["timm:b", "timm:c", "torchvision:a"]
    assert all(r["machine"]["cores"] >= 1 for r in data["models"]) and not list(tmp_path.glob(".coverage.*"))
    coverage.sweep(["timm:b"], force=True)
    assert calls[-1] == "timm:b"


def test_a_hanging_model_is_recorded_as_a_timeout() -> None:
    record = coverage._run_isolated("torchvision:resnet18", timeout=0.5)
    assert record["status"] == "error" and record["error"].startswith("timeout")


@pytest.mark.slow
def test_full_zoo_sweep_matches_the_recorded_coverage(monkeypatch, tmp_path) -> None:
    """The whole sweep (about 40 minutes on 2 CPU cores): no model does worse than in the committed results."""
    recorded = coverage._load()
    monkeypatch.setattr(coverage, "RESULTS", tmp_path / "coverage.json")
    timeout = max(
        (r.get("timeout", coverage.DEFAULT_TIMEOUT) for r in recorded.values()), default=coverage.DEFAULT_TIMEOUT
    )
    recorded_zoos = sorted({r["zoo"] for r in recorded.values()})
    records = coverage.sweep(coverage.zoo_models(recorded_zoos), timeout=timeout, only=True)
    changed = {
        spec: f"{recorded[spec]['status']} -> {r['status']} {r.get('error') or ''}"
        for spec, r in records.items()
        if spec in recorded and recorded[spec]["status"] != "error" and r["status"] != recorded[spec]["status"]
    }
    new_failures = {spec: r["error"] for spec, r in records.items() if spec not in recorded and r["status"] == "error"}
    assert not changed and not new_failures, {**changed, **new_failures}


def test_smallest_variant_by_parameters() -> None:
    assert zoos.smallest(["resnet50", "resnet18", "resnet10t", "test_resnet"]) == "resnet10t"
    assert zoos.smallest(["vit_base_patch16_224", "vit_tiny_patch16_224"]) == "vit_tiny_patch16_224"


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 8)

    def forward(self, x):
        return x + self.linear(x)


class _TwoInputsNeedsTargets(nn.Module):
    """Called with two positional tensors; returns a dict holding a list; refuses train mode
    without targets, as torchvision's detection models do."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(_Residual() for _ in range(3)))

    def forward(self, a, b):
        if self.training:
            raise ValueError("targets should not be None in training mode")
        h = self.blocks(a + b)
        return {"out": h, "parts": [h.mean(-1), h.argmax(-1)]}


@pytest.fixture
def toy_zoos(monkeypatch):
    monkeypatch.setattr(zoos, "_ZOOS", dict(zoos._ZOOS))

    @zoos.register_zoo("toy", models=lambda: ["two"], package="torch", trains=False)
    def build(name: str):
        return _TwoInputsNeedsTargets(), (torch.randn(2, 8), torch.randn(2, 8))

    @zoos.register_zoo("broken", models=lambda: ["m", "misfit"], package="no-such-package")
    def fail(name: str):
        if name == "misfit":  # inputs the model refuses
            return nn.Linear(4, 2), torch.randn(1, 3)
        raise ImportError("m requires the frobnicate library")


def test_check_model_calls_the_model_as_its_zoo_does(toy_zoos) -> None:
    """Positional inputs are passed as they are, structured outputs are summed for the backward and
    compared whole after the round trip, and a zoo whose models cannot train trains in eval mode."""
    record = coverage.check_model("toy:two")
    assert record["status"] == "pruned", record.get("error")
    assert record["inputs"] == "2x8, 2x8" and "input_size" not in record
    assert record["removable"] == 3 and len(record["removed"]) == 2 and record["roundtrip_max_error"] == 0
    assert record["zoo_package"].startswith("torch ") and record["frontend"] == "fx"


def test_a_model_its_zoo_cannot_build_is_reported_apart(toy_zoos) -> None:
    record = coverage.check_model("broken:m")
    assert record["status"] == "not built" and record["traced"] is False
    assert record["error"] == "build: ImportError: m requires the frobnicate library"
    assert record["zoo_package"] == "no-such-package not installed"
    misfit = coverage.check_model("broken:misfit")
    assert misfit["status"] == "not built" and misfit["error"].startswith("forward: RuntimeError: mat1 and mat2")
    old = {"model": "timm:a", "zoo": "timm", "status": "pruned", "units": 2, "input_size": [3, 64, 64]}
    text = coverage.report({"broken:m": record, "timm:a": old})
    assert "**1 of 1 residual models pruned exactly**" in text and "1 not built" in text
    assert "## Not built\n\n- `broken:m`: build: ImportError: m requires the frobnicate library" in text
    assert "- `broken` (no-such-package not installed): **0 of 0 residual models pruned exactly**" in text
    assert (
        "- `timm`: **1 of 1 residual models pruned exactly**; 0 with residual additions but no skippable unit "
        "(listed below); 1 of 1 (100.0%) handled exactly; 1 models"
    ) in text
    assert "| timm:a | pruned | 3x64x64 |" in text  # a record from before the inputs were described


def test_sweeping_some_zoos_keeps_the_records_of_the_others(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(coverage, "RESULTS", tmp_path / "coverage.json")
    _run_with(monkeypatch, lambda spec, timeout: {"model": spec, "zoo": spec.split(":")[0], "status": "x"})
    coverage.sweep(["timm:a", "smp:old"])
    records = coverage.sweep(["smp:new"], only=True)
    assert sorted(records) == ["smp:new", "timm:a"]  # smp no longer lists "old"; timm was not swept


def test_zoo_option_selects_the_zoos_to_sweep(monkeypatch, tmp_path) -> None:
    swept = []
    monkeypatch.setattr(coverage, "REPORT", tmp_path / "coverage.md")
    monkeypatch.setattr(coverage, "sweep", lambda specs, **kwargs: swept.append((specs, kwargs)) or {})
    assert coverage.main(["--zoo", "smp", "monai"]) == 0
    (specs, kwargs), expected = swept[0], zoos.list_models(["smp", "monai"])
    assert specs == expected and kwargs["only"] and "smp:unet" in specs and "monai:UNet" in specs
    with pytest.raises(SystemExit):
        coverage.main(["--models", "resnet18"])  # not ZOO:NAME
    with pytest.raises(SystemExit):
        coverage.main(["--zoo", "nope"])


def _record(spec: str, status: str, **fields) -> dict:
    return {"model": spec, "zoo": spec.split(":")[0], "status": status, **fields}


def test_models_with_no_skippable_unit_are_listed_apart_from_the_counts() -> None:
    """Residual additions whose units all downsample, have a shortcut that is not the identity or take
    other inputs are no layer-pruning target; units kept for any other reason count as not pruned."""
    records = {
        "z:ok": _record("z:ok", "pruned", units=3),
        "z:concat": _record("z:concat", "no removable block", units=4, excluded={"it carries downsampling": 4}),
        "z:reparam": _record(
            "z:reparam",
            "no removable block",
            units=4,
            excluded={"it carries downsampling": 1, "its shortcut is not the identity": 3},
        ),
        "z:nas": _record(
            "z:nas",
            "no removable block",
            units=3,
            excluded={
                "it takes 2 inputs, none of them as its first argument, and gives 1 outputs": 2,
                "it is not called as `...` with the tensor first and a single tensor returned": 1,
            },
        ),
        "z:shared": _record("z:shared", "no removable block", units=2, excluded={"the module is called 2 times": 2}),
        "z:mixed": _record(
            "z:mixed",
            "no removable block",
            units=3,
            excluded={"it carries downsampling": 2, "its residual branch goes down and back up in resolution": 1},
        ),
        "z:broken": _record("z:broken", "error", units=2, excluded={"it carries downsampling": 2}, error="verify: x"),
    }
    text = coverage.report(records)
    assert (
        "- `z`: **1 of 4 residual models pruned exactly**; 3 with residual additions but no skippable unit "
        "(listed below); 3 of 4 (75.0%) handled exactly; 7 models: 0 not residual, 1 failure, 0 not built."
    ) in text
    assert "**1 of 4 residual models pruned exactly**; 3 more with residual additions but no skippable unit" in text
    aside = text.split("## Residual additions but no skippable unit")[1].split("##")[0]
    assert "- `z:concat`: it carries downsampling (4x)\n" in aside
    assert "- `z:reparam`: it carries downsampling (1x); its shortcut is not the identity (3x)\n" in aside
    assert "- `z:nas`: it takes 2 inputs" in aside
    assert "z:shared" not in aside and "z:mixed" not in aside and "z:broken" not in aside
    stuck = text.split("## Residual models with no removable block")[1].split("##")[0]
    assert "- `z:shared`: the module is called 2 times (2x)" in stuck and "- `z:mixed`: " in stuck
    assert "- `z:broken`: verify: x" in text.split("## Failures")[1].split("##")[0]


def test_every_model_that_did_not_prune_is_listed_with_its_cause() -> None:
    records = {
        "z:crash": _record("z:crash", "error", traced=None, error="crash: exit code -9:\nTraceback (most recent)\n  x"),
        "z:odd": _record("z:odd", "interrupted", units=2),
        "t:unbuilt": _record("t:unbuilt", "not built", error="build: ValueError: no\n\nconfig"),
        "t:plain": _record("t:plain", "not residual", units=0),
    }
    text = coverage.report(records)
    listed = [line for line in text.splitlines() if line.startswith("- `")]
    assert "- `z:crash`: crash: exit code -9: Traceback (most recent) x" in listed  # one line per model
    assert "- `z:odd`: no cause recorded" in listed and "- `t:unbuilt`: build: ValueError: no config" in listed
    assert "- `z`: **0 of 2 residual models pruned exactly**" in text and "2 failures" in text
    assert not any("t:plain" in line for line in listed)


class _Down(nn.Module):
    """A residual unit that changes the width, with a projection shortcut (a stage's first block)."""

    def __init__(self, width: int, out: int) -> None:
        super().__init__()
        self.body, self.proj = nn.Linear(width, out), nn.Linear(width, out)

    def forward(self, x):
        return self.proj(x) + self.body(x)


class _Plain(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Linear(width, width)

    def forward(self, x):
        return x + self.body(x)


FAMILY = {  # one block per stage, projection shortcuts that keep the width, then depth
    "one": lambda: nn.Sequential(_Down(8, 16), _Down(16, 32)),
    "proj_a": lambda: nn.Sequential(_Down(8, 16), _Down(16, 16)),
    "proj_b": lambda: nn.Sequential(_Down(8, 16), _Down(16, 16), _Down(16, 16)),
    "proj_c": lambda: nn.Sequential(_Down(8, 16), _Down(16, 32), _Down(32, 32)),
    "deep": lambda: nn.Sequential(_Down(8, 16), _Plain(16), _Plain(16), _Plain(16), _Down(16, 32)),
    "deeper": lambda: nn.Sequential(_Down(8, 16), *(_Plain(16) for _ in range(5)), _Down(16, 32)),
}


@pytest.fixture
def family_zoo(monkeypatch):
    """Zoo ``fam`` lists families whose larger variants are those after a model in ``FAMILY``."""
    monkeypatch.setattr(zoos, "_ZOOS", dict(zoos._ZOOS))
    calls = {"built": [], "variants": []}
    order = {
        "fam": ["one", "proj_a", "proj_b", "deep", "deeper"],
        "short": ["one", "proj_a", "proj_b", "proj_c", "deep"],
    }

    def register(zoo: str) -> None:
        def variants(name: str) -> list[str]:
            calls["variants"].append(name)
            return order[zoo][order[zoo].index(name) + 1 :]

        @zoos.register_zoo(zoo, models=lambda: ["one"], package="torch", variants=variants)
        def build(name: str):
            calls["built"].append(name)
            return FAMILY[name](), torch.randn(2, 8)

    register("fam")
    register("short")
    return calls


def test_a_family_is_represented_by_its_first_larger_variant_with_a_removable_unit(family_zoo) -> None:
    record = coverage.check_model("fam:one")
    assert record["status"] == "pruned", record.get("error")
    assert record["model"] == "fam:one" and record["smallest"] == "one" and record["representative"] == "deep"
    assert [v["name"] for v in record["variants_checked"]] == ["one", "proj_a", "proj_b", "deep"]
    assert record["variants_checked"][1]["excluded"] == {
        "it carries downsampling": 1,
        "its shortcut is not the identity": 1,
    }
    assert record["units"] == 5 and record["removable"] == 3 and len(record["removed"]) == 2
    assert "deeper" not in family_zoo["built"]  # the first with a removable unit ends the search
    assert record["seconds"] == round(sum(v["seconds"] for v in record["variants_checked"]), 2) > 0
    text = coverage.report({"fam:one": record})
    assert "Families with a representative: `fam:one` by `deep`." in text and "| fam:one (as `deep`) |" in text


def test_at_most_three_larger_variants_are_checked(family_zoo) -> None:
    record = coverage.check_model("short:one")  # "deep" comes 4th
    assert record["status"] == "no removable block" and record["representative"] is None
    assert [v["name"] for v in record["variants_checked"]] == ["one", "proj_a", "proj_b", "proj_c"]
    assert "deep" not in family_zoo["built"] and record["units"] == 2  # the smallest's results
    text = coverage.report({"short:one": record})
    assert "No variant checked had a removable unit for `short:one` (proj_a, proj_b, proj_c)." in text
    assert "- `short:one`: it carries downsampling (2x); larger variant `proj_a`: it carries downsampling (1x)" in text


def test_variants_are_not_checked_where_a_unit_keeps_its_shape(family_zoo) -> None:
    for name in ("deep", "proj_a"):  # a removable unit; units kept because a shortcut is not the identity
        record = coverage.check_model(f"fam:{name}")
        assert "smallest" not in record and "representative" not in record
    assert family_zoo["variants"] == []
