"""Plugin registry behaviour: lazy built-ins, entry points, clashes, errors, specs."""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from daefr import registry as reg
from daefr.errors import ConfigError, PluginLoadError, UnknownComponentError


@pytest.fixture()
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """A fresh Registry plus a folder on sys.path for fake modules and fake distributions."""
    monkeypatch.syspath_prepend(str(tmp_path))
    tag = uuid.uuid4().hex[:8]
    ctx = {"dir": tmp_path, "tag": tag, "registry": reg.Registry()}
    yield ctx
    for name in [m for m in sys.modules if tag in m]:
        del sys.modules[name]
    importlib.invalidate_caches()


def _module(ctx: dict, name: str, body: str) -> str:
    """Write a module ``<name>_<tag>`` and return its importable name."""
    mod = f"{name}_{ctx['tag']}"
    (ctx["dir"] / f"{mod}.py").write_text(textwrap.dedent(body))
    importlib.invalidate_caches()
    return mod


def _distribution(ctx: dict, dist: str, entry_points: dict[str, dict[str, str]], summary: str = "") -> None:
    """Install a fake distribution (dist-info with METADATA + entry_points.txt) on sys.path."""
    info = ctx["dir"] / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\nSummary: {summary}\n")
    lines = []
    for group, eps in entry_points.items():
        lines.append(f"[daefr.{group}]")
        lines += [f"{name} = {target}" for name, target in eps.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    importlib.invalidate_caches()


COMPONENT = """
class Widget:
    '''A test component with two arguments.'''

    def __init__(self, width: int = 4, depth: int = 2) -> None:
        self.width = width
        self.depth = depth
"""


def test_builtins_are_lazy_import_strings(sandbox: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _module(sandbox, "lazy_builtin", COMPONENT)
    monkeypatch.setitem(reg.BUILTINS["encoders"], "widget", (f"{mod}:Widget", "a widget"))
    entries = {e.name: e for e in sandbox["registry"].entries("encoders")}
    assert entries["widget"].builtin and entries["widget"].description == "a widget"
    assert mod not in sys.modules, "listing must not import the component"
    obj = sandbox["registry"].build("encoders", "widget")
    assert mod in sys.modules and obj.width == 4


def test_every_builtin_target_imports() -> None:
    for entry in reg.REGISTRY.entries():
        if entry.builtin:
            assert callable(entry.load()), entry


def test_real_example_plugin_is_discovered_through_entry_points() -> None:
    registry = reg.Registry()
    entry = registry.entry("losses", "charbonnier")
    assert entry.source == "daefr-example-domain" and not entry.builtin
    assert entry.target == "daefr_example_domain.losses:CharbonnierLoss"
    loss = registry.build("losses", {"name": "charbonnier", "eps": 0.01})
    assert type(loss).__module__ == "daefr_example_domain.losses" and loss.eps == 0.01


def test_plugin_listing_does_not_import(sandbox: dict) -> None:
    mod = _module(sandbox, "plug_lazy", COMPONENT)
    _distribution(sandbox, f"plug-lazy-{sandbox['tag']}", {"fusions": {"gadget": f"{mod}:Widget"}}, "Gadgets")
    entry = sandbox["registry"].entry("fusions", "gadget")
    assert entry.source == f"plug-lazy-{sandbox['tag']}" and entry.version == "1.2.3"
    assert entry.description == "Gadgets" and entry.target == f"{mod}:Widget"
    assert mod not in sys.modules
    assert sandbox["registry"].build("fusions", {"name": "gadget", "depth": 7}).depth == 7


def test_builtin_wins_over_plugin_with_warning(sandbox: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    builtin_mod = _module(sandbox, "clash_builtin", COMPONENT)
    plugin_mod = _module(sandbox, "clash_plugin", COMPONENT)
    monkeypatch.setitem(reg.BUILTINS["codebooks"], "dup", (f"{builtin_mod}:Widget", "built-in"))
    dist = f"clash-dist-{sandbox['tag']}"
    _distribution(sandbox, dist, {"codebooks": {"dup": f"{plugin_mod}:Widget"}})
    with pytest.warns(RuntimeWarning) as record:
        entry = sandbox["registry"].entry("codebooks", "dup")
    assert entry.builtin and entry.target == f"{builtin_mod}:Widget"
    message = str(record[0].message)
    assert builtin_mod in message and plugin_mod in message and dist in message


def test_same_target_twice_is_a_noop(sandbox: dict) -> None:
    mod = _module(sandbox, "twice", COMPONENT)
    _distribution(sandbox, f"twice-a-{sandbox['tag']}", {"predictors": {"same": f"{mod}:Widget"}})
    _distribution(sandbox, f"twice-b-{sandbox['tag']}", {"predictors": {"same": f"{mod}:Widget"}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        entry = sandbox["registry"].entry("predictors", "same")
        sandbox["registry"].register("predictors", "same", f"{mod}:Widget")
    assert entry.target == f"{mod}:Widget"


def test_broken_plugin_breaks_only_itself(sandbox: dict) -> None:
    good = _module(sandbox, "good_plug", COMPONENT)
    bad = _module(sandbox, "bad_plug", "raise RuntimeError('boom at import')\n")
    dist = f"broken-dist-{sandbox['tag']}"
    _distribution(sandbox, dist, {"losses": {"broken": f"{bad}:Thing", "fine": f"{good}:Widget"}})
    names = [e.name for e in sandbox["registry"].entries("losses")]
    assert "broken" in names and "fine" in names
    with pytest.raises(PluginLoadError) as info:
        sandbox["registry"].build("losses", "broken")
    assert dist in str(info.value) and "boom at import" in str(info.value)
    assert sandbox["registry"].build("losses", "fine").width == 4


def test_unknown_name_lists_and_suggests(sandbox: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _module(sandbox, "named", COMPONENT)
    monkeypatch.setitem(reg.BUILTINS["encoders"], "vqgan", (f"{mod}:Widget", "stand-in"))
    with pytest.raises(UnknownComponentError) as info:
        sandbox["registry"].build("encoders", "vqgna")
    text = str(info.value)
    assert "Did you mean 'vqgan'" in text and "Available:" in text and "vqgan" in text.split("Available:")[1]


def test_unknown_group_suggests() -> None:
    with pytest.raises(UnknownComponentError, match="Did you mean 'encoders'"):
        reg.REGISTRY.entries("encoder")


def test_unknown_kwargs_rejected_with_suggestion(sandbox: dict) -> None:
    sandbox["registry"].register("decoders", "widget", _load(_module(sandbox, "kw", COMPONENT)))
    with pytest.raises(ConfigError) as info:
        sandbox["registry"].build("decoders", {"name": "widget", "widht": 3})
    assert "'widht'" in str(info.value) and "Did you mean 'width'" in str(info.value)


def test_disable_plugin_autoload(sandbox: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(reg.DISABLE_ENV, "1")
    registry = reg.Registry()
    assert all(e.builtin for e in registry.entries())
    with pytest.raises(UnknownComponentError):
        registry.entry("losses", "charbonnier")


def test_spec_forms(sandbox: dict) -> None:
    mod = _module(sandbox, "forms", COMPONENT)
    registry = sandbox["registry"]
    registry.register("associations", "widget", f"{mod}:Widget")
    assert registry.build("associations", "widget").width == 4
    assert registry.build("associations", {"name": "widget", "width": 9}).width == 9
    built = registry.build("associations", {"class_path": f"{mod}.Widget", "init_args": {"depth": 5}})
    assert built.depth == 5
    assert registry.build("associations", "widget", width=6).width == 6, "defaults fill missing args"
    assert registry.build("associations", {"name": "widget", "width": 1}, width=6).width == 1
    with pytest.raises(ConfigError, match="needs a 'name'"):
        registry.build("associations", {"width": 3})
    with pytest.raises(ConfigError, match="init_args"):
        registry.build("associations", {"class_path": f"{mod}.Widget", "width": 3})
    with pytest.raises(ConfigError):
        registry.build("associations", 42)


def _load(mod: str) -> type:
    return importlib.import_module(mod).Widget  # type: ignore[no-any-return]
