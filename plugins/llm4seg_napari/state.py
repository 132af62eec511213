"""The dock widget's session state: one public object to read and to listen to.

:class:`WidgetState` (``LLM4SegWidget.state``) holds what the session is at:
the image and its mask, the corrected slices, the chosen model, device and
CT window, the models suggested for the image (ranked by the engine,
:func:`llm4seg_core.store.suggest_models`), the running job and its
progress, the status line. The widget's
controls show it; hosts such as the Qt app read its properties and connect
to its signals, and change it only through the widget's public methods
(``select_model``, ``segment``, ...). The ``set_*`` / ``begin_job`` /
``end_job`` methods are the widget's side: each emits its signal only when
the value changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import QObject, Signal

from llm4seg_napari.choices import Choice

if TYPE_CHECKING:
    from napari.layers import Image, Labels

    from llm4seg_core.store import Suggestion

__all__ = ["AS_LOADED", "WidgetState"]

#: The CT window entry that keeps the contrast the image was opened with.
AS_LOADED = "as loaded"


def _ct_window_names() -> tuple[str, ...]:
    from llm4seg_core.preprocess import CT_WINDOWS  # imports torch: only when a widget is made

    return tuple(CT_WINDOWS)


class WidgetState(QObject):
    """The dock widget's session state; ``LLM4SegWidget.state``. Read properties, connect
    signals."""

    job_started = Signal(str)  # kind: "segment", "fine-tune", "save" or "open"
    job_finished = Signal(str, str)  # kind, how: "done" | "cancelled" | "failed"
    progress = Signal(int, int)  # done, total of the running job (0, 0 when idle)
    status_changed = Signal(str)  # the status line text
    image_changed = Signal(object)  # the current napari Image layer or None
    mask_changed = Signal(object)  # the current napari Labels layer (the mask) or None
    corrections_changed = Signal(list)  # the corrected slice indices (sorted ints)
    model_changed = Signal(str)  # the selected model's display text
    device_changed = Signal(str)  # the selected device argument ("auto", "cpu", "cuda", ...)
    window_changed = Signal(str)  # the CT window preset shown ("as loaded" when none)
    #                               (also when window_enabled changes)
    choices_changed = Signal()  # the model / device / window choice lists changed
    suggestions_changed = Signal(list)  # the tasks suggested for the image (Suggestion, best first)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._kind: str | None = None
        self._progress = (0, 0)
        self._status = "Ready."
        self._image: Image | None = None
        self._mask: Labels | None = None
        self._corrected: list[int] = []
        self._models: list[Choice] = []
        self._model = 0
        self._devices: list[Choice] = []
        self._device = 0
        self._windows = [AS_LOADED, *_ct_window_names()]
        self._window = AS_LOADED
        self._window_enabled = False
        self._suggestions: list[Suggestion] = []

    # ================================================================== read
    @property
    def is_busy(self) -> bool:
        return self._kind is not None

    @property
    def kind(self) -> str | None:
        """The running job's kind, None when idle."""
        return self._kind

    @property
    def job_progress(self) -> tuple[int, int]:
        """(done, total) of the running job; (0, 0) when idle or not reported yet."""
        return self._progress

    @property
    def image(self) -> Image | None:
        return self._image

    @property
    def mask(self) -> Labels | None:
        return self._mask

    @property
    def corrected_slices(self) -> list[int]:
        return list(self._corrected)

    @property
    def status(self) -> str:
        return self._status

    @property
    def model_choices(self) -> list[Choice]:
        return list(self._models)

    @property
    def model_index(self) -> int:
        return self._model

    @property
    def model_arg(self) -> str | None:
        """The selected model's argument (None = the default model)."""
        return self._models[self._model].arg if self._models else None

    @property
    def model_text(self) -> str:
        return self._models[self._model].text if self._models else ""

    @property
    def device_choices(self) -> list[Choice]:
        return list(self._devices)

    @property
    def device_index(self) -> int:
        return self._device

    @property
    def device_arg(self) -> str:
        return (self._devices[self._device].arg or "auto") if self._devices else "auto"

    @property
    def device_text(self) -> str:
        return self._devices[self._device].text if self._devices else "auto"

    @property
    def suggestions(self) -> list[Suggestion]:
        """The tasks suggested for the current image, best first (empty: no image)."""
        return list(self._suggestions)

    @property
    def suggestion(self) -> Suggestion | None:
        """The best of :attr:`suggestions` (preselected unless the person chose another)."""
        return self._suggestions[0] if self._suggestions else None

    @property
    def window_preset(self) -> str:
        return self._window

    @property
    def window_choices(self) -> list[str]:
        return list(self._windows)

    @property
    def window_enabled(self) -> bool:
        """CT windows apply: an image is shown and it is not RGB."""
        return self._window_enabled

    # ================================================================== the widget's side
    def begin_job(self, kind: str) -> None:
        self._kind = kind
        self._progress = (0, 0)
        self.job_started.emit(kind)

    def set_progress(self, done: int, total: int) -> None:
        self._progress = (int(done), int(total))
        self.progress.emit(int(done), int(total))

    def end_job(self, kind: str, how: str) -> None:
        self._kind = None
        self.set_progress(0, 0)
        self.job_finished.emit(kind, how)

    def set_status(self, text: str) -> None:
        if text != self._status:
            self._status = text
            self.status_changed.emit(text)

    def set_image(self, image: Image | None) -> None:
        if image is not self._image:
            self._image = image
            self.image_changed.emit(image)

    def set_mask(self, mask: Labels | None) -> None:
        if mask is not self._mask:
            self._mask = mask
            self.mask_changed.emit(mask)

    def set_corrected(self, slices: list[int]) -> None:
        slices = sorted(int(z) for z in slices)
        if slices != self._corrected:
            self._corrected = slices
            self.corrections_changed.emit(list(slices))

    def set_model_choices(self, choices: list[Choice], select: str | None | object = ...) -> None:
        """New model choices; keep the selected argument (or select ``select``) when listed."""
        want = self.model_arg if select is ... else select
        before = self.model_text
        self._models = list(choices)
        args = [c.arg for c in self._models]
        self._model = args.index(want) if want in args else 0
        self.choices_changed.emit()
        if self.model_text != before:
            self.model_changed.emit(self.model_text)

    def choose_model(self, arg: str | None) -> bool:
        """Select the listed model ``arg``; False when it is not listed."""
        args = [c.arg for c in self._models]
        if arg not in args:
            return False
        i = args.index(arg)
        if i != self._model:
            self._model = i
            self.model_changed.emit(self.model_text)
        return True

    def set_suggestions(self, suggestions: list[Suggestion]) -> None:
        if list(suggestions) != self._suggestions:
            self._suggestions = list(suggestions)
            self.suggestions_changed.emit(list(suggestions))

    def set_device_choices(self, choices: list[Choice]) -> None:
        want = self.device_arg
        self._devices = list(choices)
        args = [c.arg for c in self._devices]
        before = self._device
        self._device = args.index(want) if want in args else 0
        self.choices_changed.emit()
        if self._device != before:
            self.device_changed.emit(self.device_arg)

    def choose_device(self, arg: str) -> bool:
        """Select the device ``arg``; False when it is not listed or not usable here."""
        for i, choice in enumerate(self._devices):
            if choice.arg == arg and choice.enabled:
                if i != self._device:
                    self._device = i
                    self.device_changed.emit(self.device_arg)
                return True
        return False

    def set_window(self, preset: str, enabled: bool) -> None:
        preset = preset if preset in self._windows else AS_LOADED
        if preset != self._window or bool(enabled) != self._window_enabled:
            self._window, self._window_enabled = preset, bool(enabled)
            self.window_changed.emit(preset)
