"""Sub-layer granularity: single residual branches removed by rewriting the traced graph."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import sys

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import residual_prune as rp
from residual_prune.models import resnet20
from residual_prune.rewrite import DualGraphModule, resolve_leaf_modules

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
    fresh = rp.apply_plan(
        timm.create_model("vit_tiny_patch16_224", drop_path_rate=0.5), rp.PruningPlan.load(tmp_path / "plan.json")
    )
    fresh.load_state_dict(torch.load(tmp_path / "pruned.pt", weights_only=True))
    with torch.no_grad():
        assert torch.equal(fresh.eval()(X224), pruned(X224))
    torch.save(pruned, tmp_path / "whole.pt")  # the whole GraphModule, pickled
    whole = torch.load(tmp_path / "whole.pt", weights_only=False)
    with torch.no_grad():
        assert torch.equal(whole.eval()(X224), pruned(X224))
    torch.fx.symbolic_trace(nn.Linear(2, 2))  # and torch.fx still traces afterwards


@pytest.mark.parametrize("criterion", ["random", "l1", "snip", "grasp", "synflow"])
def test_criteria_score_sublayers(criterion: str) -> None:
    model = resnet20()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    plan = rp.plan_pruning(
        model,
        criterion=criterion,
        n=2,
        data=[(x, y)],
        granularity="sublayer",
        **({"progress": False} if criterion in ("snip", "grasp") else {}),
    )
    assert len(plan.scores) == 7 and all(name.endswith("#0") for name in plan.scores)
    block_plan = rp.plan_pruning(
        model,
        criterion=criterion,
        n=2,
        data=[(x, y)],
        **({"progress": False} if criterion in ("snip", "grasp") else {}),
    )
    # a BasicBlock has one branch holding all its convolutions: the same scores at both granularities
    assert {k.removesuffix("#0"): v for k, v in plan.scores.items()} == pytest.approx(block_plan.scores)
    assert rp.verify(model, rp.apply_plan(model, plan), plan, x) <= 1e-5


def test_collapse_is_detected_for_sublayers() -> None:
    model = timm.create_model("convnext_atto", ls_init_value=1e-6)
    with pytest.warns(rp.ScoreCollapseWarning, match="layer scale"):
        rp.plan_pruning(
            model, criterion="synflow", n=1, example_inputs=torch.randn(1, 3, 32, 32), granularity="sublayer"
        )


def test_sublayer_errors() -> None:
    model = resnet20()
    x = torch.randn(1, 3, 32, 32)
    plan = rp.plan_pruning(model, criterion="random", n=1, example_inputs=x, granularity="sublayer")
    with pytest.raises(rp.InvalidArgumentError, match="inplace"):
        rp.apply_plan(model, plan, inplace=True)
    with pytest.raises(rp.InvalidArgumentError, match="granularity"):
        rp.find_blocks(model, x, granularity="layer")
    plan.removed = ["layer1.0#5"]
    with pytest.raises(rp.PlanMismatchError, match="residual branch"):
        rp.apply_plan(model, plan)


# --- tiny models reproducing the patterns of real networks ---------------------------------------


class _MLPBlock(nn.Module):
    """``x + fc(norm(x))``: one residual branch."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(self.norm(x))


class _InPlacePositionNet(nn.Module):
    """Adds its position encoding in place and drops the result, as torchvision's MViT does."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.embed = nn.Linear(8, dim)
        self.pos = nn.Parameter(torch.randn(4, dim))
        self.blocks = nn.Sequential(*[_MLPBlock(dim) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        x.add_(self.pos)
        return self.blocks(x)


def test_in_place_operations_outside_the_branches_are_kept() -> None:
    torch.manual_seed(0)
    model, x = _InPlacePositionNet().eval(), torch.randn(2, 4, 8)
    plan = rp.plan_pruning(model, criterion="random", n=1, example_inputs=x, granularity="sublayer")
    plan.removed = ["blocks.1#0"]
    pruned = rp.apply_plan(model, plan)
    reference = copy.deepcopy(model)
    reference.blocks[1] = nn.Identity()  # its only branch zeroed
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), reference(x))
    assert rp.verify(model, pruned, plan, x) <= 1e-5


class _ConstantScaledBlock(nn.Module):
    """Scales by a tensor that is neither a parameter nor a buffer: torch.fx lifts it as ``_tensor_constant0``."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.mlp = _MLPBlock(dim)
        self.table = [torch.tensor(0.5)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x) * self.table[0] + x


