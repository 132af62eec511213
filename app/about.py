"""Help > About: versions, the device, and the default model's card.

The card is read from the shipped models folder
(:func:`llm4seg_core.paths.shipped_models_dirs`), never written here: a card
file next to the shipped checkpoint (``default.md``, ``MODEL_CARD.md`` or
``README.md``). When no trained default model ships, the dialog says so
plainly and shows the resources' ``README.md``.
"""

from __future__ import annotations

import html
import platform
from dataclasses import dataclass, field
from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

INTENDED_USE = ("Research and demo software: not for diagnosis. Masks and models "
                "must not be used to make clinical decisions.")
#: Card files looked for next to the default checkpoint, in this order.
CARD_NAMES = ("default.md", "MODEL_CARD.md", "model_card.md", "README.md")


@dataclass
class ModelCard:
    """What About says about the default model."""

    shipped: bool
    checkpoint: Path | None
    summary: str
    card_path: Path | None = None
    card_text: str = ""


@dataclass
class AboutInfo:
    versions: dict[str, str] = field(default_factory=dict)
    device: str = ""
    model_store: str = ""
    card: ModelCard | None = None


def _read_text(path: Path, limit: int = 20_000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[:limit]
    except OSError:
        return ""


def _shipped_models_dir() -> Path:
    """The first shipped models folder that exists (the first searched when none does)."""
    from llm4seg_core.paths import shipped_models_dirs

    folders = shipped_models_dirs()
    return next((folder for folder in folders if folder.is_dir()), folders[0])


def default_model_card(resources: Path | None = None) -> ModelCard:
    """The default model's card, or a plain statement that none ships.

    ``resources``: a resources folder holding ``models/`` (tests); default: the shipped one.
    """
    from llm4seg_core.errors import LLM4SegError
    from llm4seg_core.store import default_checkpoint, read_checkpoint_info

    models = resources / "models" if resources is not None else _shipped_models_dir()
    root = models.parent
    ckpt = (models / "default.safetensors") if resources is not None else default_checkpoint()
    if ckpt is not None and not ckpt.is_file():
        ckpt = None
    card_dir = ckpt.parent if ckpt is not None else models  # a wheel: <prefix>/share/llm4seg/models
    card_path = next((card_dir / n for n in CARD_NAMES if (card_dir / n).is_file()), None)
    if ckpt is None:
        readme = root / "README.md"
        return ModelCard(
            shipped=False, checkpoint=None,
            summary=("No trained default model ships with this version. Segment then uses an "
                     "untrained model, whose masks are not meaningful, until you fine-tune one on "
                     "your corrected slices (Segment > Fine-tune) or pick a trained version."),
            card_path=readme if readme.is_file() else None,
            card_text=_read_text(readme) if readme.is_file() else "",
        )
    try:
        info = read_checkpoint_info(ckpt)
        spec = info.spec
        summary = (f"Default model: {ckpt.name} (LLM layer {spec.llm_source} #{spec.llm_layer}, "
                   f"{spec.num_classes} class(es), {spec.image_size} px input)")
    except LLM4SegError as exc:
        summary = f"Default model {ckpt} cannot be read: {exc}"
    if card_path is None:
        summary += ". No model card was found next to it."
    return ModelCard(shipped=True, checkpoint=ckpt, summary=summary, card_path=card_path,
                     card_text=_read_text(card_path) if card_path else "")


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def about_info(device: str = "") -> AboutInfo:
    """Versions of the app and what it runs on, and the default model's card."""
    from qtpy import API_NAME, QT_VERSION

    import llm4seg_core

    versions = {
        "LLM4Seg": llm4seg_core.__version__,
        "napari": _version("napari"),
        "PyTorch": _version("torch"),
        "Qt": f"{QT_VERSION} ({API_NAME})",
        "Python": platform.python_version(),
    }
    from llm4seg_core.paths import store_root

    try:
        store = str(store_root())
    except Exception as exc:  # noqa: BLE001 - About must open whatever the store's state
        store = f"not available ({exc})"
    return AboutInfo(versions=versions, device=device, model_store=store,
                     card=default_model_card())


def about_html(info: AboutInfo) -> str:
    rows = "".join(f"<tr><td><b>{k}</b>&nbsp;&nbsp;</td><td>{v}</td></tr>"
                   for k, v in info.versions.items())
    if info.device:
        rows += f"<tr><td><b>Device</b>&nbsp;&nbsp;</td><td>{info.device}</td></tr>"
    if info.model_store:
        rows += (f"<tr><td><b>Model versions</b>&nbsp;&nbsp;</td>"
                 f"<td>{html.escape(info.model_store)}</td></tr>")
    return (
        "<h2>LLM4Seg</h2>"
        "<p>Medical image segmentation with a frozen layer of a pre-trained LLM inside a "
        "CNN encoder-decoder (LLM4Seg, MICCAI 2025).</p>"
        f"<p style='color:#e0a040'><b>{INTENDED_USE}</b></p>"
        f"<table>{rows}</table>"
    )


class AboutDialog(QDialog):
    """Help > About."""

    def __init__(self, info: AboutInfo, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.info = info
        self.setWindowTitle("About LLM4Seg")
        self.resize(620, 560)
        lay = QVBoxLayout(self)
        self.header = QLabel(about_html(info))
        self.header.setWordWrap(True)
        self.header.setTextFormat(Qt.TextFormat.RichText)
        self.header.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.header)
        card = info.card
        title = QLabel("<b>Default model</b>")
        lay.addWidget(title)
        self.summary = QLabel(card.summary if card else "")
        self.summary.setWordWrap(True)
        lay.addWidget(self.summary)
        self.card_view = QTextBrowser()
        self.card_view.setOpenExternalLinks(False)
        if card is not None and card.card_text:
            self.card_view.setMarkdown(card.card_text)
            source = QLabel(f"<i>from {card.card_path}</i>")
            source.setWordWrap(True)
            lay.addWidget(source)
        else:
            self.card_view.setPlainText("No model card found.")
        lay.addWidget(self.card_view, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        lay.addWidget(buttons)

    def text(self) -> str:
        """Everything the dialog shows, as plain text (for tests)."""
        return "\n".join([self.header.text(), self.summary.text(), self.card_view.toPlainText()])
