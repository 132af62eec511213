"""LLM4Seg standalone Qt app: a clinician's window on the LLM4Seg engine.

``llm4seg-app [PATH]`` (or ``python -m llm4seg_app``) opens a main window
that hosts a napari canvas (display and label editing) and the napari
plugin's LLM4Seg widget (Segment, corrections, Fine-tune, Save), with
clinician-first menus, a toolbar and a status bar. Qt and napari are
imported only by the window's modules (:mod:`llm4seg_app.window` and the
modules it composes) and :mod:`llm4seg_app.main`.
"""

from __future__ import annotations

__all__ = ["APP_TITLE", "__version__"]

from llm4seg_core import __version__

#: The window title, and the title of the app's message boxes.
APP_TITLE = "LLM4Seg"