def test_constants_lifted_by_tracing_stay_off_the_model_and_in_the_pruned_graphs() -> None:
    torch.manual_seed(0)
    model, x = nn.Sequential(_ConstantScaledBlock(), _ConstantScaledBlock()).eval(), torch.randn(2, 4, 16)
    plan = rp.plan_pruning(model, criterion="random", n=1, example_inputs=x, granularity="sublayer")
    plan.removed = ["1.mlp#0"]
    pruned = rp.apply_plan(model, plan)
    assert not any(name.startswith("_tensor_constant") for name in vars(model))
    assert rp.verify(model, pruned, plan, x) == 0
    reference = copy.deepcopy(model)
    reference[1].mlp = nn.Identity()  # its only branch zeroed
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), reference(x))
    pruned.train()(x).sum().backward()


class _ShapeCheckedAttention(nn.Module):
    """Asserts on the shape of a tensor computed inside the branch, as timm's CoaT does."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        torch._assert(q.shape[1] == x.shape[1], "one query per token")
        return self.proj(q * k.sigmoid() + v)


class _ShapeCheckedBlock(nn.Module):
    def __init__(self, dim: int = 16):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = _ShapeCheckedAttention(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(self.norm(x))


def test_a_branch_read_by_a_shape_check_is_removed_entirely() -> None:
    torch.manual_seed(0)
    model, x = nn.Sequential(*[_ShapeCheckedBlock() for _ in range(3)]).eval(), torch.randn(2, 4, 16)
    branches = {b.name: b for b in rp.find_blocks(model, x, granularity="sublayer")}
    plan = rp.plan_pruning(model, criterion="random", n=1, example_inputs=x, granularity="sublayer")
    plan.removed = ["1#0"]
    pruned = rp.apply_plan(model, plan)
    assert not [name for name, _ in pruned.named_modules() if name.startswith("1.")]
    assert not [n for n in pruned.graph.nodes if n.op == "call_module" and n.target.startswith("1.")]
    assert _params(model) - _params(pruned) == branches["1#0"].params
    assert rp.verify(model, pruned, plan, x) <= 1e-5


class _SizeReadingBlock(nn.Module):
    """The kept network reads a size of a branch tensor: its token count (as timm's MViTv2 passes a
    feature size on) or its batch size."""

    def __init__(self, dim: int = 16, reads_batch: bool = False):
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.reads_batch = reads_batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        return (x + h) / h.shape[0 if self.reads_batch else 1]


def test_sizes_the_network_reads_from_a_removed_branch_keep_their_values() -> None:
    torch.manual_seed(0)
    model, x = nn.Sequential(_SizeReadingBlock(), _SizeReadingBlock()), torch.randn(2, 4, 16)
    plan = rp.plan_pruning(model, criterion="random", n=1, example_inputs=x, granularity="sublayer")
    plan.removed = ["0#0"]
    pruned = rp.apply_plan(model, plan)
    assert _params(model) - _params(pruned) == _params(model[0].fc)
    assert rp.verify(model, pruned, plan, torch.randn(5, 4, 16)) <= 1e-5  # any batch size
    with pytest.raises(AssertionError, match=r"pruned .*0#0.* for inputs of shape \(batch, 4, 16\)"):
        pruned(torch.randn(2, 6, 16))  # the fixed token count would be wrong


def test_a_branch_whose_value_the_network_uses_is_refused() -> None:
    model, x = nn.Sequential(*[_SizeReadingBlock(reads_batch=True) for _ in range(2)]), torch.randn(2, 4, 16)
    plan = rp.plan_pruning(model, criterion="random", n=1, example_inputs=x, granularity="sublayer")
    with pytest.raises(rp.PlanError, match=r"cannot be removed: .* may depend on the batch size"):
        rp.apply_plan(model, plan)


class _Opaque(nn.Module):
    """Untraceable (control flow on a tensor value): only usable as a leaf module."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


