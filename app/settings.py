"""What the app remembers between runs, kept in QSettings under fixed keys.

Keys (all under the organisation "LLM4Seg", application "llm4seg-app"):

``paths/last_folder``   folder of the last image opened or mask saved
``paths/recent``        recently opened images and DICOM folders, newest first
``engine/device``       the device picked in the widget (auto, cpu, cuda:0, ...)
``view/window_preset``  the CT window last picked ("" = as loaded)
``edit/brush_size``     brush size of the mask tools
``window/geometry``, ``window/state``   size, position and dock layout
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import QByteArray, QSettings

ORGANIZATION = "LLM4Seg"
APPLICATION = "llm4seg-app"
MAX_RECENT = 8


def default_settings() -> QSettings:
    """The user's settings file (an INI file in the platform's config folder)."""
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope,
                     ORGANIZATION, APPLICATION)


class AppSettings:
    """Typed access to the app's QSettings."""

    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.q = qsettings if qsettings is not None else default_settings()

    def _str(self, key: str, default: str = "") -> str:
        value = self.q.value(key, default)
        return str(value) if value is not None else default

    # ---------------------------------------------------------------- paths
    @property
    def last_folder(self) -> str:
        folder = self._str("paths/last_folder")
        return folder if folder and Path(folder).is_dir() else str(Path.home())

    @last_folder.setter
    def last_folder(self, folder: str | Path) -> None:
        self.q.setValue("paths/last_folder", str(folder))

    @property
    def recent(self) -> list[str]:
        value: Any = self.q.value("paths/recent", [])
        if isinstance(value, str):  # QSettings gives a one-element list back as a string
            value = [value] if value else []
        return [str(v) for v in (value or []) if str(v)]

    def add_recent(self, path: str | Path) -> None:
        text = str(Path(path).expanduser().resolve())
        items = [text, *[p for p in self.recent if p != text]][:MAX_RECENT]
        self.q.setValue("paths/recent", items)

    def clear_recent(self) -> None:
        self.q.setValue("paths/recent", [])

    # ---------------------------------------------------------------- engine and view
    @property
    def device(self) -> str:
        return self._str("engine/device", "auto") or "auto"

    @device.setter
    def device(self, value: str) -> None:
        self.q.setValue("engine/device", value)

    @property
    def window_preset(self) -> str:
        return self._str("view/window_preset")

    @window_preset.setter
    def window_preset(self, value: str) -> None:
        self.q.setValue("view/window_preset", value)

    @property
    def brush_size(self) -> int:
        try:
            return max(1, min(int(self.q.value("edit/brush_size", 10)), 200))
        except (TypeError, ValueError):
            return 10

    @brush_size.setter
    def brush_size(self, value: int) -> None:
        self.q.setValue("edit/brush_size", int(value))

    # ---------------------------------------------------------------- layout
    def layout(self) -> tuple[QByteArray | None, QByteArray | None]:
        geometry = self.q.value("window/geometry")
        state = self.q.value("window/state")
        return (geometry if isinstance(geometry, QByteArray) else None,
                state if isinstance(state, QByteArray) else None)

    def set_layout(self, geometry: QByteArray, state: QByteArray) -> None:
        self.q.setValue("window/geometry", geometry)
        self.q.setValue("window/state", state)

    def sync(self) -> None:
        self.q.sync()
