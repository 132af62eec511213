"""Which model fits an image: what each task's checkpoint says it is for, ranked for an image.

Every task (:mod:`~llm4seg_core.store.tasks`) is described by the checkpoint
of its current version (its shipped file when the store holds none): a
:class:`TaskProfile` with what images it fits (``meta["fits"]``, a
:class:`ModelFits`) and its labels (``meta["labels"]``, :class:`ModelLabel`).
A fine-tuned version records neither, so they come from the task's shipped
file; without ``fits``, a 1-channel spec at least says "grey". Headers are
read once per file (cached by path, size and modification time); a file that
cannot be read is skipped, with the reason logged.

:func:`suggest_models` ranks the tasks for what is known of an image
(:class:`ImageInfo`: picture or volume, colour or grey, DICOM Modality and
BodyPartExamined, its names). The rules, in the order they weigh:

1. **Kind and colour must match.** A model for 2-D pictures is not offered
   for a volume (nor the reverse), nor a colour model for a grey image (nor
   the reverse), unless nothing else is left (base -100). A colour image
   whose pixels are (almost) all grey counts as grey: ultrasound machines
   often store grey pictures as RGB.
2. **Evidence** gives points: the DICOM Modality the model is for +4, its
   body part +3 (+1 for a related one, e.g. HEAD and BRAIN), and each of its
   keywords (or a word of its task name of 4 letters or more) in the image's
   names +1, at most 2: names only break ties.
3. A model whose kind and colour fit scores 100 plus its points when there is
   evidence, or when the image is a 2-D picture (then it is a guess, and the
   reason says so: a grey picture with no hint is most often ultrasound, so
   an ultrasound model may come first).
4. ``default``, the general model for grey scans (CT, MR), scores 50 for any
   grey image: it is the last resort, after every model with evidence.
5. A volume model with no evidence at all scores 25 (after ``default``), and
   one the DICOM header contradicts (another modality or body part) 0.

Ties go to the model whose fits say more, then by task name. The ranking is
plain Python on the profiles (no model is loaded); the front ends only show it.

A prompt model (task :data:`PROMPT_TASK`, or any checkpoint whose spec takes
prompt channels: :attr:`TaskProfile.prompt`) is never suggested: it segments
the object a person points at, and Segment would refuse it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llm4seg_core.store import tasks as _tasks

if TYPE_CHECKING:
    from llm4seg_core.io import Volume
    from llm4seg_core.store.versions import ModelStore

__all__ = [
    "ImageInfo",
    "ModelFits",
    "ModelLabel",
    "Suggestion",
    "TaskProfile",
    "PROMPT_TASK",
    "is_prompt_checkpoint",
    "model_profile",
    "prompt_tasks",
    "suggest_models",
    "task_profiles",
]

_log = logging.getLogger(__name__)

PROMPT_TASK = "prompt"
"""The task of promptable models: :data:`llm4seg_core.prompts.segment.PROMPT_TASK` (the same
text; that module imports torch, this one must not)."""

#: Points of evidence (rule 2) and the bases of the tiers (rules 1 and 3-5).
MODALITY_POINTS, BODY_PART_POINTS, RELATED_PART_POINTS, KEYWORD_POINTS = 4.0, 3.0, 1.0, 1.0
MAX_KEYWORDS = 2
FITS, DEFAULT, NO_EVIDENCE, CONTRADICTED, MISMATCH = 100.0, 50.0, 25.0, 0.0, -100.0

#: DICOM modalities in words (for the reasons).
_MODALITY_WORDS = {"US": "ultrasound", "ES": "endoscopy", "XC": "camera", "CT": "CT",
                   "MR": "MR", "DX": "X-ray", "CR": "X-ray", "MG": "mammography"}
#: Image modalities that say nothing about the content (other, secondary capture).
_UNINFORMATIVE = {"OT", "SC"}
#: Body parts that contain others (a match between them is "related": +1, no contradiction).
_CONTAINS = {
    "HEAD": {"BRAIN"},
    "HEADNECK": {"HEAD", "NECK", "BRAIN", "THYROID"},
    "NECK": {"THYROID"},
    "CHEST": {"HEART", "BREAST", "LUNG"},
    "THORAX": {"HEART", "BREAST", "LUNG"},
    "ABDOMEN": {"COLON", "LIVER", "KIDNEY"},
}


@dataclass(frozen=True)
class ModelLabel:
    """One label a model outputs: its value in the mask, its name, its colour (``#rrggbb``)."""

    value: int
    name: str
    color: str | None = None


@dataclass(frozen=True)
class ModelFits:
    """What images a model is for; ``None`` (or empty) where its checkpoint does not say."""

    kind: str | None = None  # "2d" (pictures) or "3d" (volumes)
    rgb: bool | None = None
    modality: str | None = None  # a DICOM Modality code: US, ES, XC, CT, MR
    body_part: str | None = None  # a DICOM BodyPartExamined: BREAST, THYROID, ...
    keywords: tuple[str, ...] = ()

    @property
    def unknown(self) -> int:
        """How many of kind and colour are not known (ties go to the model that says more)."""
        return (self.kind is None) + (self.rgb is None)


@dataclass(frozen=True)
class TaskProfile:
    """A task as its checkpoint describes it: the file, what it fits, its labels."""

    task: str
    path: Path
    version: str | None  # the store version it is, None: the shipped file
    fits: ModelFits
    labels: tuple[ModelLabel, ...] = ()
    prompt: bool = False  # a prompt model (never suggested for Segment)


@dataclass(frozen=True)
class ImageInfo:
    """What is known about an image for the suggestion; build it with :meth:`of`."""

    kind: str  # "2d" or "3d"
    rgb: bool = False
    modality: str | None = None
    body_part: str | None = None
    names: tuple[str, ...] = ()  # file name, folder name, layer name, DICOM series description

    @classmethod
    def of(cls, volume: Volume, *names: str) -> ImageInfo:
        """The facts of ``volume`` (and any extra ``names``, e.g. a napari layer's)."""
        meta = volume.meta or {}
        found: list[str] = []
        if volume.source:
            source = Path(volume.source)
            found += [source.name, source.parent.name]
        found += [meta.get("series_description") or "", *names]
        return cls(
            kind="2d" if volume.kind == "image2d" else "3d",
            rgb=bool(volume.is_rgb) and not _looks_grey(volume.array),
            modality=volume.modality,
            body_part=meta.get("body_part"),
            names=tuple(dict.fromkeys(n for n in found if n)),
        )


@dataclass(frozen=True)
class Suggestion:
    """A task for an image: its ``score`` (higher first, see the module docstring) and why."""

    task: str
    score: float
    reason: str


# ====================================================================== reading checkpoints
def _looks_grey(array: np.ndarray, tol: int = 10) -> bool:
    """An RGB array whose sampled pixels have R, G and B within ``tol`` of each other (99 %).

    About 20,000 pixels on a regular grid are looked at (no copy of the image).
    """
    arr = np.asarray(array)
    spatial = arr.shape[:-1]
    if not spatial or arr.size == 0:
        return False
    step = max(1, round((np.prod(spatial) / 20_000) ** (1 / len(spatial))))
    sample = arr[tuple(slice(None, None, step) for _ in spatial)].reshape(-1, arr.shape[-1])
    sample = sample.astype(np.int32)
    spread = sample.max(axis=1) - sample.min(axis=1)
    return bool(np.mean(spread <= tol) >= 0.99)


def _text(value: Any) -> str | None:
    text = str(value).strip() if isinstance(value, (str, int, float)) else ""
    return text or None


def _norm_part(value: Any) -> str | None:
    text = re.sub(r"[^A-Z]", "", str(value or "").upper())
    return text or None


def _fits_from(meta: dict[str, Any], in_channels: int, where: Path) -> ModelFits | None:
    """``meta["fits"]`` as a :class:`ModelFits` (bad fields are unknown); None without it."""
    fits = meta.get("fits")
    if fits is None:
        return None
    if not isinstance(fits, dict):
        _log.warning("%s: its 'fits' metadata is not a mapping (%r); read as unknown", where, fits)
        return ModelFits(rgb=False if in_channels == 1 else None)
    kind = fits.get("kind")
    rgb = fits.get("rgb")
    modality = _text(fits.get("modality"))
    words = fits.get("keywords")
    keywords = tuple(str(w).strip().lower() for w in words if str(w).strip()) \
        if isinstance(words, (list, tuple)) else ()
    return ModelFits(
        kind=kind if kind in ("2d", "3d") else None,
        rgb=rgb if isinstance(rgb, bool) else (False if in_channels == 1 else None),
        modality=modality.upper() if modality else None,
        body_part=_norm_part(fits.get("body_part")),
        keywords=keywords,
    )


def _labels_from(meta: dict[str, Any], label_names: tuple[str, ...]) -> tuple[ModelLabel, ...]:
    """``meta["labels"]`` (bad entries dropped), else the spec's label names without colours."""
    out: list[ModelLabel] = []
    entries = meta.get("labels")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        value, name, color = entry.get("value"), entry.get("name"), entry.get("color")
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 255:
            continue
        ok_color = isinstance(color, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", color)
        out.append(ModelLabel(value, str(name or f"label {value}"), color if ok_color else None))
    if out:
        return tuple(sorted(out, key=lambda lab: lab.value))
    return tuple(ModelLabel(i + 1, str(n)) for i, n in enumerate(label_names) if i < 255)


@lru_cache(maxsize=128)
def _read(path: str, _mtime_ns: int,
          _size: int) -> tuple[ModelFits | None, tuple, bool, bool, str]:
    """(fits, labels, grey spec, prompt model, problem) of the checkpoint at ``path``; one read
    per file state."""
    from llm4seg_core.store.checkpoint import read_checkpoint_info

    try:
        info = read_checkpoint_info(path)
        meta = info.meta if isinstance(info.meta, dict) else {}
        grey = info.spec.in_channels == 1
        prompt = bool(getattr(info.spec, "is_prompt_model", False))
        return (_fits_from(meta, info.spec.in_channels, Path(path)),
                _labels_from(meta, tuple(info.spec.label_names)), grey, prompt, "")
    except Exception as exc:  # noqa: BLE001 - a damaged file must never break the suggestion
        return None, (), False, False, str(exc) or repr(exc)


def _read_file(path: Path) -> tuple[ModelFits | None, tuple[ModelLabel, ...], bool, bool]:
    """What the checkpoint at ``path`` says; an OSError or a damaged file raises ``ValueError``."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    fits, labels, grey, prompt, problem = _read(str(path), st.st_mtime_ns, st.st_size)
    if problem:
        raise ValueError(problem)
    return fits, labels, grey, prompt


def is_prompt_checkpoint(path: str | Path) -> bool:
    """Whether the checkpoint at ``path`` is a prompt model's (its header, cached); False for
    a file that cannot be read."""
    try:
        return _read_file(Path(path))[3]
    except ValueError:
        return False


def prompt_tasks(store: ModelStore | None = None) -> list[str]:
    """The tasks of prompt models, in the store's task order: :data:`PROMPT_TASK`, and any
    other whose current version (else shipped file) is a prompt model's.

    What Segment's pickers leave out and ``llm4seg models list`` marks.
    """
    from llm4seg_core.store.versions import ModelStore

    store = store if store is not None else ModelStore()
    shipped = _tasks.shipped_tasks()
    out = []
    for task in store.tasks():
        if task == PROMPT_TASK:
            out.append(task)
            continue
        current = store.current(task)
        spec = current.spec if current is not None else None
        if spec is not None:
            prompt = bool(spec.is_prompt_model)
        else:
            prompt = task in shipped and is_prompt_checkpoint(shipped[task])
        if prompt:
            out.append(task)
    return out


def _profile(task: str, path: Path, version: str | None) -> TaskProfile:
    """``task`` as the checkpoint at ``path`` describes it; what it lacks, from the shipped file."""
    fits, labels, grey, prompt = _read_file(path)
    shipped = _tasks.shipped_tasks().get(task)
    if (fits is None or not labels) and shipped is not None and shipped != path:
        try:
            s_fits, s_labels, _, _ = _read_file(shipped)
        except ValueError as exc:
            _log.warning("task %s: its shipped file is unreadable (%s)", task, exc)
        else:
            fits = fits if fits is not None else s_fits
            labels = labels or s_labels
    if fits is None:
        fits = ModelFits(rgb=False if grey else None)
    elif fits.rgb is None and grey:
        fits = replace(fits, rgb=False)
    return TaskProfile(task, path, version, fits, labels, prompt=prompt or task == PROMPT_TASK)


def task_profiles(store: ModelStore | None = None) -> list[TaskProfile]:
    """Every task with a usable checkpoint, as its current version (else shipped file) describes it.

    A task whose current version is damaged, or whose file cannot be read, is
    left out (the reason goes to the log); ``default`` without any checkpoint
    (the untrained spec) too.
    """
    from llm4seg_core.store.checkpoint import default_checkpoint
    from llm4seg_core.store.versions import ModelStore

    store = store if store is not None else ModelStore()
    shipped = _tasks.shipped_tasks()
    out: list[TaskProfile] = []
    for task in store.tasks():
        current = store.current(task)
        if current is not None and current.damaged:
            _log.warning("task %s not suggested: its current version %s is damaged (%s)",
                         task, current.name, current.damaged)
            continue
        if current is not None:
            path, version = current.path, current.name
        else:
            path = default_checkpoint() if task == _tasks.DEFAULT_TASK else shipped.get(task)
            version = None
            if path is None:
                continue
        try:
            out.append(_profile(task, path, version))
        except ValueError as exc:
            _log.warning("task %s not suggested: %s", task, exc)
    return out


def model_profile(arg: str | Path | None, store: ModelStore | None = None) -> TaskProfile | None:
    """The profile of the model ``arg`` names (read as :func:`~llm4seg_core.store.resolve_model`).

    ``None`` for an untrained spec, or when ``arg`` cannot be resolved or read
    (Segment says why then).
    """
    from llm4seg_core.errors import LLM4SegError
    from llm4seg_core.store.resolve import resolve_model

    try:
        resolved = resolve_model(arg, store, load=False)
    except LLM4SegError as exc:
        _log.info("no profile for model %r: %s", arg, exc)
        return None
    if resolved.path is None or not resolved.trained:
        return None
    version = resolved.version.name if resolved.version is not None else None
    try:
        return _profile(resolved.task, Path(resolved.path), version)
    except ValueError as exc:
        _log.warning("no profile for model %r: %s", arg, exc)
        return None


# ====================================================================== ranking
def _keywords(profile: TaskProfile) -> list[str]:
    words = [w for w in profile.fits.keywords if w]
    words += [w for w in re.split(r"[-_]", profile.task) if len(w) >= 4]
    return list(dict.fromkeys(words))


def _mentions(word: str, text: str) -> bool:
    if len(word) >= 4:
        return word in text
    return re.search(rf"(?<![a-z0-9]){re.escape(word)}(?![a-z0-9])", text) is not None


def _kind_words(image: ImageInfo) -> str:
    return "picture" if image.kind == "2d" else "volume"


def _rank(profile: TaskProfile, image: ImageInfo) -> tuple[float, str]:
    """(score, reason) of one task for ``image`` (the module docstring's rules)."""
    fits, what = profile.fits, _kind_words(image)
    colour = "colour" if image.rgb else "grey"
    if profile.task == _tasks.DEFAULT_TASK:
        if image.rgb:
            return MISMATCH, "the general model is for grey scans; this picture is in colour"
        return DEFAULT, f"the general model for grey scans (CT, MR); no better fit for this {what}"
    if fits.kind is not None and fits.kind != image.kind:
        made = "2-D pictures" if fits.kind == "2d" else "volumes"
        this = "2-D picture" if image.kind == "2d" else "volume"
        return MISMATCH, f"made for {made}; this is a {this}"
    if fits.rgb is not None and fits.rgb != image.rgb:
        made = "colour" if fits.rgb else "grey"
        return MISMATCH, f"made for {made} images; this {what} is {colour}"

    points, evidence, against = 0.0, [], []
    modality = (image.modality or "").upper()
    modality = "" if modality in _UNINFORMATIVE else modality
    if modality and fits.modality:
        if modality == fits.modality:
            points += MODALITY_POINTS
            evidence.append(f"DICOM modality {modality}")
        else:
            against.append(f"made for {fits.modality}, the DICOM header says {modality}")
    part = _norm_part(image.body_part)
    if part and fits.body_part:
        if part == fits.body_part:
            points += BODY_PART_POINTS
            evidence.append(f"DICOM body part {part}")
        elif fits.body_part in _CONTAINS.get(part, ()) or part in _CONTAINS.get(fits.body_part, ()):
            points += RELATED_PART_POINTS
            evidence.append(f"DICOM body part {part}, close to {fits.body_part}")
        else:
            against.append(f"made for {fits.body_part}, the DICOM header says {part}")
    text = " ".join(image.names).lower()
    hits = [w for w in _keywords(profile) if _mentions(w, text)][:MAX_KEYWORDS]
    if hits:
        points += KEYWORD_POINTS * len(hits)
        evidence.append("name mentions " + " and ".join(f"'{w}'" for w in hits))

    lead = f"{_MODALITY_WORDS.get(fits.modality or '', colour)} {what}"
    if against:
        return CONTRADICTED + points, "; ".join(against)
    if evidence:
        return FITS + points, f"{lead}, {', '.join(evidence)}"
    if image.kind == "2d":
        return FITS, f"{lead}; a guess, no hint in the name or DICOM header"
    return NO_EVIDENCE, f"{lead} model, but no hint in the name or DICOM header"


def suggest_models(
    image: ImageInfo | Volume,
    store: ModelStore | None = None,
    *,
    profiles: list[TaskProfile] | None = None,
) -> list[Suggestion]:
    """Every task for ``image`` that Segment can run, best first (rules: the module docstring).

    ``image``: an :class:`ImageInfo`, or a :class:`~llm4seg_core.io.Volume`
    (read with :meth:`ImageInfo.of`). ``profiles``: the candidates (default:
    :func:`task_profiles` of ``store``, the user's store when None). A prompt
    model's task is never among them (:attr:`TaskProfile.prompt`).
    """
    info = image if isinstance(image, ImageInfo) else ImageInfo.of(image)
    candidates = profiles if profiles is not None else task_profiles(store)
    ranked = []
    for profile in candidates:
        if profile.prompt or profile.task == PROMPT_TASK:
            continue  # it segments what a person points at; Segment refuses it
        score, reason = _rank(profile, info)
        ranked.append((-score, profile.fits.unknown, profile.task, Suggestion(profile.task, score,
                                                                              reason)))
    ranked.sort(key=lambda item: item[:3])
    return [item[3] for item in ranked]
