"""Layer-redundancy criteria (block_influence, loss_drop, angular_distance) against hand-checked cases."""

from __future__ import annotations

import copy
import dataclasses
import functools
import math

import pytest
import torch
import transformers as hf
from torch import nn

import residual_prune as rp
from residual_prune.criteria.redundancy import block_windows
from tests.helpers import assert_same_state, state_snapshot

CRITERIA = ["block_influence", "loss_drop", "angular_distance"]


class LinearResidual(nn.Module):
    """x + W x over the last dimension, W set by hand."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype)
        with torch.no_grad():
            self.linear.weight.copy_(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(x)


def _rotation(angle: float) -> LinearResidual:
    """A block that rotates 2-d tokens by ``angle``: x + (R - I) x = R x."""
    c, s = math.cos(angle), math.sin(angle)
    return LinearResidual(torch.tensor([[c - 1, -s], [s, c - 1]], dtype=torch.float64))


class MlpResidual(nn.Module):
    """x + fc2(relu(fc1(x))); with fc2 zero it returns its input."""

    def __init__(self, dim: int, zero: bool = False):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        if zero:
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(x)))


class TokenNet(nn.Module):
    """Residual blocks on (N, L, D) tokens in an nn.Sequential, then the mean token and a linear head."""

    def __init__(self, *blocks: nn.Module, dim: int, classes: int = 3):
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x).mean(1))


class ConvNet(TokenNet):
    """Residual blocks on (N, C, H, W) feature maps, then global average pooling and a linear head."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x).mean((2, 3)))


class ConvResidual(nn.Module):
    """x + conv1x1(x), the mixing of the channels set by hand."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.conv = nn.Conv2d(weight.shape[1], weight.shape[0], 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(weight.reshape(*weight.shape, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class TupleLayer(nn.Module):
    """Hugging Face style: called as ``layer(hidden_states=x)``, returns ``(x + W x, None)``."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.linear = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(weight)

    def forward(self, hidden_states: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, None]:
        return hidden_states + self.linear(hidden_states), None


class TupleNet(nn.Module):
    def __init__(self, *layers: nn.Module, dim: int):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(hidden_states=x, scale=2.0)[0]
        return self.head(x.mean(1))


def _score(criterion: str, model: nn.Module, x: torch.Tensor, data, **options) -> dict[str, float]:
    blocks = [b for b in rp.find_blocks(model, x[:1]) if b.removable]
    return rp.get_criterion(criterion)(model, blocks, data, progress=False, **options)


def _token_model() -> tuple[TokenNet, tuple[torch.Tensor, torch.Tensor]]:
    """Four MLP blocks, blocks.2 the identity; labels the model's own predictions, made confident."""
    torch.manual_seed(0)
    model = TokenNet(*(MlpResidual(4, zero=k == 2) for k in range(4)), dim=4)
    with torch.no_grad():
        model.head.weight.mul_(20)
        x = torch.randn(6, 5, 4)
        return model, (x, model(x).argmax(1))


def test_registered_as_forward_only_data_driven_builtins() -> None:
    for name in CRITERIA:
        info = rp.get_criterion_info(name)
        assert name in rp.list_criteria() and info.source == "builtin"
        assert info.requires_data and not info.gradient_based


def test_a_block_that_returns_its_input_scores_zero_and_goes_first() -> None:
    model, (x, y) = _token_model()
    before = state_snapshot(model)
    influence = _score("block_influence", model, x, [(x, y)])
    drop = _score("loss_drop", model, x, [(x, y)])
    assert influence["blocks.2"] == 0.0 and drop["blocks.2"] == 0.0
    assert all(influence[f"blocks.{k}"] > 1e-3 and drop[f"blocks.{k}"] > 1e-3 for k in (0, 1, 3))
    for k in range(4):  # the loss with the block taken out, by hand
        without = copy.deepcopy(model)
        without.blocks[k] = nn.Identity()
        with torch.no_grad():
            increase = float(nn.functional.cross_entropy(without(x), y) - nn.functional.cross_entropy(model(x), y))
        assert drop[f"blocks.{k}"] == pytest.approx(increase, rel=1e-6)
    assert_same_state(model, before)
    for criterion in CRITERIA:
        plan = rp.plan_pruning(model, criterion=criterion, n=1, data=[(x, y)], progress=False)
        assert plan.removed == ["blocks.2"], criterion
        assert len(rp.apply_plan(model, plan).blocks) == 3


