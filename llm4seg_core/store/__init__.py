"""Trained models on disk: checkpoint files, the versioned model store, model resolution.

- :mod:`~llm4seg_core.store.checkpoint`: the checkpoint file format (safetensors
  + spec header; frozen LLM layers are re-read, never stored).
- :mod:`~llm4seg_core.store.versions`: :class:`ModelStore` (numbered versions in
  the user's data folder, rollback) and its :class:`VersionInfo` records
  (:mod:`~llm4seg_core.store.record`);
- :mod:`~llm4seg_core.store.tasks`: tasks (each shipped model is one, with its
  own line of versions and its own current version), shipped task discovery;
  :mod:`~llm4seg_core.store.locks` keeps saves safe, :mod:`~llm4seg_core.store.compare`
  compares two versions.
- :mod:`~llm4seg_core.store.resolve`: :func:`resolve_model` turns a ``--model``
  argument (file, version, task, spec) into a model.
- :mod:`~llm4seg_core.store.suggest`: :func:`suggest_models` ranks the tasks for
  an image (what each checkpoint says it fits: picture or volume, colour,
  modality, body part, keywords); :func:`model_profile` gives a model's labels.
"""

from __future__ import annotations

from llm4seg_core.paths import store_root
from llm4seg_core.store.checkpoint import (
    FORMAT,
    CheckpointInfo,
    default_checkpoint,
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
    spec_differences,
)
from llm4seg_core.store.locks import STALE_S
from llm4seg_core.store.resolve import ResolvedModel, resolve_model
from llm4seg_core.store.suggest import (
    ImageInfo,
    ModelFits,
    ModelLabel,
    Suggestion,
    TaskProfile,
    model_profile,
    suggest_models,
    task_profiles,
)
from llm4seg_core.store.tasks import DEFAULT_TASK, shipped_tasks, validate_task
from llm4seg_core.store.versions import CURRENT_FILE, VERSION_FORMAT, ModelStore, VersionInfo

__all__ = [
    "CURRENT_FILE",
    "DEFAULT_TASK",
    "FORMAT",
    "STALE_S",
    "VERSION_FORMAT",
    "CheckpointInfo",
    "ImageInfo",
    "ModelFits",
    "ModelLabel",
    "ModelStore",
    "ResolvedModel",
    "Suggestion",
    "TaskProfile",
    "VersionInfo",
    "default_checkpoint",
    "load_checkpoint",
    "model_profile",
    "read_checkpoint_info",
    "resolve_model",
    "save_checkpoint",
    "shipped_tasks",
    "spec_differences",
    "store_root",
    "suggest_models",
    "task_profiles",
    "validate_task",
]
