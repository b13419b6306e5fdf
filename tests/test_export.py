"""Pruned models stay first-class: torch.compile, torch.export, torch.jit.trace and ONNX give the eager outputs."""

from __future__ import annotations

import warnings

import onnx
import onnxruntime
import pytest
import timm
import torch
import torchvision

import residual_prune as rp

MODELS = {
    "torchvision:resnet50": (lambda: torchvision.models.resnet50(), 64),
    "timm:vit_tiny_patch16_224": (lambda: timm.create_model("vit_tiny_patch16_224"), 224),
    "timm:convnext_atto": (lambda: timm.create_model("convnext_atto"), 64),
}


@pytest.fixture(scope="module", params=list(MODELS))
def pruned(request):
    build, size = MODELS[request.param]
    torch.manual_seed(0)
    model = build()
    x = torch.randn(2, 3, size, size)
    plan = rp.plan_pruning(model, criterion="l1", n=2, example_inputs=x)
    model = rp.apply_plan(model, plan).eval()
    with torch.no_grad():
        expected = model(x)
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in build().parameters())
    return model, x, expected


def test_torch_export(pruned) -> None:
    model, x, expected = pruned
    program = torch.export.export(model, (x,))
    torch.testing.assert_close(program.module()(x), expected)


def test_torch_jit_trace(pruned) -> None:
    model, x, expected = pruned
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x)
    torch.testing.assert_close(traced(x), expected)


def test_onnx_export_checks_and_runs(pruned, tmp_path) -> None:
    model, x, expected = pruned
    path = tmp_path / "pruned.onnx"
    torch.onnx.export(model, (x,), dynamo=True, verbose=False).save(str(path))
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    session = onnxruntime.InferenceSession(str(path))
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), expected, rtol=1e-4, atol=1e-4)


def test_torch_compile(pruned) -> None:
    model, x, expected = pruned
    torch._dynamo.reset()
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), expected, rtol=1e-4, atol=1e-4)
