"""The torch.export front-end: module calls from preserved signatures (as torch.fx and the eager recording
see them too), failures that say where and what to do."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import residual_prune as rp
from residual_prune.capture import capture

from .test_capture import Body


class BranchesOnValues(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.export cannot capture it
            return self.conv(x)
        return x


class WithBadTail(Body):
    def __init__(self):
        super().__init__()
        self.tail = BranchesOnValues()

    def forward(self, x):
        return self.tail(super().forward(x))


def test_a_failure_inside_a_submodule_names_it_its_line_and_the_fx_alternative() -> None:
    with pytest.raises(rp.TraceError) as info:
        rp.find_blocks(WithBadTail(), torch.randn(1, 3, 8, 8), frontend="export")
    message = str(info.value)
    assert "torch.export (non-strict) could not capture WithBadTail inside `tail` (BranchesOnValues)" in message
    assert "test_exporting.py" in message and "if x.sum() > 0" in message
    assert "leaf_modules=(BranchesOnValues,)" in message


def test_a_failure_in_the_top_level_forward_suggests_the_largest_submodule() -> None:
    class ChecksItsInput(Body):
        def forward(self, x):
            if x.sum() > 0:
                x = x * 2
            return super().forward(x)

    with pytest.raises(rp.TraceError, match=r"top-level forward of ChecksItsInput.*plan_pruning\(model\.blocks, "):
        rp.find_blocks(ChecksItsInput(), torch.randn(1, 3, 8, 8), frontend="export")


class ReturnsPair(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return x + self.fc(x), x.sum()


class CallsWithKeyword(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return x + self.fc(x)


class CallsOfEveryKind(nn.Module):
    """Units called in the ways a stand-in can and cannot replace."""

    def __init__(self):
        super().__init__()
        self.pair = ReturnsPair()  # its second output is read: no stand-in can give it
        self.dropped = ReturnsPair()  # its second output is dropped, as a caller drops attention weights
        self.keyword = CallsWithKeyword()
        self.shared = CallsWithKeyword()

    def forward(self, x):
        x, total = self.pair(x)
        x, _ = self.dropped(x)
        x = self.keyword(x=x)
        return self.shared(self.shared(x)) + total


@pytest.mark.parametrize("frontend", ["fx", "export", "eager"])
def test_module_calls_come_from_the_preserved_call_signatures(frontend: str) -> None:
    model, x = CallsOfEveryKind(), torch.randn(2, 4)
    traced = capture(model, x, frontend=frontend, count_flops=False)
    assert traced.call_counts["shared"] == 2 and traced.call_counts["pair"] == 1
    assert not traced.calls["pair"].returns_one_value
    assert traced.calls["dropped"].returns_one_value and traced.calls["dropped"].constants == (None,)
    assert traced.calls["keyword"].keyword == "x" and traced.calls["keyword"].first_argument is not None
    reasons = {b.name: b.reason for b in rp.find_blocks(model, x, frontend=frontend)}
    assert "gives 2 outputs" in (reasons["pair"] or "")
    assert "called 2 times" in (reasons["shared"] or "")
    assert reasons["dropped"] is None and reasons["keyword"] is None
    plan = rp.plan_pruning(model, criterion="l1", n=2, example_inputs=x, frontend=frontend)
    assert sorted(plan.removed) == ["dropped", "keyword"]
    pruned = rp.apply_plan(model, plan)
    assert (pruned.dropped.constants, pruned.keyword.keyword) == ((None,), "x")  # stand-ins shaped by the calls
    assert rp.verify(model, pruned, plan, x) == 0.0


def test_strict_export_is_an_option() -> None:
    blocks = rp.find_blocks(Body(), torch.randn(1, 3, 8, 8), frontend="export-strict")
    assert [(b.name, b.removable, b.frontend) for b in blocks] == [
        ("blocks.0", True, "export-strict"),
        ("blocks.1", True, "export-strict"),
    ]


def test_a_failed_export_does_not_print_its_partial_graph(capfd: pytest.CaptureFixture[str]) -> None:
    class Filters(nn.Module):
        """Keeps the positive entries, then branches on how many there are: no export can guard on that."""

        def forward(self, x):
            kept = x[x > 0]
            return kept * 2 if kept.numel() > 3 else kept

    with pytest.raises(rp.TraceError):
        capture(Filters(), torch.randn(8), frontend="export")
    assert "def forward" not in capfd.readouterr().err  # torch.export prints the graph it had when it failed
