"""The benchmark zoo registry: specs, builders, calling a model with its inputs in any form, and a
representative tiny model of each zoo built and run once."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from benchmarks import zoos


class TwoArgs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, a, b, *, scale: float = 1.0):
        return self.linear(a + b) * scale


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one thread than contending for the shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry, so that zoos registered by a test do not leak."""
    monkeypatch.setattr(zoos, "_ZOOS", dict(zoos._ZOOS))
    return zoos._ZOOS


def test_every_zoo_is_registered() -> None:
    assert zoos.list_zoos() == [
        "torchvision",
        "torchvision-detection",
        "torchvision-segmentation",
        "torchvision-video",
        "torchvision-flow",
        "timm",
        "transformers",
        "smp",
        "monai",
    ]
    assert not zoos.get_zoo("torchvision-detection").trains and zoos.get_zoo("timm").trains
    assert zoos.package_version("transformers").startswith("transformers 5.")


def test_registered_zoo_lists_and_builds_seeded_models_in_eval_mode(registry) -> None:
    @zoos.register_zoo("toy", models=lambda: ["a", "b"], package="torch")
    def build(name: str):
        return TwoArgs().train(), (torch.randn(2, 4), torch.randn(2, 4))

    assert zoos.list_models(["toy"]) == ["toy:a", "toy:b"]
    (model, inputs), (again, same_inputs) = zoos.build("toy:a"), zoos.build("toy:a")
    assert not model.training and torch.equal(model.linear.weight, again.linear.weight)
    assert torch.equal(inputs[0], same_inputs[0])  # seeded before the builder runs
    assert zoos.package_version("toy").startswith("torch ")


def test_bad_names_are_refused_with_the_choices(registry) -> None:
    with pytest.raises(ValueError, match="unknown zoo 'nope'; choose from torchvision, "):
        zoos.get_zoo("nope")
    with pytest.raises(ValueError, match="unknown zoo"):
        zoos.build("nope:resnet18")
    with pytest.raises(ValueError, match="not ZOO:NAME"):
        zoos.split_spec("resnet18")
    with pytest.raises(ValueError, match="already registered"):
        zoos.register_zoo("timm", models=list, package="timm")(lambda name: None)
    with pytest.raises(ValueError, match="without ':'"):
        zoos.register_zoo("a:b", models=list, package="timm")(lambda name: None)
    assert zoos.split_spec("timm:vit_tiny_patch16_224") == ("timm", "vit_tiny_patch16_224")


def test_timm_larger_variants_are_the_family_in_increasing_size(monkeypatch) -> None:
    """Only the family's models are counted; those that cannot be built on meta and ``test_*`` ones are left out."""
    sizes = {"fam_s": 1.0, "fam_m": 5.0, "fam_m2": 5.0, "fam_l": 9.0, "fam_broken": float("inf"), "test_fam": 0.0}
    counted = []
    monkeypatch.setattr(zoos, "_timm_family", lambda name: sorted(sizes))
    monkeypatch.setattr(zoos, "_meta_params", lambda name: counted.append(name) or sizes[name])
    assert zoos._timm_larger_variants("fam_s") == ["fam_m", "fam_m2", "fam_l"]  # ties by name length, then name
    assert zoos._timm_larger_variants("fam_m2") == ["fam_l"] and zoos._timm_larger_variants("fam_l") == []
    assert set(counted) <= set(sizes)
    assert zoos.get_zoo("timm").variants is zoos._timm_larger_variants and zoos.get_zoo("smp").variants is None


def test_timm_family_is_its_module_without_deprecated_aliases() -> None:
    family = zoos._timm_family("resnet18")
    assert {"resnet10t", "resnet18", "resnet50"} <= set(family) and "ssl_resnet18" not in family
    assert zoos._timm_larger_variants("resnest14d")[0] == "resnest26d"
    with pytest.raises(ValueError, match="timm has no model 'nope'"):
        zoos._timm_family("nope")


def test_call_takes_a_tensor_positional_or_keyword_arguments() -> None:
    model = TwoArgs()
    a, b = torch.randn(2, 4), torch.randn(2, 4)
    expected = model(a, b)
    assert torch.equal(zoos.call(model, (a, b)), expected)
    assert torch.equal(zoos.call(model, {"a": a, "b": b, "scale": 2.0}), 2 * expected)
    assert torch.equal(zoos.call(nn.Identity(), a), a)
    with pytest.raises(TypeError, match="tensor, a tuple or a dict"):
        zoos.call(model, [a, b])


