"""The speed benchmark's quick mode (so it cannot rot) and its timing and report helpers."""

from __future__ import annotations

import json
import time

import pytest

from benchmarks import speed
from benchmarks.capture import Job, in_fresh_process
from benchmarks.timing import side_by_side

BUDGET = {"threads": 1, "repeats": 2, "warmup": 1, "criterion_batches": 2}


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("speed") / "speed.json"
    speed.run(speed.SECTIONS, quick=True, budget=BUDGET, label="after", path=path, progress=lambda msg: None)
    assert "capture" not in json.loads(path.read_text())["after"]  # it has its own file
    return speed.load_all(path)


def test_limit_section_compares_pruned_native_and_zeroed(quick: dict) -> None:
    entry = quick["after"]["limit"]
    assert entry["quick"] and entry["budget"] == BUDGET and entry["machine"]["cores"] >= 1
    (record,) = entry["records"]
    assert record["model"] == "resnet20" and len(record["removed"]) == record["p"] == 2
    assert sum(record["block_counts"]) == 9 - 2
    # the natively built model is the same architecture as the pruned one
    assert record["params"]["native"] == record["params"]["pruned"] < record["params"]["dense"]
    assert record["flops"]["native"] == record["flops"]["pruned"]
    # masking keeps the dense cost and computes what removal computes
    assert record["flops"]["zeroed"] == record["flops"]["dense"] and record["zeroed_max_error"] < 1e-5
    assert record["flops_speedup"] == pytest.approx(record["flops"]["dense"] / record["flops"]["pruned"])
    assert record["flops_speedup"] > 1
    assert set(record["seconds"]) == {"infer_b1", "infer_b16", "train_b16"}
    for times in record["seconds"].values():
        assert set(times) == {"dense", "pruned", "native", "zeroed"} and all(t > 0 for t in times.values())


def test_filters_section_matches_flops(quick: dict) -> None:
    (record,) = quick["after"]["filters"]["records"]
    flops = record["flops"]
    assert abs(flops["filter"] - flops["layer"]) / flops["layer"] < 0.05
    assert flops["filter"] < flops["dense"] and record["params"]["filter"] < record["params"]["dense"]
    assert 0 < record["filter_ratio"] < 1
    assert set(record["seconds"]["infer_b128"]) == {"dense", "layer", "filter"}


def test_cost_section_times_every_step(quick: dict) -> None:
    (record,) = quick["after"]["cost"]["records"]
    assert set(record["seconds"]) == {
        "find_blocks",
        "plan_pruning(random)",
        "apply_plan",
        "pipeline",
        "torch_pruning",
        "torch_pruning_graph",
    }
    assert record["criterion_failures"] == {}
    assert set(record["criteria"]) == {"snip", "grasp", "grasp_1", "synflow", "train_step"}
    assert all(t > 0 for t in [*record["seconds"].values(), *record["criteria"].values()])


def test_report_has_every_section_and_the_targets(quick: dict) -> None:
    text = speed.report(quick)
    for heading in (
        "## Targets",
        "## 1. Physical limit",
        "## 2. Same architecture",
        "## 3. Layer pruning vs filter",
        "## 4. Cost of pruning itself",
        "## 5. Capture front-ends at scale",
    ):
        assert heading in text
    assert text.count("Quick mode") == 4 and "CIFAR ResNet-20" in text
    assert [t for t, _, _ in speed.targets(quick)] == [
        "measured speed-up ≥ 0.95 × FLOPs-implied (large-batch inference and training)",
        "pruned model within 3% of the natively built one",
        "find_blocks + plan_pruning(random) + apply_plan faster than torch-pruning's one-shot pruning",
        "GraSP costs at most 4 training steps per batch (one batch, the default)",
        "GraSP costs at most 4 training steps per batch (several batches)",
        "Llama, tiny dimensions on the meta device: find_blocks ≤ 30 s",
        "Llama, tiny dimensions: peak resident memory ≤ 2 GB (a fresh process that builds and analyses it)",
        "timm deepseek_vit_412m, tiny dimensions at 56x56: analysis ≤ 30 s with frontend='export'",
        "timm deepseek_vit_412m, tiny dimensions at 56x56: analysis ≤ 30 s with frontend='fx'",
        "CIFAR ResNet-20: find_blocks + plan_pruning(l1) + apply_plan with frontend='fx' faster than "
        "torch-pruning's one-shot pruning",
        "CIFAR ResNet-20: find_blocks + plan_pruning(l1) + apply_plan with frontend='export' faster than "
        "torch-pruning's one-shot pruning",
    ]