def test_block_influence_of_doubling_negating_and_rotating_blocks() -> None:
    eye = torch.eye(2, dtype=torch.float64)
    model = TokenNet(LinearResidual(eye), LinearResidual(-2 * eye), _rotation(0.7), dim=2).double()
    x = torch.randn(3, 5, 2, dtype=torch.float64)
    scores = _score("block_influence", model, x, [(x, torch.zeros(3, dtype=torch.long))])
    assert scores["blocks.0"] == 0.0  # 2x: same direction
    assert scores["blocks.1"] == 2.0  # -x: opposite direction
    assert scores["blocks.2"] == pytest.approx(1 - math.cos(0.7), rel=1e-9)


def test_block_influence_compares_feature_maps_by_their_channel_vectors() -> None:
    swap = torch.tensor([[-1.0, 1.0], [1.0, -1.0]])  # x + (P - I) x swaps the two channels
    model = ConvNet(ConvResidual(swap), ConvResidual(torch.zeros(2, 2)), dim=2)
    x = torch.stack([torch.full((4, 4), 3.0), torch.full((4, 4), 4.0)]).expand(2, 2, 4, 4).contiguous()
    x[:, :, 0, 0] = 0.0  # a zero vector, unchanged: the same
    scores = _score("block_influence", model, x, [(x, torch.tensor([0, 1]))])
    assert scores == {"blocks.0": pytest.approx((1 - 24 / 25) * 15 / 16, rel=1e-9), "blocks.1": 0.0}  # (3, 4) -> (4, 3)


def test_cnn_with_pairs_through_plan_and_apply() -> None:
    torch.manual_seed(0)
    model = ConvNet(*(ConvResidual(torch.randn(3, 3)) for _ in range(2)), ConvResidual(torch.zeros(3, 3)), dim=3)
    x, y = torch.randn(4, 3, 6, 6), torch.tensor([0, 1, 2, 0])
    for criterion in CRITERIA:
        plan = rp.plan_pruning(model, criterion=criterion, n=1, data=[(x, y), (x, y)], progress=False)
        assert plan.removed == ["blocks.2"] and plan.scores["blocks.2"] == 0.0, criterion
        assert rp.verify(model, rp.apply_plan(model, plan), plan, x) <= 1e-5


def test_angular_distance_picks_the_closest_window_not_the_closest_blocks() -> None:
    angles = [0.4, -0.4, 0.1, 0.1, 0.5]  # windows of two turn by 0, 0.3, 0.2, 0.6
    model = TokenNet(*(_rotation(a) for a in angles), dim=2).double()
    x = torch.randn(3, 5, 2, dtype=torch.float64)
    data = [(x, torch.zeros(3, dtype=torch.long))]
    scores = _score("angular_distance", model, x, data, n=2)
    expected = [0.0, 0.0, 0.2, 0.2, 0.6]  # the smallest turn of a window each block is in
    assert [scores[f"blocks.{k}"] for k in range(5)] == pytest.approx([a / math.pi for a in expected], abs=1e-9)
    plan = rp.plan_pruning(model, criterion="angular_distance", n=2, data=data, progress=False)
    assert plan.removed == ["blocks.0", "blocks.1"]
    alone = rp.plan_pruning(model, criterion="block_influence", n=2, data=data, progress=False)
    assert alone.removed == ["blocks.2", "blocks.3"]  # the blocks that turn least on their own
    three = rp.plan_pruning(model, criterion="angular_distance", ratio=0.6, data=data, progress=False)
    assert three.removed == ["blocks.0", "blocks.1", "blocks.2"]  # turns 0.1, 0.2, 0.7


def test_angular_distance_ties_go_to_the_first_window() -> None:
    model = TokenNet(*(_rotation(0.0) for _ in range(4)), dim=2).double()
    x = torch.randn(3, 5, 2, dtype=torch.float64)
    scores = _score("angular_distance", model, x, [(x, torch.zeros(3, dtype=torch.long))], n=2)
    assert scores["blocks.0"] == scores["blocks.1"] == 0.0
    assert scores["blocks.2"] == scores["blocks.3"] == math.nextafter(0.0, 1.0)


