"""A fast subset of the model-zoo coverage sweep, and the sweep's bookkeeping (resume, report)."""

from __future__ import annotations

import json

import pytest

from benchmarks import coverage

QUICK = {
    "torchvision:resnet18": "pruned",
    "torchvision:mobilenet_v3_small": "pruned",
    "torchvision:swin_t": "pruned",
    "timm:resnet18": "pruned",
    "timm:vit_tiny_patch16_224": "pruned",
    "timm:efficientvit_b0": "pruned",
    "timm:mvitv2_tiny": "pruned",  # its blocks return (x, size): pruned as single branches
    "torchvision:vgg11": "not residual",
    "timm:dpn68": "no removable block",
}


@pytest.fixture(scope="module")
def records() -> dict[str, dict]:
    return {spec: coverage.check_model(spec) for spec in QUICK}


@pytest.mark.parametrize("spec", list(QUICK))
def test_quick_zoo_subset(records, spec: str) -> None:
    record = records[spec]
    assert record["status"] == QUICK[spec], record.get("error")
    if record["status"] == "pruned":
        assert record["verify_max_error"] <= 1e-4 and record["roundtrip_max_error"] == 0
        assert record["params_after"] < record["params_before"] and record["flops_after"] < record["flops_before"]
        removable = record["removable"] or record["removable_sublayers"]
        assert len(record["removed"]) == 2 and record["joins"] >= record["units"] and removable >= 2
    expected_granularity = "sublayer" if spec == "timm:mvitv2_tiny" else "block"
    if record["status"] == "pruned":
        assert record["granularity"] == expected_granularity
    if record["status"] == "no removable block":
        assert record["units"] > 0 and sum(record["excluded"].values()) == record["units"]


def test_report_summarises_and_lists_failures(records) -> None:
    failing = {"model": "timm:broken", "zoo": "timm", "status": "error", "error": "trace: TraceError: boom",
               "units": 3}
    text = coverage.report({**records, "timm:broken": failing})
    residual = sum(1 for r in records.values() if r.get("units")) + 1
    pruned = sum(r["status"] == "pruned" for r in records.values())
    handled = pruned + sum(r["status"] == "no removable block" for r in records.values())
    assert f"**{pruned} of {residual} residual models pruned exactly**" in text
    assert f"**{handled} of {residual} ({100 * handled / residual:.1f}%) handled exactly**" in text
    assert "- `timm:broken`: trace: TraceError: boom" in text
    assert "`timm:dpn68`: it carries downsampling" in text
    assert text.count("\n| timm:") + text.count("\n| torchvision:") == len(records) + 1


def test_sweep_resumes_and_writes_atomically(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(coverage, "RESULTS", tmp_path / "coverage.json")
    calls = []

    def fake_run(spec, timeout):
        calls.append(spec)
        return {"model": spec, "zoo": spec.split(":")[0], "status": "not residual", "units": 0}

    monkeypatch.setattr(coverage, "_run_isolated", fake_run)
    coverage.sweep(["torchvision:a", "timm:b"])
    coverage.sweep(["torchvision:a", "timm:b", "timm:c"])
    assert calls == ["torchvision:a", "timm:b", "timm:c"]
    data = json.loads((tmp_path / "coverage.json").read_text())
    assert [r["model"] for r in data["models"]] == ["timm:b", "timm:c", "torchvision:a"]
    assert data["machine"]["cores"] >= 1 and not list(tmp_path.glob(".coverage.*"))
    coverage.sweep(["timm:b"], force=True)
    assert calls[-1] == "timm:b"


def test_a_hanging_model_is_recorded_as_a_timeout() -> None:
    record = coverage._run_isolated("torchvision:resnet18", timeout=0.5)
    assert record["status"] == "error" and record["error"].startswith("timeout")


def test_smallest_variant_by_parameters() -> None:
    assert coverage.smallest(["resnet50", "resnet18", "resnet10t", "test_resnet"]) == "resnet10t"
    assert coverage.smallest(["vit_base_patch16_224", "vit_tiny_patch16_224"]) == "vit_tiny_patch16_224"
