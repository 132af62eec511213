"""The engine imports no GUI toolkit: every llm4seg_core module, in a fresh process."""

from __future__ import annotations

import json
import pkgutil

import llm4seg_core
from tests.helpers import run_python

GUI_MODULES = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "vispy", "magicgui", "superqt")


def engine_modules() -> list[str]:
    names = ["llm4seg_core"]
    for info in pkgutil.walk_packages(llm4seg_core.__path__, prefix="llm4seg_core."):
        if info.name.endswith("__main__"):
            continue  # runs the CLI when imported
        names.append(info.name)
    return sorted(names)


def test_engine_has_modules_to_check():
    names = engine_modules()
    assert "llm4seg_core.inference" in names and "llm4seg_core.loop" in names
    assert len(names) > 20


def test_no_engine_module_imports_a_gui_toolkit():
    code = (
        "import importlib, json, sys\n"
        f"names = {engine_modules()!r}\n"
        "for n in names: importlib.import_module(n)\n"
        f"gui = {GUI_MODULES!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in gui)))\n"
    )
    loaded = json.loads(run_python(code, timeout=300).strip().splitlines()[-1])
    assert loaded == [], f"the engine imported GUI modules: {loaded}"