def test_capture_section_runs_each_job_in_a_fresh_process(quick: dict) -> None:
    records = quick["after"]["capture"]["records"]
    find, prune = records["llm"]["find"], records["llm"]["prune"]
    # built on meta, called with keyword arguments: the automatic front-end falls back to torch.export
    assert find["meta"] and find["frontend"] == "auto" and find["frontend_used"] == "export"
    assert find["units"] == find["removable"] == 2 and find["input"] == {"input_ids": [1, 16]}
    assert 0 < find["rss_after_imports"] <= find["peak_rss"] and set(find["seconds"]) == {"find_blocks"}
    assert set(prune["seconds"]) == {"plan_pruning", "apply_plan"} and len(prune["removed"]) == prune["n"] == 1
    assert prune["params_pruned"] < prune["params"]
    vit = records["vit"]
    assert [(r["frontend"], r["frontend_used"], r["meta"]) for r in vit.values()] == [
        ("fx", "fx", False),
        ("export", "export", False),
        ("export", "export", True),
    ]
    assert {r["units"] for r in vit.values()} == {2} and vit["fx"]["input"] == [1, 3, 56, 56]


def test_capture_section_times_both_frontends_against_torch_pruning(quick: dict) -> None:
    cnn = quick["after"]["capture"]["records"]["cnn"]
    assert cnn["model"] == "resnet20" and cnn["criterion"] == "l1"
    assert cnn["removed"]["fx"] == cnn["removed"]["export"] and len(cnn["removed"]["fx"]) == cnn["p"] == 2
    steps = {"find_blocks", "plan_pruning(l1)", "apply_plan", "pipeline"}
    assert set(cnn["seconds"]) == {"fx", "export", "torch_pruning", "torch_pruning_graph"}
    assert set(cnn["seconds"]["fx"]) == set(cnn["seconds"]["export"]) == steps
    assert all(t > 0 for frontend in ("fx", "export") for t in cnn["seconds"][frontend].values())


def test_a_job_past_its_timeout_is_stopped_and_fails_its_target(quick: dict) -> None:
    stopped = in_fresh_process(Job("deepseek_vit_tiny", frontend="fx"), timeout=1)
    assert stopped["timed_out"] and "seconds" not in stopped
    results = json.loads(json.dumps(quick))
    results["after"]["capture"]["records"]["vit"]["fx"] = {"name": "timm deepseek_vit_412m", **stopped}
    (fx,) = [t for t in speed.targets(results) if t[0].endswith("with frontend='fx'")]
    assert fx[1:] == (False, "> 1 s (stopped)")
    assert "> 1 s (stopped)" in speed.report(results)


def test_a_failing_job_is_reported_with_its_error() -> None:
    failed = in_fresh_process(Job("no_such_model"))
    assert failed["error"] == "KeyError: 'no_such_model'"


def test_report_shows_a_baseline_and_criterion_failures(quick: dict) -> None:
    before = json.loads(json.dumps(quick["after"]["cost"]))
    before["records"][0]["criterion_failures"] = {"grasp": "RuntimeError: no double backward"}
    del before["records"][0]["criteria"]["grasp"]
    text = speed.report({**quick, "before": {"cost": before}})
    assert "### Before the fixes" in text and "fails: RuntimeError: no double backward" in text


def test_rerun_replaces_only_its_section(tmp_path) -> None:
    path = tmp_path / "speed.json"
    path.write_text(json.dumps({"after": {"limit": {"kept": True}}, "before": {"cost": {"kept": True}}}))
    speed.run(["cost"], quick=True, budget=BUDGET, label="after", path=path, progress=lambda msg: None)
    stored = json.loads(path.read_text())
    assert stored["after"]["limit"] == {"kept": True} and stored["before"]["cost"] == {"kept": True}
    assert stored["after"]["cost"]["records"][0]["model"] == "resnet20"
    assert not (tmp_path / "capture.json").exists()


def test_side_by_side_medians_rank_functions() -> None:
    medians = side_by_side(
        {"short": lambda: time.sleep(0.002), "long": lambda: time.sleep(0.008)}, warmup=1, repeats=5, min_sample=0.01
    )
    assert 2.0 < medians["long"] / medians["short"] < 5.0
    assert 0.0015 < medians["short"] < 0.006


def test_cli_report_only(tmp_path, quick: dict) -> None:
    results, report = tmp_path / "speed.json", tmp_path / "benchmarks.md"
    results.write_text(json.dumps(quick))
    assert speed.main(["--report", "--output", str(results), "--report-path", str(report)]) == 0
    assert report.read_text() == speed.report(quick)
