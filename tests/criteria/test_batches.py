"""Data-driven criteria on Hugging Face style dict batches, and with a user's loss_fn / forward_fn."""

from __future__ import annotations

import collections
import dataclasses
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import residual_prune as rp

IDS = torch.randint(0, 10, (6, 5), generator=torch.Generator().manual_seed(0))
LABELS = torch.tensor([0, 1, 2, 0, 1, 2])


@dataclasses.dataclass
class Output(collections.OrderedDict):
    """Like Hugging Face's ``ModelOutput``: a dataclass that is also an ordered dict of its set fields."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if getattr(self, field.name) is not None:
                self[field.name] = getattr(self, field.name)


class LinearResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return x + self.fc(x)


class TinyClassifier(nn.Module):
    """Hugging Face style: token ids (and optional labels) by keyword, ``.loss`` and ``.logits`` out."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(10, 4)
        self.blocks = nn.Sequential(LinearResidual(), LinearResidual(), LinearResidual())
        self.head = nn.Linear(4, 3)

    def logits(self, input_ids):
        return self.head(self.blocks(self.embed(input_ids)).mean(1))

    def forward(self, input_ids=None, labels=None):
        logits = self.logits(input_ids)
        return Output(loss=F.cross_entropy(logits, labels) if labels is not None else None, logits=logits)


class AttributeOutputs(TinyClassifier):
    """The same network returning a plain object with ``.loss`` and ``.logits`` attributes."""

    def forward(self, input_ids=None, labels=None):
        output = super().forward(input_ids, labels)
        return types.SimpleNamespace(loss=output.loss, logits=output.logits)


class NoLoss(TinyClassifier):
    """Takes labels but returns no loss."""

    def forward(self, input_ids=None, labels=None):
        return Output(logits=self.logits(input_ids))


def _blocks() -> list[rp.ResidualBlock]:
    return [b for b in rp.find_blocks(TinyClassifier(), IDS) if b.removable]


def _score(criterion: str, data, model: nn.Module | None = None, **options) -> dict[str, float]:
    model = model or TinyClassifier()
    return rp.get_criterion(criterion)(model, _blocks(), data, progress=False, **options)


def _dicts(with_labels: bool = True) -> list[dict[str, torch.Tensor]]:
    batches = [{"input_ids": IDS[:3], "labels": LABELS[:3]}, {"input_ids": IDS[3:], "labels": LABELS[3:]}]
    return batches if with_labels else [{"input_ids": b["input_ids"]} for b in batches]


def _pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(b["input_ids"], b["labels"]) for b in _dicts()]


@pytest.mark.parametrize(
    ("criterion", "options"),
    [("snip", {}), ("grasp", {"temperature": 1.0}), ("kl", {})],
)
def test_dict_batches_score_as_the_equivalent_pairs(criterion: str, options: dict) -> None:
    """The model's own outputs.loss (here the cross-entropy) on dict batches gives the scores of (x, y) pairs."""
    expected = _score(criterion, _pairs(), num_batches=2, **options)
    assert set(expected) == {"blocks.0", "blocks.1", "blocks.2"} and any(expected.values())
    assert _score(criterion, _dicts(), num_batches=2, **options) == pytest.approx(expected, rel=1e-6)
    assert _score(criterion, _dicts(), AttributeOutputs(), num_batches=2, **options) == pytest.approx(
        expected, rel=1e-6
    )


def test_kl_and_activation_criteria_read_dict_batches_without_labels() -> None:
    for criterion in ("kl", "hrank", "expectabs"):
        expected = _score(criterion, _pairs(), num_batches=2)
        assert _score(criterion, _dicts(with_labels=False), num_batches=2) == pytest.approx(expected), criterion


def test_pls_reads_the_labels_of_dict_batches() -> None:
    expected = _score("pls", _pairs(), num_batches=2)
    assert _score("pls", _dicts(), num_batches=2) == pytest.approx(expected)


def test_a_single_dict_is_one_batch() -> None:
    assert _score("snip", _dicts()[0]) == pytest.approx(_score("snip", [_pairs()[0]]))


