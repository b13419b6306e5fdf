"""Griffe extension: render the Sphinx roles of the docstrings as links to the API reference.

The docstrings cross-reference with Sphinx roles (``:func:`find_blocks```,
``:class:`~residual_prune.surgery.Bypass```), which Markdown would show as literal text.
Each role becomes its target's name in code, linked to the target where the reference
renders it (the name is resolved in the docstring's own scope, as Python would) and plain
code where it does not, so a role never breaks the strict build. The reference renders the
package's exports under their public names (``residual_prune.PruningPlan``), so a member of
an exported class (``PruningPlan.load``) is linked under that name.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:func|class|meth|attr|mod|exc|data|obj):`(?P<tilde>~?)(?P<target>[\w.]+)`")


def _public_paths(package: griffe.Module) -> dict[str, str]:
    """Where each object the package exports is defined -> its public path in the package."""
    return {
        member.target_path: f"{package.path}.{name}"
        for name in package.exports or ()
        if (member := package.members.get(str(name))) is not None and member.is_alias
    }


def _resolved(scope: griffe.Object, target: str, public: dict[str, str]) -> str | None:
    """The full path of ``target`` as seen from ``scope``, or None if it names nothing known."""
    package = scope.package
    if target == package.name or target.startswith(f"{package.name}."):
        return target
    head, _, rest = target.partition(".")
    try:
        path = scope.resolve(head)
    except griffe.NameResolutionError:
        return None
    return f"{public.get(path, path)}.{rest}" if rest else path


def _link(scope: griffe.Object, match: re.Match[str], public: dict[str, str]) -> str:
    target = match["target"].lstrip(".")
    title = target.rsplit(".", 1)[-1] if match["tilde"] else target
    path = _resolved(scope, target, public)
    if path is None:
        return f"`{title}`"
    return f'<autoref identifier="{path}" optional><code>{title}</code></autoref>'


def _documented(obj: griffe.Object) -> list[griffe.Object]:
    """``obj`` and every object defined (not imported) inside it."""
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias:
            found.extend(_documented(member))
    return found


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`target``` in every docstring of the loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        public = _public_paths(pkg)
        for obj in _documented(pkg):
            if obj.docstring is not None:
                scope = obj if obj.is_module or obj.is_class else obj.parent or obj
                obj.docstring.value = _ROLE.sub(functools.partial(_link, scope, public=public), obj.docstring.value)
