"""Sub-layer granularity: single residual branches removed by rewriting the traced graph."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

import residual_prune as rp
from residual_prune.models import resnet20

X224 = torch.randn(2, 3, 224, 224)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "build, x, branches",
    [
        (lambda: timm.create_model("vit_tiny_patch16_224"), X224, 24),
        (lambda: torchvision.models.vit_b_16(), X224, 24),
        (lambda: torchvision.models.swin_t(), torch.randn(2, 3, 112, 112), 24),
        (lambda: torchvision.models.convnext_tiny(), torch.randn(2, 3, 64, 64), 18),
    ],
)
def test_branches_are_removed_exactly(build, x, branches: int) -> None:
    torch.manual_seed(0)
    model = build()
    subs = rp.find_blocks(model, x, granularity="sublayer")
    assert len(subs) == sum(b.removable for b in subs) == branches
    plan = rp.plan_pruning(model, criterion="random", n=3, example_inputs=x, granularity="sublayer", seed=1)
    pruned = rp.apply_plan(model, plan)
    assert isinstance(pruned, torch.fx.GraphModule) and plan.granularity == "sublayer"
    params = {b.name: b.params for b in subs}
    assert _params(model) - _params(pruned) == sum(params[name] for name in plan.removed) > 0
    assert rp.verify(model, pruned, plan, x) <= 1e-4
    left = rp.find_blocks(pruned, x, granularity="sublayer")
    assert len(left) == branches - 3


def test_attention_and_mlp_of_a_vit_block_are_separate() -> None:
    model = timm.create_model("vit_tiny_patch16_224")
    subs = {b.name: b for b in rp.find_blocks(model, X224, granularity="sublayer")}
    attention, mlp = subs["blocks.3#0"], subs["blocks.3#1"]
    assert "blocks.3.attn" in attention.modules and "blocks.3.norm1" in attention.modules
    assert "blocks.3.mlp" in mlp.modules and "blocks.3.attn" not in mlp.modules
    block = dict(model.named_modules())["blocks.3"]
    assert attention.params + mlp.params == _params(block)
    assert attention.stage == mlp.stage == "blocks.3" and (attention.index, mlp.index) == (0, 1)


def test_sublayer_model_trains_saves_reloads_and_keeps_drop_path(tmp_path) -> None:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", drop_path_rate=0.5)
    plan = rp.plan_pruning(model, criterion="l1", n=4, example_inputs=X224[:1], granularity="sublayer")
    pruned = rp.apply_plan(model, plan)
    pruned.train()
    first, second = pruned(X224), pruned(X224)
    assert not torch.equal(first, second)  # drop path still active in train mode
    first.sum().backward()
    assert all(p.grad is not None for p in pruned.parameters() if p.requires_grad)
    pruned.eval()
    with torch.no_grad():
        assert torch.equal(pruned(X224), pruned(X224))
    plan.save(tmp_path / "plan.json")
    torch.save(pruned.state_dict(), tmp_path / "pruned.pt")
    fresh = rp.apply_plan(timm.create_model("vit_tiny_patch16_224", drop_path_rate=0.5),
                          rp.PruningPlan.load(tmp_path / "plan.json"))
    fresh.load_state_dict(torch.load(tmp_path / "pruned.pt", weights_only=True))
    with torch.no_grad():
        assert torch.equal(fresh.eval()(X224), pruned(X224))


@pytest.mark.parametrize("criterion", ["random", "l1", "snip", "grasp", "synflow"])
def test_criteria_score_sublayers(criterion: str) -> None:
    model = resnet20()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    plan = rp.plan_pruning(model, criterion=criterion, n=2, data=[(x, y)], granularity="sublayer",
                           **({"progress": False} if criterion in ("snip", "grasp") else {}))
    assert len(plan.scores) == 7 and all(name.endswith("#0") for name in plan.scores)
    block_plan = rp.plan_pruning(model, criterion=criterion, n=2, data=[(x, y)],
                                 **({"progress": False} if criterion in ("snip", "grasp") else {}))
    # a BasicBlock has one branch holding all its convolutions: the same scores at both granularities
    assert {k.removesuffix("#0"): v for k, v in plan.scores.items()} == pytest.approx(block_plan.scores)
    assert rp.verify(model, rp.apply_plan(model, plan), plan, x) <= 1e-5


def test_collapse_is_detected_for_sublayers() -> None:
    model = timm.create_model("convnext_atto", ls_init_value=1e-6)
    with pytest.warns(rp.ScoreCollapseWarning, match="layer scale"):
        rp.plan_pruning(model, criterion="synflow", n=1, example_inputs=torch.randn(1, 3, 32, 32),
                        granularity="sublayer")


def test_sublayer_errors() -> None:
    model = resnet20()
    x = torch.randn(1, 3, 32, 32)
    plan = rp.plan_pruning(model, criterion="random", n=1, example_inputs=x, granularity="sublayer")
    with pytest.raises(rp.InvalidArgumentError, match="inplace"):
        rp.apply_plan(model, plan, inplace=True)
    with pytest.raises(rp.InvalidArgumentError, match="granularity"):
        rp.find_blocks(model, x, granularity="layer")
    plan.removed = ["layer1.0#5"]
    with pytest.raises(rp.PlanMismatchError, match="no residual branch"):
        rp.apply_plan(model, plan)
