"""The documentation site builds offline with `mkdocs build --strict`, its API reference covers the public API."""

from __future__ import annotations

import configparser
import importlib.resources
import re
import subprocess
import sys
from pathlib import Path

import pytest

import residual_prune as rp

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as `mkdocs build --strict` writes it (a warning, e.g. a malformed docstring, fails the build)."""
    out = tmp_path_factory.mktemp("site")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml")]
    result = subprocess.run([*command, "--site-dir", str(out)], capture_output=True, text=True, cwd=out)
    assert result.returncode == 0, result.stderr
    return out


def _reference(site: Path) -> str:
    return "\n".join(page.read_text() for page in sorted((site / "reference").glob("*.html")))


def _anchors(obj: object, name: str) -> set[str]:
    """The ids under which the reference may document ``rp.<name>``: its public or its defining path."""
    defined = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
    return {f"residual_prune.{name}", defined}


def test_every_public_name_is_documented(site: Path) -> None:
    ids = set(re.findall(r'<h\d id="([\w.]+)"', _reference(site)))
    missing = [name for name in rp.__all__ if not _anchors(getattr(rp, name), name) & ids]
    assert not missing


def test_every_builtin_criterion_is_documented(site: Path) -> None:
    ids = set(re.findall(r'<h\d id="([\w.]+)"', _reference(site)))
    builtins = [rp.get_criterion_info(n) for n in rp.list_criteria() if rp.get_criterion_info(n).source == "builtin"]
    assert builtins
    assert not [info.name for info in builtins if f"{info.fn.__module__}.{info.fn.__qualname__}" not in ids]


def test_sphinx_roles_become_code_and_links(site: Path) -> None:
    html = _reference(site)
    assert not re.search(r":(func|class|meth|attr|mod|exc):", html)
    applying = (site / "reference" / "applying.html").read_text()
    # a member of an exported class links to where the reference documents it, under its public name
    load = r'<a [^>]*href="plans\.html#residual_prune\.PruningPlan\.load"[^>]*><code>PruningPlan\.load</code>'
    assert re.search(load, applying)
    # a target the reference does not document stays plain code
    assert '<span title="residual_prune.plan_check.check_plan"><code>check_plan</code></span>' in applying


def test_the_guide_links_to_names_the_reference_documents(site: Path) -> None:
    """The guide shows no signatures of its own: it links to the generated reference, and every link lands."""
    guide = (site / "guide.html").read_text()
    links = re.findall(r'href="(reference/[\w-]+\.html)#([\w.]+)"', guide)
    linked = {anchor for _, anchor in links}
    assert {"residual_prune.plan_pruning", "residual_prune.apply_plan", "residual_prune.find_blocks"} <= linked
    ids = {page: set(re.findall(r'id="([\w.]+)"', (site / page).read_text())) for page, _ in links}
    assert not [f"{page}#{anchor}" for page, anchor in links if anchor not in ids[page]]


def test_site_loads_nothing_from_the_network(site: Path) -> None:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 10
    remote = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=[\"']?(?:https?:)?//", re.IGNORECASE)
    assert not [page.relative_to(site) for page in pages if remote.search(page.read_text())]
    imports = re.compile(r"@import|url\(\s*[\"']?(?:https?:)?//", re.IGNORECASE)
    assert not [css.relative_to(site) for css in site.rglob("*.css") if imports.search(css.read_text())]


def test_changelog_page_is_the_changelog(site: Path) -> None:
    page = (site / "changelog.html").read_text()
    assert "Unreleased" in page and "0.1.0" in page


def test_the_package_ships_its_type_marker() -> None:
    assert importlib.resources.files("residual_prune").joinpath("py.typed").is_file()
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    assert "py.typed" in config["options.package_data"]["residual_prune"].split()
