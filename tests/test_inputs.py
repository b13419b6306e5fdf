"""Example inputs in every form, and their JSON form in a plan."""

from __future__ import annotations

import pytest
import torch

import residual_prune as rp
from residual_prune.inputs import ModelInputs


def test_every_accepted_form_normalises_to_args_and_kwargs() -> None:
    x, ids = torch.randn(1, 3, 4, 4), torch.zeros(1, 8, dtype=torch.long)
    assert ModelInputs.of(x).args == (x,) and ModelInputs.of(x).is_tensor_tuple
    assert ModelInputs.of([x, x]).args == (x, x)
    nested = ModelInputs.of(([x, x],))
    assert nested.args == ([x, x],) and not nested.is_tensor_tuple and len(nested.tensors()) == 2
    keywords = ModelInputs.of({"input_ids": ids, "use_cache": False})
    assert keywords.kwargs == {"input_ids": ids, "use_cache": False} and keywords.tensors() == [ids]
    assert keywords.describe() == "input_ids=(1, 8), use_cache=False"


@pytest.mark.parametrize(
    "bad", [None, (), {}, "x", {"x": object()}, {1: torch.zeros(1)}, (torch.zeros(1), {"a": 1}), [1]]
)
def test_other_forms_are_refused_with_what_to_pass(bad) -> None:
    with pytest.raises(rp.DataError, match="pass a tensor .* a dict of keyword arguments|hold no tensor|names"):
        ModelInputs.of(bad)


def test_the_json_form_round_trips_shapes_dtypes_and_values() -> None:
    inputs = ModelInputs.of(([torch.randn(3, 5, 6)], torch.ones(2, dtype=torch.long), 0.5))
    spec = inputs.to_json()
    zeros = ModelInputs.zeros_from_json(spec)
    assert zeros.describe() == inputs.describe() == "[(3, 5, 6)], (2,), 0.5"
    assert [t.dtype for t in zeros.tensors()] == [torch.float32, torch.int64]
    assert all(not t.any() for t in zeros.tensors())
    assert ModelInputs.zeros_from_json(spec, "meta").tensors()[0].is_meta


@pytest.mark.parametrize(
    "spec",
    [
        [],
        {"args": []},
        {"args": [], "kwargs": {}},  # no tensor
        {"args": [{"shape": [1, -1], "dtype": "float32"}], "kwargs": {}},
        {"args": [{"shape": [1], "dtype": "os.system"}], "kwargs": {}},
        {"args": [{"value": {"nested": 1}}], "kwargs": {}},
        {"args": [{"shape": [1], "dtype": "float32", "extra": 1}], "kwargs": {}},
    ],
)
def test_a_malformed_json_form_is_refused(spec) -> None:
    with pytest.raises(ValueError):
        ModelInputs.zeros_from_json(spec)


def test_a_plan_with_malformed_inputs_is_corrupt_and_an_old_plan_replays_its_input_shapes() -> None:
    plan = rp.PruningPlan(removed=[], scores={}, criterion="l1", policy="default", fingerprint="0")
    assert plan.frontend == "fx" and plan.inputs is None  # what older plans, written before both fields, mean
    data = {**plan.to_dict(), "inputs": {"args": [{"shape": "big"}], "kwargs": {}}}
    with pytest.raises(rp.CorruptPlanError, match="'inputs' must describe the model's arguments"):
        rp.PruningPlan.from_dict(data)
    with pytest.raises(rp.CorruptPlanError, match="'frontend' must be one of 'fx', 'export', 'export-strict'"):
        rp.PruningPlan.from_dict({**plan.to_dict(), "frontend": "auto"})