def test_outputs_are_flattened_and_summed_into_a_loss() -> None:
    leaf = torch.ones(2, requires_grad=True)
    output = OrderedDict(
        logits=leaf * 2, cache=object(), extra=[(leaf * 3, None), {"ids": torch.tensor([1, 2]), "n": 4}]
    )
    tensors = list(zoos.output_tensors(output))
    assert [t.dtype for t in tensors] == [torch.float32, torch.float32, torch.int64]
    zoos.training_loss(output).backward()
    assert torch.equal(leaf.grad, torch.full((2,), 5.0))  # the integer ids are not part of the loss
    with pytest.raises(RuntimeError, match="nothing to back-propagate"):
        zoos.training_loss({"ids": torch.tensor([1]), "x": torch.ones(1)})


def test_describe_shows_the_shapes_of_every_form() -> None:
    assert zoos.describe(torch.zeros(2, 3, 64, 64)) == "3x64x64"  # per sample, as older records were
    assert zoos.describe(([torch.zeros(3, 8, 8)],)) == "[3x8x8]"
    assert zoos.describe((torch.zeros(1, 3), torch.zeros(1, 3))) == "1x3, 1x3"
    assert zoos.describe({"input_ids": torch.zeros(1, 8), "use_cache": False}) == "input_ids 1x8, use_cache False"


def test_first_accepted_skips_inputs_the_model_refuses() -> None:
    model = nn.Linear(4, 2)
    wrong, right, last = torch.randn(1, 3), torch.randn(1, 4), torch.randn(1, 5)
    assert zoos.first_accepted(model, [wrong, right, last]) is right
    assert zoos.first_accepted(model, [wrong, last]) is last  # the last is not tried


def test_shrunk_config_keeps_tied_sizes_consistent() -> None:
    from transformers import Cosmos3EdgeTextConfig, DeepseekV3Config

    tiny = zoos.shrunk(DeepseekV3Config())
    assert tiny["num_hidden_layers"] == 2 and tiny["hidden_size"] == 64 and tiny["vocab_size"] == 128
    assert tiny["qk_nope_head_dim"] + tiny["qk_rope_head_dim"] == tiny["qk_head_dim"] < 192
    assert tiny["n_routed_experts"] <= 4 and tiny["num_experts_per_tok"] <= 2
    assert all(v < 128 for k, v in tiny.items() if k.endswith("_token_id") and isinstance(v, int))
    cosmos = zoos.shrunk(Cosmos3EdgeTextConfig())  # rotary sections split half a head
    assert sum(cosmos["rope_parameters"]["mrope_section"]) == cosmos["head_dim"] // 2 == 8


def _one_image(inputs) -> bool:
    (images,) = inputs
    return isinstance(images, list) and images[0].shape == (3, 128, 128)


def _two_frames(inputs) -> bool:
    return len(inputs) == 2 and inputs[0].shape == inputs[1].shape == (2, 3, 128, 128)


def _tokens(*names: str):
    def check(inputs) -> bool:
        ids = inputs["input_ids"]
        return set(inputs) == {"input_ids", *names} and ids.shape == (zoos.BATCH, 8) and int(ids.max()) < zoos.VOCAB

    return check


# a tiny model of each zoo (ones that build and run in well under a second), and what its inputs are
REPRESENTATIVES = {
    "torchvision:resnet18": lambda x: x.shape == (2, 3, 64, 64),
    "torchvision-detection:ssdlite320_mobilenet_v3_large": _one_image,
    "torchvision-segmentation:lraspp_mobilenet_v3_large": lambda x: x.shape == (2, 3, 64, 64),
    "torchvision-video:r3d_18": lambda x: x.shape == (2, 3, 4, 64, 64),
    "torchvision-flow:raft_small": _two_frames,
    "timm:resnet10t": lambda x: x.shape == (2, 3, 64, 64),
    "transformers:llama": _tokens("use_cache"),
    "transformers:t5": _tokens("decoder_input_ids", "use_cache"),  # an encoder-decoder, which also returns a cache
    "transformers:vit": lambda x: set(x) == {"pixel_values"} and x["pixel_values"].shape == (zoos.BATCH, 3, 64, 64),
    "smp:unet": lambda x: x.shape == (2, 3, 64, 64),
    "monai:UNet": lambda x: x.shape == (2, 1, 64, 64),
    "monai:DynUNet": lambda x: x.shape == (2, 1, 32, 32, 32),
}


@pytest.mark.parametrize("spec", list(REPRESENTATIVES))
def test_representative_models_build_and_run_on_their_inputs(spec: str) -> None:
    model, inputs = zoos.build(spec)
    assert REPRESENTATIVES[spec](inputs) and not model.training
    with torch.no_grad():
        outputs = list(zoos.output_tensors(zoos.call(model, inputs)))
    assert outputs and all(torch.isfinite(t).all() for t in outputs if t.is_floating_point())
    if spec.startswith("transformers:"):
        assert model.config.num_hidden_layers == 2 and sum(p.numel() for p in model.parameters()) < 500_000
