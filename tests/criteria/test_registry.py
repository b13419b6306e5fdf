"""The criteria registry and its entry-point plugins, loaded for real from a dist-info on sys.path."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import residual_prune as rp
from residual_prune.criteria import _registry

PLUGIN_SRC = Path(__file__).resolve().parents[2] / "examples" / "plugin" / "src"
PLUGIN_ENTRY = "residual_prune_example_plugin:param_count_importance"
BUILTINS = ["grasp", "l1", "random", "snip", "synflow"]
TEST_MODULE_PREFIXES = ("residual_prune_example_plugin", "rptest_")


@pytest.fixture(autouse=True)
def clean_registry():
    """Restore the registry after each test (autouse: set up first, so torn down after monkeypatch).

    Yields the criteria known before the test: the built-ins plus any plugin installed for real
    (e.g. the example plugin after ``pip install ./examples/plugin``).
    """
    saved = {k: v for k, v in _registry._registry.items() if not v.source.startswith("plugin ")}
    yield set(rp.list_criteria())
    _registry._registry.clear()
    _registry._registry.update(saved)
    for name in [m for m in sys.modules if m.startswith(TEST_MODULE_PREFIXES)]:
        del sys.modules[name]
    rp.reload_plugins()


@pytest.fixture
def install(tmp_path, monkeypatch):
    """Make a distribution with criterion entry points (and optional modules) importable."""

    def install(
        dist: str,
        entry_points: dict[str, str],
        modules: dict[str, str] | None = None,
        extra_paths: tuple[Path, ...] = (),
    ) -> None:
        root = tmp_path / dist
        info = root / f"{dist}-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[{rp.ENTRY_POINT_GROUP}]\n{lines}")
        for module, source in (modules or {}).items():
            (root / f"{module}.py").write_text(textwrap.dedent(source))
        for path in (*extra_paths, root):
            monkeypatch.syspath_prepend(str(path))

    return install


@pytest.fixture
def example_plugin(install):
    install("residual_prune_example_plugin", {"param_count": PLUGIN_ENTRY}, extra_paths=(PLUGIN_SRC,))
    rp.reload_plugins()


class Block(nn.Module):
    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(hidden, channels, 3, padding=1, bias=False)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(x)))


class Net(nn.Module):
    """Four removable blocks of 72 * hidden parameters each: 576, 144, 432, 288."""

    def __init__(self, hidden=(8, 2, 6, 4)):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = nn.Sequential(*(Block(4, h) for h in hidden))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


@pytest.fixture
def net():
    torch.manual_seed(0)
    return Net()


@pytest.fixture
def x():
    return torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g)


def _user_names():
    return [n for n, info in _registry._registry.items() if info.source == "user"]


# --- built-in registry -----------------------------------------------------------------------


def test_builtins_are_listed_sorted_and_marked_builtin():
    names = rp.list_criteria()
    assert names == sorted(names) and set(BUILTINS) <= set(names)
    assert all(rp.get_criterion_info(n).source == "builtin" for n in BUILTINS)
    assert [n for n in BUILTINS if rp.get_criterion_info(n).requires_data] == ["grasp", "snip"]


def _constant(model, blocks, data, **kwargs):
    return {b.name: 0.0 for b in blocks}


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("rptest_s*", ["rptest_s1", "rptest_s2"]),
        ("*_s?", ["rptest_s1", "rptest_s2"]),
        ("rptest_*", ["rptest_a", "rptest_s1", "rptest_s2"]),
        ("*[0-9]", ["rptest_s1", "rptest_s2"]),
        ("rptest_nope*", []),
    ],
)
def test_list_criteria_wildcard(pattern, expected):
    for name in ["rptest_s2", "rptest_a", "rptest_s1"]:
        rp.register_criterion(name)(_constant)
    assert [n for n in rp.list_criteria(pattern) if n.startswith("rptest_")] == expected


def test_list_criteria_wildcard_on_builtins():
    assert {"snip", "synflow"} <= set(rp.list_criteria("s*"))
    assert all(n.startswith("s") for n in rp.list_criteria("s*"))
    assert "l1" in rp.list_criteria("?1") and "grasp" in rp.list_criteria("*sp")


def test_unknown_criterion_lists_known_ones():
    with pytest.raises(rp.UnknownCriterionError) as info:
        rp.get_criterion("nope")
    message = str(info.value)
    assert "'nope'" in message
    assert all(name in message for name in BUILTINS)
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)


def test_plan_pruning_rejects_unknown_criterion(net, x):
    with pytest.raises(rp.UnknownCriterionError, match="random"):
        rp.plan_pruning(net, criterion="nope", n=1, example_inputs=x)


def test_register_duplicate_name_needs_overwrite():
    def first(model, blocks, data, **kwargs):
        return {b.name: 0.0 for b in blocks}

    def second(model, blocks, data, **kwargs):
        return {b.name: 1.0 for b in blocks}

    rp.register_criterion("rptest_dup")(first)
    with pytest.raises(rp.InvalidArgumentError, match="rptest_dup"):
        rp.register_criterion("rptest_dup")(second)
    assert rp.get_criterion("rptest_dup") is first
    rp.register_criterion("rptest_dup", overwrite=True)(second)
    assert rp.get_criterion("rptest_dup") is second
    with pytest.raises(rp.InvalidArgumentError, match="already registered"):
        rp.register_criterion("l1")(first)
    assert rp.get_criterion_info("l1").source == "builtin"


@pytest.mark.parametrize("name", ["", None, 3])
def test_register_rejects_bad_names(name):
    with pytest.raises(rp.InvalidArgumentError):
        rp.register_criterion(name)


def test_register_rejects_non_callable():
    with pytest.raises(rp.InvalidArgumentError, match="callable"):
        rp.register_criterion("rptest_nc")(42)
    assert "rptest_nc" not in rp.list_criteria()


def test_user_criterion_is_used_and_survives_reload(net, x):
    @rp.register_criterion("rptest_reverse")
    def reverse(model, blocks, data, **kwargs):
        return {b.name: -float(b.order) for b in blocks}  # the last blocks are the least important

    assert rp.plan_pruning(net, criterion="rptest_reverse", n=2, example_inputs=x).removed == ["blocks.2", "blocks.3"]
    rp.reload_plugins()
    assert rp.get_criterion_info("rptest_reverse").source == "user"
    assert "rptest_reverse" in _user_names()


# --- entry-point plugins ---------------------------------------------------------------------


def test_example_pyproject_declares_the_entry_point():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((PLUGIN_SRC.parent / "pyproject.toml").read_text())["project"]
    assert project["entry-points"][rp.ENTRY_POINT_GROUP] == {"param_count": PLUGIN_ENTRY}


@pytest.mark.usefixtures("example_plugin")
def test_example_plugin_is_found_and_used(net, x, clean_registry):
    assert set(rp.list_criteria()) == clean_registry | {"param_count"}
    assert rp.list_criteria("pa*") == ["param_count"]
    info = rp.get_criterion_info("param_count")
    assert info.source == f"plugin {PLUGIN_ENTRY}"
    assert not info.requires_data and not info.gradient_based
    assert info.fn.__module__ == "residual_prune_example_plugin"

    blocks = {b.name: b for b in rp.find_blocks(net, x)}
    plan = rp.plan_pruning(net, criterion="param_count", n=2, example_inputs=x)
    assert plan.scores == {name: float(b.params) for name, b in blocks.items()}
    assert plan.removed == ["blocks.1", "blocks.3"]  # the two smallest blocks, not the first two
    assert plan.criterion == "param_count"

    with pytest.raises(rp.InvalidArgumentError, match="seed"):
        rp.plan_pruning(net, criterion="param_count", n=2, example_inputs=x, seed=1)
    pruned = rp.prune_layers(net, criterion="param_count", n=2, example_inputs=x)
    assert list(pruned.blocks._modules) == ["0", "2"]
    removed_params = blocks["blocks.1"].params + blocks["blocks.3"].params
    assert sum(p.numel() for p in net.parameters()) - sum(p.numel() for p in pruned.parameters()) == removed_params


def test_plugin_disappears_after_reload_without_it(install, monkeypatch, clean_registry):
    install("rptest_transient", {"rptest_transient": PLUGIN_ENTRY}, extra_paths=(PLUGIN_SRC,))
    rp.reload_plugins()
    assert "rptest_transient" in rp.list_criteria()
    monkeypatch.undo()
    rp.reload_plugins()
    assert set(rp.list_criteria()) == clean_registry
    with pytest.raises(rp.UnknownCriterionError):
        rp.get_criterion("rptest_transient")


def test_broken_plugins_warn_and_leave_the_rest_working(install, net, batch, clean_registry):
    install(
        "rptest_broken",
        {
            "rptest_import": "rptest_raises:fn",
            "rptest_attr": "rptest_ok:missing",
            "rptest_notcallable": "rptest_ok:CONSTANT",
            "rptest_good": "rptest_ok:fn",
        },
        modules={
            "rptest_raises": "raise ImportError('needs a package that is not installed')\n",
            "rptest_ok": """
                CONSTANT = 3

                def fn(model, blocks, data, **kwargs):
                    return {b.name: float(b.order) for b in blocks}
            """,
        },
    )
    with pytest.warns(rp.PluginWarning) as record:
        rp.reload_plugins()
    messages = [str(w.message) for w in record if issubclass(w.category, rp.PluginWarning)]
    assert len(messages) == 3
    for name, cause in [
        ("rptest_import", "ImportError"),
        ("rptest_attr", "AttributeError"),
        ("rptest_notcallable", "InvalidArgumentError"),
    ]:
        assert any(f"'{name}'" in m and cause in m for m in messages), (name, messages)
    assert rp.list_criteria("rptest_*") == ["rptest_good"]
    assert set(rp.list_criteria()) == clean_registry | {"rptest_good"}

    x, y = batch
    assert rp.plan_pruning(net, criterion="rptest_good", n=1, example_inputs=x[:1]).removed == ["blocks.0"]
    options = {"random": {"seed": 0}, "snip": {"progress": False}, "grasp": {"progress": False}}
    for name in BUILTINS:
        plan = rp.plan_pruning(net, criterion=name, n=1, data=[(x, y)], **options.get(name, {}))
        assert len(plan.removed) == 1 and set(plan.scores) == {f"blocks.{i}" for i in range(4)}, name


def test_plugin_with_builtin_name_is_ignored(install):
    install(
        "rptest_shadow",
        {"grasp": "rptest_shadow_mod:fn"},
        modules={"rptest_shadow_mod": "def fn(model, blocks, data, **kwargs):\n    return {}\n"},
    )
    builtin = rp.get_criterion("grasp")
    with pytest.warns(rp.PluginWarning, match="'grasp'.*built-in"):
        rp.reload_plugins()
    info = rp.get_criterion_info("grasp")
    assert info.source == "builtin" and info.fn is builtin
    assert "rptest_shadow_mod" not in sys.modules  # never imported


def test_plugin_requires_data_attribute_is_honoured(install, net, x, batch):
    install(
        "rptest_needs_data",
        {"rptest_data": "rptest_data_mod:fn"},
        modules={
            "rptest_data_mod": """
            calls = []

            def fn(model, blocks, data, **kwargs):
                calls.append(data)
                return {b.name: float(b.order) for b in blocks}

            fn.requires_data = True
            fn.gradient_based = True
        """
        },
    )
    rp.reload_plugins()
    info = rp.get_criterion_info("rptest_data")
    assert info.requires_data and info.gradient_based
    calls = sys.modules["rptest_data_mod"].calls
    with pytest.raises(rp.MissingDataError, match="rptest_data"):
        rp.plan_pruning(net, criterion="rptest_data", n=1, example_inputs=x)
    assert calls == []
    data = [batch]
    assert rp.plan_pruning(net, criterion="rptest_data", n=1, data=data).removed == ["blocks.0"]
    assert len(calls) == 1 and list(calls[0]) == data


def test_registry_is_clean_between_tests():  # runs last: nothing leaked from the tests above
    assert _user_names() == []
    assert rp.list_criteria("rptest_*") == []
    assert set(BUILTINS) <= set(rp.list_criteria())
    assert not [m for m in sys.modules if m.startswith("rptest_")]
