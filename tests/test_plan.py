"""PruningPlan: JSON round trip, architecture check, corrupt files."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
import torchvision

import residual_prune as rp
from residual_prune.models import resnet20, resnet32

X = torch.randn(1, 3, 32, 32)


def test_json_round_trip(tmp_path) -> None:
    plan = rp.plan_pruning(resnet20(), criterion="random", n=2, example_inputs=X, seed=4)
    path = plan.save(tmp_path / "sub" / "plan.json")
    loaded = rp.PruningPlan.load(path)
    assert loaded == plan
    data = json.loads(path.read_text())
    assert data["format"] == "residual_prune.plan" and data["criterion_kwargs"] == {"seed": 4}
    assert not list(path.parent.glob(".*tmp"))  # atomic write leaves no temporary file


def test_plan_applies_to_a_fresh_model_of_the_same_architecture() -> None:
    torch.manual_seed(0)
    plan = rp.plan_pruning(resnet20(), criterion="l1", n=3, example_inputs=X)
    torch.manual_seed(1)
    a, b = rp.apply_plan(resnet20(), plan), rp.apply_plan(resnet20(), plan)
    assert [n for n, _ in a.named_modules()] == [n for n, _ in b.named_modules()]
    b.load_state_dict(a.state_dict())


@pytest.mark.parametrize("other", [resnet32, lambda: torchvision.models.resnet18(), lambda: resnet20(num_classes=100)])
def test_plan_for_another_architecture_fails_clearly(other) -> None:
    plan = rp.plan_pruning(resnet20(), criterion="random", n=1, example_inputs=X)
    model = other()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(rp.PlanMismatchError, match="made for a CifarResNet with 272,474 parameters"):
        rp.apply_plan(model, plan, inplace=True)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(rp.PlanMismatchError):
        rp.verify(model, model, plan, X)


def _plan_json(**fields) -> str:
    data = {
        "format": "residual_prune.plan",
        "version": 1,
        "removed": [],
        "scores": {},
        "criterion": "x",
        "policy": "default",
        "fingerprint": "f",
        **fields,
    }
    return json.dumps(data)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "'format' field"),
        ('{"format": "residual_prune.plan", "version": 99}', "version 99"),
        ('{"format": "residual_prune.plan", "version": 1, "removed": []}', "lacks the field"),
        (
            '{"format": "residual_prune.plan", "version": 1, "removed": [3], "scores": {}, "criterion": "x", '
            '"policy": "default", "fingerprint": "f"}',
            "list of block names",
        ),
        (
            '{"format": "residual_prune.plan", "version": 1, "removed": [], "scores": {"a": "high"}, '
            '"criterion": "x", "policy": "default", "fingerprint": "f"}',
            "map block names to numbers",
        ),
        (
            '{"format": "residual_prune.plan", "version": 1, "removed": [], "scores": {}, "criterion": "x", '
            '"policy": "default", "fingerprint": "f", "granularity": "layer"}',
            "'granularity' must be",
        ),
        (
            '{"format": "residual_prune.plan", "version": 1, "removed": [], "scores": {}, "criterion": "x", '
            '"policy": "default", "fingerprint": "f", "input_shapes": [[1, -3]]}',
            "'input_shapes' must be",
        ),
        *[
            (_plan_json(**fields), message)
            for fields, message in [
                ({"version": True}, "version True is not supported"),
                ({"version": 1.0}, "version 1.0 is not supported"),
                ({"policy": "aggressive"}, "'policy' must be one of 'default', 'paper', not 'aggressive'"),
                ({"scores": {"a": float("nan")}}, "finite ones: 'a' has nan"),
                ({"scores": {"a": float("inf")}}, "finite ones: 'a' has inf"),
                ({"scores": {"a": 10**400}}, "finite ones: 'a' has 1000"),
                ({"scores": {"a": True}}, "finite ones: 'a' has True"),
                ({"removed": ["a", "a"]}, "'removed' names 'a' more than once"),
                ({"removed": [""]}, "non-empty strings"),
                ({"num_params": -1}, "'num_params' must be a non-negative integer"),
                ({"input_shapes": [[1, True]]}, "'input_shapes' must be"),
            ]
        ],
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ],
)
def test_corrupt_plan_files(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "plan.json"
    path.write_text(content)
    with pytest.raises(rp.CorruptPlanError, match=message):
        rp.PruningPlan.load(path)


def test_a_plan_file_that_is_not_utf8_is_corrupt(tmp_path) -> None:
    path = tmp_path / "plan.json"
    path.write_bytes(b'{"format": "residual_prune.plan", "model": "\xff\xfe"}')
    with pytest.raises(rp.CorruptPlanError, match="not UTF-8 text"):
        rp.PruningPlan.load(path)


def test_missing_plan_file(tmp_path) -> None:
    with pytest.raises(rp.CorruptPlanError, match="cannot read"):
        rp.PruningPlan.load(tmp_path / "nope.json")


class ResizingCache(torch.nn.Module):
    """Resizes a non-persistent buffer on every forward, as ConViT's attention does."""

    def __init__(self):
        super().__init__()
        self.net = resnet20()
        self.register_buffer("cache", torch.zeros(1), persistent=False)

    def forward(self, x):
        self.cache = torch.zeros(x.shape[-1])
        return self.net(x)


def test_tracing_leaves_no_proxy_in_the_model() -> None:
    model = ResizingCache()
    model.note = "kept"
    before = model.cache
    rp.find_blocks(model, X)
    assert model.cache is before and model.note == "kept" and "cache" in model._buffers
    assert not any(isinstance(v, torch.fx.Proxy) for m in model.modules() for v in vars(m).values())


def test_fingerprint_ignores_non_persistent_caches() -> None:
    used = ResizingCache()
    used(X)  # resizes the cache
    plan = rp.plan_pruning(used, criterion="random", n=1, example_inputs=X)
    assert used.cache.shape == (32,)
    fresh = rp.apply_plan(ResizingCache(), plan)
    fresh.load_state_dict(rp.apply_plan(used, plan).state_dict())


def test_saving_onto_a_directory_or_a_device_is_refused_and_leaves_nothing(tmp_path) -> None:
    plan = rp.plan_pruning(resnet20(), criterion="random", n=1, example_inputs=X)
    (tmp_path / "dir").mkdir()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target in (tmp_path / "dir", fifo):
        with pytest.raises(rp.PlanError, match="not a regular file.*Pass the path of a file"):
            plan.save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "fifo"] and not list((tmp_path / "dir").iterdir())
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_saving_where_nothing_can_be_written_is_a_plan_error(tmp_path) -> None:
    plan = rp.plan_pruning(resnet20(), criterion="random", n=1, example_inputs=X)
    (tmp_path / "file").write_text("x")
    with pytest.raises(rp.PlanError, match="cannot save the plan to"):
        plan.save(tmp_path / "file" / "plan.json")  # a folder that is a file


def test_a_saved_plan_has_ordinary_permissions(tmp_path) -> None:
    plan = rp.plan_pruning(resnet20(), criterion="random", n=1, example_inputs=X)
    old = os.umask(0o022)
    try:
        path = plan.save(tmp_path / "plan.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