def test_windows_are_consecutive_children_that_run_one_after_another() -> None:
    model = TokenNet(*(_rotation(0.1) for _ in range(2)), nn.Tanh(), *(_rotation(0.1) for _ in range(2)), dim=2)
    model = model.double()
    x = torch.randn(3, 5, 2, dtype=torch.float64)
    blocks = [b for b in rp.find_blocks(model, x[:1]) if b.removable]
    assert [[b.name for b in w] for w in block_windows(blocks, 2)] == [
        ["blocks.0", "blocks.1"],
        ["blocks.3", "blocks.4"],
    ]
    with pytest.raises(rp.InvalidArgumentError, match="no 3 of the 4 removable blocks run so"):
        rp.plan_pruning(model, criterion="angular_distance", n=3, data=[(x, torch.zeros(3).long())], progress=False)
    branches = [b for b in rp.find_blocks(model, x[:1], granularity="sublayer") if b.removable]
    assert [b.follows for b in branches] == [None, "blocks.0#0", None, "blocks.3#0"]  # the tanh runs between
    assert [[b.name for b in w] for w in block_windows(branches, 2)] == [
        ["blocks.0#0", "blocks.1#0"],
        ["blocks.3#0", "blocks.4#0"],
    ]
    alternating = Alternating()
    blocks = [b for b in rp.find_blocks(alternating, x[:1]) if b.removable]
    assert [b.name for b in blocks] == ["a.0", "b.0", "a.1", "b.1"]
    assert block_windows(blocks, 2) == []  # a.0 and a.1 are neighbours in their list, but b.0 runs between them