class _OpaqueBlock(nn.Module):
    def __init__(self, dim: int = 16):
        super().__init__()
        self.inner = _Opaque(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner(x)


def test_leaf_modules_of_a_plan_are_found_in_the_model_and_never_imported(tmp_path, monkeypatch) -> None:
    model, x = nn.Sequential(*[_OpaqueBlock() for _ in range(3)]), torch.randn(2, 16)
    plan = rp.plan_pruning(
        model, criterion="random", n=1, example_inputs=x, granularity="sublayer", leaf_modules=(_Opaque,)
    )
    assert plan.leaf_modules == [f"{__name__}:_Opaque"]
    assert rp.verify(model, rp.apply_plan(model, plan), plan, x) <= 1e-5

    marker = tmp_path / "imported"
    (tmp_path / "residual_prune_planted.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nimport torch\nclass Thing(torch.nn.Module):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    plan.leaf_modules = ["residual_prune_planted:Thing"]
    with pytest.raises(rp.PlanMismatchError, match=r"residual_prune_planted:Thing.*never imported.*leaf_modules="):
        rp.apply_plan(model, plan)
    assert not marker.exists() and "residual_prune_planted" not in sys.modules
    # the caller may name the class: by its full name or, from another module, by its class name
    assert resolve_leaf_modules(["elsewhere:_Opaque"], model, (_Opaque,)) == (_Opaque,)


class _TokenNet(nn.Module):
    def __init__(self, vocabulary: int = 10, dim: int = 16):
        super().__init__()
        self.embed = nn.Embedding(vocabulary, dim)
        self.blocks = nn.Sequential(*[_MLPBlock(dim) for _ in range(3)])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.embed(tokens))


def test_a_plan_replays_token_ids_as_integers(tmp_path) -> None:
    torch.manual_seed(0)
    model, tokens = _TokenNet(), torch.randint(0, 10, (2, 5))
    plan = rp.plan_pruning(model, criterion="random", n=1, example_inputs=tokens, granularity="sublayer")
    assert plan.input_dtypes == ["int64"]
    plan = rp.PruningPlan.load(plan.save(tmp_path / "plan.json"))
    pruned = rp.apply_plan(model, plan)
    assert rp.verify(model, pruned, plan, tokens) <= 1e-5
    data = plan.to_dict()
    with pytest.raises(rp.CorruptPlanError, match="input_dtypes"):
        rp.PruningPlan.from_dict({**data, "input_dtypes": ["torch.nn"]})
    old = {k: v for k, v in data.items() if k != "input_dtypes"}  # plans made before dtypes were recorded
    assert rp.PruningPlan.from_dict(old).input_dtypes == []


class _DropPathLike(nn.Module):
    """Stochastic depth written in Python (traced through, not a leaf module)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        keep = x.new_empty(x.shape[0], 1).bernoulli_(1 - self.p)  # as timm's drop_path
        return x * keep / (1 - self.p)


class _TrainBranch(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)
        self.fc = nn.Linear(dim, dim)
        self.drop = nn.Dropout(0.3)
        self.drop_path = _DropPathLike(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(self.norm(x))
        if self.training:
            h = h + 0.1 * torch.randn_like(h)
        h = F.dropout(h, 0.2, training=self.training)
        return self.drop_path(self.drop(h))


class _TwoBranchBlock(nn.Module):
    def __init__(self, dim: int = 8):
        super().__init__()
        self.mix = _TrainBranch(dim)
        self.mlp = _TrainBranch(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mix(x)
        return x + self.mlp(x)


class _TrainModeNet(nn.Module):
    def __init__(self, dim: int = 8):
        super().__init__()
        self.stem = nn.Linear(4, dim)
        self.blocks = nn.Sequential(*[_TwoBranchBlock(dim) for _ in range(3)])
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.training:
            x = x * 1.5
        return self.head(self.blocks(x))


class _Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def _train_step(model: nn.Module, x: torch.Tensor, seed: int = 3) -> torch.Tensor:
    torch.manual_seed(seed)
    return model.train()(x)


def test_a_pruned_model_trains_like_the_original_without_its_branches() -> None:
    torch.manual_seed(0)
    model, x = _TrainModeNet(), torch.randn(16, 4)
    plan = rp.plan_pruning(model, criterion="random", n=1, example_inputs=x, granularity="sublayer")
    plan.removed = ["blocks.0#1", "blocks.1#0"]
    pruned = rp.apply_plan(model, plan)
    reference = copy.deepcopy(model)
    reference.blocks[0].mlp = _Zero()  # the branches zeroed, without tracing and without drawing random numbers
    reference.blocks[1].mix = _Zero()
    assert isinstance(pruned, DualGraphModule) and pruned.train_refusal is None
    expected = _train_step(reference, x)
    torch.testing.assert_close(_train_step(pruned, x), expected)  # noise, dropout and drop path in train mode
    assert pruned.state_dict().keys() == reference.state_dict().keys()
    for key, value in reference.state_dict().items():  # batch-norm statistics updated alike
        torch.testing.assert_close(pruned.state_dict()[key], value, msg=key)
    with torch.no_grad():
        torch.testing.assert_close(pruned.eval()(x), reference.eval()(x))
    # copies keep the train-mode graph
    for copied in (copy.deepcopy(pruned), pickle.loads(pickle.dumps(pruned))):
        assert isinstance(copied, DualGraphModule)
        copied.load_state_dict(reference.state_dict())
        torch.testing.assert_close(_train_step(copied, x), _train_step(reference, x))
        with torch.no_grad():
            torch.testing.assert_close(copied.eval()(x), reference.eval()(x))


class _TrainOnlyDataDependent(nn.Module):
    def __init__(self, dim: int = 8):
        super().__init__()
        self.blocks = nn.Sequential(*[_MLPBlock(dim) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.sum() > 0:  # torch.fx cannot trace this in train mode
            x = -x
        return self.blocks(x)


def test_a_model_whose_train_mode_cannot_be_traced_refuses_to_train() -> None:
    model, x = _TrainOnlyDataDependent().eval(), torch.randn(2, 8)
    plan = rp.plan_pruning(model, criterion="random", n=1, example_inputs=x, granularity="sublayer")
    pruned = rp.apply_plan(model, plan)
    assert rp.verify(model, pruned, plan, x) <= 1e-5
    with pytest.raises(rp.TraceError, match="cannot run in train mode: its train-mode forward cannot be analysed"):
        pruned.train()(x)


class _SharedLayerAttention(nn.Module):
    """Its own layer, then one shared with the other blocks (as CoaT's ``crpe``)."""

    def __init__(self, shared: nn.Module):
        super().__init__()
        self.own = nn.Linear(16, 16)
        self.shared = shared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(self.own(x))


class _SharingBlock(nn.Module):
    def __init__(self, shared: nn.Module, pos: nn.Module):
        super().__init__()
        self.pos = pos
        self.attn = _SharedLayerAttention(shared)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos(x)  # a branch made only of a layer every block calls (CoaT's shared ``cpe``)
        return x + self.attn(x)


class _SharingNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.shared, self.pos = nn.Linear(16, 16), nn.Linear(16, 16)
        self.blocks = nn.Sequential(*[_SharingBlock(self.shared, self.pos) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


@pytest.mark.parametrize("granularity", ["block", "sublayer"])
def test_params_count_what_removing_a_unit_frees_when_layers_are_shared(granularity: str) -> None:
    torch.manual_seed(0)
    model, x = _SharingNet().eval(), torch.randn(2, 4, 16)
    blocks = rp.find_blocks(model, x, granularity=granularity)
    plan = rp.plan_pruning(model, criterion="l1", n=1, example_inputs=x, granularity=granularity)
    total = sum(p.numel() for p in model.parameters())
    removable = [b for b in blocks if b.removable]
    assert len(removable) == 3 and all(b.params == 16 * 16 + 16 for b in removable)  # the own layer only
    for block in removable:
        pruned = rp.apply_plan(model, dataclasses.replace(plan, removed=[block.name]))
        assert total - sum(p.numel() for p in pruned.parameters()) == block.params, block.name


def test_a_branch_made_only_of_a_shared_layer_is_not_removable() -> None:
    model, x = _SharingNet().eval(), torch.randn(2, 4, 16)
    reasons = {b.name: b.reason for b in rp.find_blocks(model, x, granularity="sublayer")}
    assert reasons["blocks.0#0"] == (
        "its layers (`pos`) also run outside it (a module called more than once), so removing this branch alone "
        "would remove no layer"
    )
    assert reasons["blocks.0#1"] is None
    rp.plan_pruning(model, criterion="l1", n=2, example_inputs=x, granularity="sublayer")  # scores every branch
