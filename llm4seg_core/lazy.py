"""Lazy re-exports for a package's ``__init__`` (PEP 562 ``__getattr__`` / ``__dir__``).

A package lists its public names and the modules that define them; a name is
imported on first use and then kept in the package namespace, so importing the
package itself stays cheap (no torch, no napari, no Qt). This module imports
nothing but the standard library::

    _EXPORTS = {"Trainer": ".trainer", "LayerData": "llm4seg_napari._reader"}
    __all__ = sorted(_EXPORTS)
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of package ``package``.

    ``exports`` maps a public name to the module that defines it: absolute, or
    relative to ``package`` with a leading dot (as :func:`importlib.import_module`
    takes it). ``namespace`` is the package's ``globals()``: a loaded name is
    stored there, so ``__getattr__`` runs once per name.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