class Alternating(nn.Module):
    """Two lists of blocks, run in turns: a.0, b.0, a.1, b.1."""

    def __init__(self):
        super().__init__()
        self.a = nn.ModuleList([_rotation(0.1), _rotation(0.2)])
        self.b = nn.ModuleList([_rotation(0.3), _rotation(0.4)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for a, b in zip(self.a, self.b):
            x = b(a(x))
        return x


def test_blocks_called_by_keyword_that_return_tuples() -> None:
    eye = torch.eye(2)
    model = TupleNet(TupleLayer(eye), TupleLayer(-2 * eye), TupleLayer(torch.tensor([[0.5, 0.0], [0.0, 0.0]])), dim=2)
    x, y = torch.randn(4, 5, 2), torch.tensor([0, 1, 2, 0])
    influence = _score("block_influence", model, x, [(x, y)])
    assert influence["layers.0"] == 0.0 and influence["layers.1"] == 2.0
    plan = rp.plan_pruning(model, criterion="loss_drop", n=1, data=[(x, y)], progress=False)
    loss = nn.functional.cross_entropy
    for name in ("layers.0", "layers.1", "layers.2"):  # the stand-in returns (x, None), as apply_plan's does
        pruned = rp.apply_plan(model, dataclasses.replace(plan, removed=[name]))
        with torch.no_grad():
            increase = float(loss(pruned(x), y) - loss(model(x), y))
        assert plan.scores[name] == pytest.approx(increase, rel=1e-6, abs=1e-7)


def test_loss_drop_takes_loss_fn_and_forward_fn() -> None:
    model, (x, y) = _token_model()
    default = _score("loss_drop", model, x, [(x, y)])
    doubled = _score(
        "loss_drop",
        model,
        x,
        [{"inputs": x, "targets": y}],
        forward_fn=lambda m, batch: m(batch["inputs"]),
        loss_fn=lambda outputs, batch: 2 * nn.functional.cross_entropy(outputs, batch["targets"]),
    )
    assert doubled == pytest.approx({name: 2 * value for name, value in default.items()}, rel=1e-6)


class TwoBranches(nn.Module):
    """A transformer layer's shape without its norms: h = x + a(x), then h + b(h), a and b linear maps set by hand."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.a, self.b = LinearResidual(a).linear, LinearResidual(b).linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.a(x)
        return h + self.b(h)


def _turn(angle: float) -> torch.Tensor:
    """R - I for the rotation R by ``angle``: the branch x + (R - I) x turns 2-d tokens by ``angle``."""
    return _rotation(angle).linear.weight.detach()


def _sublayer_model() -> tuple[TokenNet, tuple[torch.Tensor, torch.Tensor]]:
    """Two layers of two branches that turn tokens by 0.3, 0 (a zero map), 0.5 and 0.2."""
    model = TokenNet(TwoBranches(_turn(0.3), _turn(0.0)), TwoBranches(_turn(0.5), _turn(0.2)), dim=2).double()
    torch.manual_seed(0)
    x = torch.randn(4, 5, 2, dtype=torch.float64)
    with torch.no_grad():  # labels: the model's own predictions, made confident
        model.head.weight.mul_(20)
        return model, (x, model(x).argmax(1))


def test_sublayers_score_their_branches_apart() -> None:
    model, (x, y) = _sublayer_model()
    blocks = [b for b in rp.find_blocks(model, x[:1], granularity="sublayer") if b.removable]
    assert [b.name for b in blocks] == ["blocks.0#0", "blocks.0#1", "blocks.1#0", "blocks.1#1"]
    assert blocks[1].ends == rp.BranchEnds(enters="blocks.0.b", leaves="blocks.0.b")  # h is b's input
    assert blocks[2].ends == rp.BranchEnds(enters="blocks.1", leaves="blocks.1.a")
    scores = rp.get_criterion("block_influence")(model, blocks, [(x, y)], progress=False)
    assert scores == pytest.approx(
        {
            "blocks.0#0": 1 - math.cos(0.3),
            "blocks.0#1": 0.0,
            "blocks.1#0": 1 - math.cos(0.5),
            "blocks.1#1": 1 - math.cos(0.2),
        },
        abs=1e-12,
    )
    # windows of two branches that run one after the other, across layers: turns 0.3, 0.5, 0.7
    distances = rp.get_criterion("angular_distance")(model, blocks, [(x, y)], n=2, progress=False)
    assert distances["blocks.0#0"] == distances["blocks.0#1"] == pytest.approx(0.3 / math.pi, abs=1e-12)
    plan = rp.plan_pruning(
        model, criterion="angular_distance", n=2, data=[(x, y)], granularity="sublayer", progress=False
    )
    assert plan.removed == ["blocks.0#0", "blocks.0#1"]


def test_loss_drop_of_a_sublayer_is_the_loss_of_the_model_without_its_branch() -> None:
    model, (x, y) = _sublayer_model()
    plan = rp.plan_pruning(model, criterion="loss_drop", n=1, data=[(x, y)], granularity="sublayer", progress=False)
    assert plan.scores["blocks.0#1"] == 0.0  # the zero branch
    assert plan.removed == [min(plan.scores, key=plan.scores.__getitem__)]
    loss = nn.functional.cross_entropy
    for name in plan.scores:
        pruned = rp.apply_plan(model, dataclasses.replace(plan, removed=[name]))
        with torch.no_grad():
            increase = float(loss(pruned(x), y) - loss(model(x), y))
        assert plan.scores[name] == pytest.approx(increase, rel=1e-9, abs=1e-12), name


def test_a_sublayer_no_module_bounds_is_refused_with_what_to_use() -> None:
    class Functional(nn.Module):  # the branch ends in a function, not a module: x + tanh(W x)
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.tanh(self.linear(x))

    model = TokenNet(Functional(), Functional(), dim=2)
    x, y = torch.randn(4, 5, 2), torch.tensor([0, 1, 2, 0])
    for criterion in CRITERIA:
        with pytest.raises(rp.CriterionError, match="granularity='block'"):
            rp.plan_pruning(model, criterion=criterion, n=1, data=[(x, y)], granularity="sublayer", progress=False)
    weights = rp.plan_pruning(model, criterion="l1", n=1, granularity="sublayer", example_inputs=x[:1])
    assert len(weights.removed) == 1  # weight criteria need no module at the branch's ends


@pytest.fixture(scope="module")
def llama() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    config = hf.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
    )
    ids = torch.randint(0, 100, (2, 8))
    return hf.LlamaForCausalLM(config).eval(), {"input_ids": ids, "labels": ids}


def _llama_plan(model: nn.Module, batch: dict[str, torch.Tensor], criterion: str, n: int) -> rp.PruningPlan:
    example = {"input_ids": batch["input_ids"]}
    return rp.plan_pruning(model, criterion=criterion, n=n, data=[batch, batch], example_inputs=example, progress=False)


def _hidden_states(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The input of each layer, then the output of the last (before the final norm)."""
    states = []
    last = model.model.layers[-1].register_forward_hook(lambda m, args, out: states.append(out))
    with torch.no_grad():
        hidden = model(input_ids=batch["input_ids"], output_hidden_states=True).hidden_states
    last.remove()
    return (*hidden[:-1], states[0])


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return nn.functional.cosine_similarity(a.double(), b.double(), dim=-1).clamp(-1, 1)


def test_block_influence_on_a_hugging_face_llama(llama) -> None:
    model, batch = llama
    before = state_snapshot(model)
    plan = _llama_plan(model, batch, "block_influence", 1)
    assert_same_state(model, before)
    states = _hidden_states(model, batch)
    expected = {f"model.layers.{i}": float((1 - _cos(states[i], states[i + 1])).mean()) for i in range(4)}
    assert plan.scores == pytest.approx(expected, rel=1e-5)
    assert plan.removed == [min(expected, key=expected.get)]
    assert len(rp.apply_plan(model, plan).model.layers) == 3


def test_loss_drop_on_a_hugging_face_llama_is_the_loss_of_the_pruned_model(llama) -> None:
    model, batch = llama
    plan = _llama_plan(model, batch, "loss_drop", 1)
    assert plan.removed == [min(plan.scores, key=plan.scores.get)]
    pruned = rp.apply_plan(model, plan)
    with torch.no_grad():
        increase = float(pruned(**batch).loss - model(**batch).loss)
    assert len(pruned.model.layers) == 3 and plan.scores[plan.removed[0]] == pytest.approx(increase, abs=1e-6)


def test_angular_distance_on_a_hugging_face_llama(llama) -> None:
    model, batch = llama
    plan = _llama_plan(model, batch, "angular_distance", 2)
    states = _hidden_states(model, batch)
    distances = [float((torch.arccos(_cos(states[i], states[i + 2])) / math.pi).mean()) for i in range(3)]
    best = min(range(3), key=distances.__getitem__)
    assert plan.removed == [f"model.layers.{best}", f"model.layers.{best + 1}"]
    assert plan.scores[plan.removed[0]] == pytest.approx(distances[best], rel=1e-5)
    pruned = rp.apply_plan(model, plan)
    assert len(pruned.model.layers) == 2 and pruned.config.num_hidden_layers == 2
    with torch.no_grad():
        assert torch.isfinite(pruned(**batch).loss)


def test_sublayer_criteria_on_a_hugging_face_llama(llama) -> None:
    """FinerCut's granularity: each layer's attention and MLP scored apart, from the hidden states between them."""
    model, batch = llama
    example = {"input_ids": batch["input_ids"]}
    mids = []  # the input of each layer's MLP sub-layer: the layer input plus its attention
    hooks = [
        layer.post_attention_layernorm.register_forward_pre_hook(lambda m, a: mids.append(a[0]))
        for layer in model.model.layers
    ]
    states = _hidden_states(model, batch)
    for hook in hooks:
        hook.remove()
    expected = {}
    for i in range(4):
        expected[f"model.layers.{i}#0"] = float((1 - _cos(states[i], mids[i])).mean())  # attention
        expected[f"model.layers.{i}#1"] = float((1 - _cos(mids[i], states[i + 1])).mean())  # MLP
    plan = functools.partial(
        rp.plan_pruning, model, data=[batch], example_inputs=example, granularity="sublayer", progress=False
    )
    assert plan(criterion="block_influence", n=2).scores == pytest.approx(expected, rel=1e-5)
    drop = plan(criterion="loss_drop", n=1)
    for name in ("model.layers.0#0", "model.layers.2#1"):  # the loss of the model the plan gives, attention or MLP
        pruned = rp.apply_plan(model, dataclasses.replace(drop, removed=[name]))
        with torch.no_grad():
            assert drop.scores[name] == pytest.approx(float(pruned(**batch).loss - model(**batch).loss), abs=1e-6)
    run = plan(criterion="angular_distance", n=3)
    names = [f"model.layers.{i}#{k}" for i in range(4) for k in range(2)]
    start = names.index(run.removed[0])
    assert run.removed == names[start : start + 3]  # three branches that run one after the other
