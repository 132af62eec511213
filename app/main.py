"""``llm4seg-app [PATH]``: start the LLM4Seg app, optionally opening PATH.

PATH is an image file (NIfTI, NRRD, MetaImage, DICOM, PNG/JPG/BMP/TIFF) or a
DICOM folder; ``--demo`` opens the demo chest CT. Without a display (a
server, an SSH session without X forwarding) the app says so and exits with
status 2 instead of crashing; ``llm4seg segment`` is the headless way.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "has_display"]

_log = logging.getLogger("llm4seg_app")


def has_display() -> bool:
    """Whether Qt can open a window here (Linux/BSD need X11 or Wayland, or a Qt platform set)."""
    if not sys.platform.startswith(("linux", "freebsd", "openbsd", "netbsd")):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or os.environ.get("QT_QPA_PLATFORM"))


def _parser() -> argparse.ArgumentParser:
    from llm4seg_core import __version__

    parser = argparse.ArgumentParser(
        prog="llm4seg-app",
        description="LLM4Seg: open a CT, MR, DICOM folder or 2-D picture, segment it, correct "
                    "the mask, fine-tune the model and save. Research and demo software: not "
                    "for diagnosis.",
    )
    parser.add_argument("path", nargs="?", help="an image file or a DICOM folder to open")
    parser.add_argument("--demo", action="store_true", help="open the demo chest CT (lung2)")
    parser.add_argument("--version", action="version", version=f"llm4seg-app {__version__}")
    return parser


def _excepthook(window_ref: list) -> object:
    """Unexpected errors in Qt callbacks: logged and shown, and the app keeps running."""

    def hook(exc_type: type[BaseException], exc: BaseException, tb: object) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)  # type: ignore[arg-type]
            return
        text = "".join(traceback.format_exception(exc_type, exc, tb))  # type: ignore[arg-type]
        _log.error("unexpected error:\n%s", text)
        from qtpy.QtWidgets import QMessageBox

        from llm4seg_core.errors import LLM4SegError

        message = str(exc) if isinstance(exc, LLM4SegError) else (
            f"Unexpected error: {exc!r}\n\nThe app keeps running; details are in the log.")
        parent = window_ref[0] if window_ref else None
        try:
            QMessageBox.critical(parent, "LLM4Seg", message)
        except Exception:  # noqa: BLE001 - never raise from the hook itself
            sys.__excepthook__(exc_type, exc, tb)  # type: ignore[arg-type]

    return hook


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.path and not Path(args.path).expanduser().exists():
        print(f"llm4seg-app: no such file or folder: {args.path}", file=sys.stderr)
        return 2
    if not has_display():
        print("llm4seg-app: no display here (DISPLAY/WAYLAND_DISPLAY not set). Run it on a "
              "desktop, through `xvfb-run`, or use `llm4seg segment` for headless work.",
              file=sys.stderr)
        return 2

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights never come from a hub at run time
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        app = QApplication([sys.argv[0] if sys.argv else "llm4seg-app"])
        app.setApplicationName("llm4seg-app")
        app.setApplicationDisplayName("LLM4Seg")
        app.setOrganizationName("LLM4Seg")
    from llm4seg_app.window import MainWindow  # imports napari (slow): after the checks

    window_ref: list = []
    sys.excepthook = _excepthook(window_ref)  # type: ignore[assignment]
    window = MainWindow()
    window_ref.append(window)
    window.show()
    # Ctrl+C in the terminal closes the window as the close button does (asking about unsaved
    # work); the timer lets Python look at signals while Qt's loop runs
    signal.signal(signal.SIGINT, lambda *_: window.close())
    tick = QTimer()
    tick.timeout.connect(lambda: None)
    tick.start(300)
    if args.demo:
        window.open_demo()
    elif args.path:
        window.open_path(args.path)
    return int(app.exec())


if __name__ == "__main__":
    raise SystemExit(main())
