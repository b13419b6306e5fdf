"""Op tables: what each front-end's nodes do, and the registration hooks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import residual_prune as rp
from residual_prune import ops


class Scale(nn.Module):
    """Opaque to torch.fx (a leaf); returns its input in eval mode, like a dropout the library does not know."""

    def forward(self, x):
        return x * 2 if self.training else x


class Swap(nn.Module):
    """Opaque to torch.fx; swaps the last two dimensions (a layout change)."""

    def forward(self, x):
        return x.transpose(-1, -2)


class ScaledShortcut(nn.Module):
    def __init__(self):
        super().__init__()
        self.keep = Scale()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.keep(x) + self.fc(x)


class SwapsAfterTheJoin(nn.Module):
    def __init__(self, swaps: int):
        super().__init__()
        self.swaps = nn.Sequential(*(Swap() for _ in range(swaps)))
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.swaps(x + self.fc(x))


@pytest.fixture
def registries():
    identity, layout = set(ops._identity_modules), set(ops._layout_modules)
    yield
    ops._identity_modules.clear()
    ops._identity_modules.update(identity)
    ops._layout_modules.clear()
    ops._layout_modules.update(layout)


def _removable(unit: nn.Module) -> list[bool]:
    model = nn.Sequential(unit, nn.Linear(4, 4))
    x = torch.randn(2, 4, 4)
    return [b.removable for b in rp.find_blocks(model, x, frontend="fx", leaf_modules=(Scale, Swap))]


def test_register_identity_module_lets_an_opaque_module_lie_on_a_shortcut(registries) -> None:
    assert _removable(ScaledShortcut()) == [False]
    assert rp.register_identity_module(Scale) is Scale
    assert _removable(ScaledShortcut()) == [True]


def test_register_layout_module_makes_the_main_path_check_replay_an_opaque_module(registries) -> None:
    assert _removable(SwapsAfterTheJoin(1)) == [True]  # unknown: taken for a shape-keeping element-wise op
    assert rp.register_layout_module(Swap) is Swap
    assert _removable(SwapsAfterTheJoin(1)) == [False]  # replayed: one swap changes the layout
    assert _removable(SwapsAfterTheJoin(2)) == [True]  # two swaps give the input back


def test_export_ops_classify_aten_nodes() -> None:
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Conv2d(4, 4, 3, stride=2, padding=1)
            self.same = nn.Conv2d(4, 4, 3, padding=1)
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            y = self.same(x).to(torch.float32).clone()
            z = torch.nn.functional.interpolate(self.pool(self.down(y)), scale_factor=4.0)
            return (y + z.permute(0, 1, 3, 2)).flatten(1)

    program = torch.export.export(Net().eval(), (torch.randn(1, 4, 8, 8),), strict=False)
    names = {n.name: n for n in program.graph.nodes}
    table = ops.ExportOps({}, {})
    kinds = {
        name: (
            table.add_operands(n) is not None,
            table.is_identity(n),
            table.is_layout(n),
            (table.resampling(n) or ("",))[0],
        )
        for name, n in names.items()
        if n.op == "call_function"
    }
    by_op = {ops.aten_name(names[name]): kind for name, kind in kinds.items()}
    assert by_op["add"] == (True, False, False, "")
    assert by_op["to"][1] and by_op["clone"][1]  # a cast to the same dtype is the identity
    assert by_op["permute"][2] and by_op["flatten"][2]
    assert by_op["max_pool2d"][3] == "down"
    assert [kind[3] for name, kind in kinds.items() if ops.aten_name(names[name]) == "conv2d"] == ["", "down"]
    assert any(kind[3] == "up" for name, kind in kinds.items() if "upsample" in (ops.aten_name(names[name]) or ""))