@pytest.mark.parametrize(("criterion", "loss_calls"), [("snip", 2), ("grasp", 3)])  # grasp: the last batch once
def test_loss_fn_and_forward_fn_are_used(criterion: str, loss_calls: int) -> None:
    calls = collections.Counter()

    def forward_fn(model, batch):  # batches of a form of the user's own
        calls["forward"] += 1
        return model(input_ids=batch["tokens"])

    def loss_fn(outputs, batch):
        calls["loss"] += 1
        return F.cross_entropy(outputs.logits, batch["target"])

    own = [{"tokens": b["input_ids"], "target": b["labels"]} for b in _dicts()]
    options = {"temperature": 1.0} if criterion == "grasp" else {}
    scores = _score(criterion, own, num_batches=2, loss_fn=loss_fn, forward_fn=forward_fn, **options)
    assert calls == {"forward": loss_calls, "loss": loss_calls}
    assert scores == pytest.approx(_score(criterion, _dicts(), num_batches=2, **options), rel=1e-6)


def test_a_loss_fn_can_give_dict_batches_the_temperature_of_pairs() -> None:
    def scaled(outputs, batch):
        return F.cross_entropy(outputs.logits / 200.0, batch["labels"])

    assert _score("grasp", _dicts(), num_batches=2, loss_fn=scaled) == pytest.approx(
        _score("grasp", _pairs(), num_batches=2), rel=1e-6
    )


def test_forward_fn_serves_the_forward_only_criteria() -> None:
    own = [(b["labels"], b["input_ids"]) for b in _dicts()]  # targets first: model(batch[0]) would fail

    def forward_fn(model, batch):
        return model(input_ids=batch[1])

    assert _score("kl", own, num_batches=2, forward_fn=forward_fn) == pytest.approx(_score("kl", _pairs()))


def test_a_dict_batch_without_labels_has_no_loss() -> None:
    with pytest.raises(rp.DataError, match=r"batch 0 is a dict without 'labels' .*input_ids=\(3, 5\).*loss_fn="):
        _score("snip", _dicts(with_labels=False))


def test_a_criterion_that_needs_class_labels_says_so() -> None:
    with pytest.raises(rp.DataError, match=r"'pls' needs class labels, but batch 0 .* has none.*'labels'"):
        _score("pls", _dicts(with_labels=False))


def test_a_model_that_returns_no_loss_is_named() -> None:
    with pytest.raises(rp.DataError, match=r"returned no loss for batch 0, which has 'labels'.*loss_fn="):
        _score("snip", _dicts(), NoLoss())


def test_a_loss_fn_must_return_a_scalar() -> None:
    with pytest.raises(rp.DataError, match=r"loss_fn gave a Tensor of shape \(3,\) for batch 0.*scalar loss"):
        _score(
            "snip",
            _dicts(),
            loss_fn=lambda outputs, batch: F.cross_entropy(outputs.logits, batch["labels"], reduction="none"),
        )


def test_dict_keys_the_model_does_not_take_are_a_data_error() -> None:
    with pytest.raises(rp.DataError, match=r"batch 0 \(ids=\(3, 5\), labels=\(3,\)\) does not fit.*forward arguments"):
        _score("snip", [{"ids": IDS[:3], "labels": LABELS[:3]}])


def test_a_batch_of_another_form_needs_a_forward_fn() -> None:
    with pytest.raises(rp.DataError, match=r"batch 0 is a str, not an \(inputs, targets\) pair.*forward_fn="):
        _score("kl", ["not a batch"])


def test_an_empty_dict_batch_is_a_data_error() -> None:
    with pytest.raises(rp.DataError, match=r"batch 1 has no samples \(input_ids=\(0, 5\), labels=\(0,\)\)"):
        _score("snip", [_dicts()[0], {"input_ids": IDS[:0], "labels": LABELS[:0]}], num_batches=2)


def test_synflow_takes_keyword_inputs_and_keeps_token_ids() -> None:
    """Ones replace floating inputs only: token ids stay ids (ones of float would not index an embedding)."""
    by_keyword = rp.get_criterion("synflow")(TinyClassifier(), _blocks(), None, example_inputs={"input_ids": IDS})
    by_position = rp.get_criterion("synflow")(TinyClassifier(), _blocks(), None, example_inputs=IDS)
    from_batches = rp.get_criterion("synflow")(TinyClassifier(), _blocks(), _dicts())
    assert by_keyword == by_position == from_batches and all(v > 0 for v in by_keyword.values())
