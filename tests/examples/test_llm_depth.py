"""The small-Llama depth-pruning example: the corpus split, resumable training, the smoke budget end to end and the
generated page."""

from __future__ import annotations

import hashlib
import math
import warnings
from pathlib import Path

import pytest
import torch

from examples.cifar.store import ResultsStore
from examples.llm_depth import report, run
from examples.llm_depth import train as train_module
from examples.llm_depth.budgets import BUDGETS, build_model
from examples.llm_depth.corpus import SEPARATOR, Corpus, is_held_out, source_files, stdlib_root
from examples.llm_depth.train import train

SMOKE = BUDGETS["smoke"]


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)


def test_the_split_is_by_file_deterministic_and_disjoint(tmp_path: Path) -> None:
    files = {f"pkg{i % 3}/mod{i}.py": f"x = {i}\n".encode() for i in range(60)}
    _write_tree(tmp_path, {**files, "test/test_a.py": b"t", "site-packages/lib.py": b"s", "notes.txt": b"n"})
    first, second = Corpus.load(tmp_path), Corpus.load(tmp_path)
    assert sorted(first.train_files + first.held_out_files) == sorted(files)  # tests, site-packages, .txt skipped
    assert not set(first.train_files) & set(first.held_out_files) and first.held_out_files
    expected = [f for f in sorted(files) if int(hashlib.sha256(f.encode()).hexdigest()[:8], 16) % 100 < 10]
    assert first.held_out_files == expected
    assert torch.equal(first.train, second.train) and first.digest == second.digest
    stream = b"".join(files[f] + b"\0" for f in first.held_out_files)  # bytes, then the separator after each file
    tokens = first.held_out.tolist()
    assert tokens == [SEPARATOR if b == 0 else b for b in stream] and tokens.count(SEPARATOR) == len(expected)


def test_the_standard_library_splits_the_same_way_every_time() -> None:
    files = source_files(stdlib_root())
    assert files == source_files(stdlib_root()) and "os.py" in files
    assert not [f for f in files if f.startswith(("test/", "site-packages/"))]
    held_out = [f for f in files if is_held_out(f)]
    assert 0 < len(held_out) < len(files) / 4 and held_out == [f for f in files if is_held_out(f)]


def _train(checkpoint: Path, until: int | None = None):
    tokens = torch.randint(0, 256, (5000,), generator=torch.Generator().manual_seed(0), dtype=torch.int16)
    model = build_model(SMOKE.model, seed=0)
    schedule, length = SMOKE.schedule, SMOKE.model.seq_len
    result = train(model, tokens, schedule, length, seed=0, checkpoint_dir=checkpoint, until=until, progress=False)
    return model, result


def test_an_interrupted_training_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path: Path) -> None:
    _, stopped = _train(tmp_path / "a", until=2)
    resumed_model, resumed = _train(tmp_path / "a")
    whole_model, whole = _train(tmp_path / "b")
    assert (stopped.steps, resumed.resumed_from, resumed.steps, whole.resumed_from) == (2, 2, 4, 0)
    assert resumed.history[0] == stopped.history[0]
    whole_state = whole_model.state_dict()
    assert all(torch.equal(v, whole_state[k]) for k, v in resumed_model.state_dict().items())


def test_asked_for_bf16_warns_where_the_cpu_only_emulates_it(monkeypatch) -> None:
    tokens = torch.randint(0, 256, (2000,), generator=torch.Generator().manual_seed(0), dtype=torch.int16)
    model, length = build_model(SMOKE.model, seed=0), SMOKE.model.seq_len

    def one_step() -> None:
        train(model, tokens, SMOKE.schedule, length, seed=0, until=1, bf16=True, progress=False)

    monkeypatch.setattr(train_module, "bf16_is_native", lambda device: False)
    with pytest.warns(UserWarning, match="no native bfloat16.*drop --bf16"):
        one_step()
    monkeypatch.setattr(train_module, "bf16_is_native", lambda device: True)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*bfloat16")
        one_step()


def test_smoke_budget_end_to_end(tmp_path: Path) -> None:
    store, runs, corpus = ResultsStore(tmp_path / "results"), tmp_path / "runs", Corpus.load()
    criteria = ["block_influence", "drop_last", "finercut"]
    options = {"runs": runs, "criteria": criteria, "ratios": [0.5], "progress": False}
    assert run.run_experiment(SMOKE, store, corpus, until=2, **options) == []  # interrupted: a checkpoint only
    assert torch.load(runs / "smoke" / "dense" / "last.pt", weights_only=True)["step"] == 2
    records = run.run_experiment(SMOKE, store, corpus, command="test", **options)
    assert len(records) == 9 and run.run_experiment(SMOKE, store, corpus, **options) == []  # all stored: skipped

    ppl = {(r["criterion"], r["finetuned"]): r for r in store.records("perplexity")}
    assert set(ppl) == {(c, ft) for c in ("dense", *criteria) for ft in (False, True)}
    assert all(math.isfinite(r["perplexity"]) and r["perplexity"] > 1 for r in ppl.values())
    dense = ppl["dense", False]
    assert [h["step"] for h in dense["training"]["history"]] == [2, 4]  # the second call went on from step 2
    assert ppl["drop_last", False]["removed"] == ["model.layers.2", "model.layers.3"]
    assert ppl["block_influence", True]["kept_layers"] == 2 and len(ppl["block_influence", True]["removed"]) == 2
    assert ppl["block_influence", True]["perplexity"] != ppl["block_influence", False]["perplexity"]
    finercut = ppl["finercut", False]  # 4 of the 8 attention and MLP branches, every layer kept
    assert finercut["removed_sublayers"] == 4 and finercut["kept_layers"] == 4
    assert all("#" in str(i) for i in finercut["removed_indices"]) and finercut["params"] < dense["params"]
    assert dense["corpus"]["train_files"] > 100 and "sha256" in dense["corpus"]["split_rule"]
    (speed,) = store.records("speed")
    assert speed["kept_layers"] == 2 and speed["layer_ratio"] == 2.0 and len(speed["pruned"]["runs"]) == 2

    text = report.generate(store.root, tmp_path / "docs" / "llm_depth.md")
    assert "| drop_last | 2 of 4 (50%) | 2, 3 |" in text and "| dense | 0 of 4 (0%) | – |" in text
    assert "| finercut | 4 of 8 sub-layers (50%) |" in text
    assert "| 2 of 4 |" in text and "not yet measured" not in text
    assert (tmp_path / "docs" / "img" / "llm_depth_perplexity_smoke.png").stat().st_size > 0


def test_without_records_the_page_says_how_to_measure(tmp_path: Path) -> None:
    text = report.generate(tmp_path / "empty", tmp_path / "llm_depth.md")
    assert "not yet measured" in text and report.RUN in text and not (tmp_path / "img").exists()


def test_smoke_results_are_refused_in_the_committed_store() -> None:
    with pytest.raises(SystemExit) as refused:
        run.main(["--budget", "smoke"])
    assert refused.value.code == 2
