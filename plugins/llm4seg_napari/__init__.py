"""napari plugin for LLM4Seg.

Contributions (``napari.yaml``): a reader for DICOM folders/files, NIfTI, NRRD
and MetaImage (``_reader``), a writer that saves labels as masks in the source
image's geometry (``_writer``), the demo chest CT as sample data
(``_sample_data``), and the "LLM4Seg" dock widget (``widget``: Segment,
corrections, Fine-tune, Save).

Modules, one job each:

* ``widget``: :class:`LLM4SegWidget`, the main class: it runs the jobs;
  ``_controls`` wires the controls to the state, ``_layout`` builds them;
* ``state``: :class:`WidgetState`, the session state hosts read and follow;
* ``jobs``: :class:`JobRunner`, one thread job at a time with a typed
  :class:`Outcome`; ``_tasks``: the Qt-free bodies of the widget's jobs;
* ``choices``: what the model and device pickers offer;
* ``masks``: the mask layer of an image (name, creation, label names and
  colours, save path);
* ``geometry``: Volume geometry <-> napari layer placement and metadata keys;
* ``_corrections``: which slices a person corrected; ``_autosave``: when
  they are autosaved (the files: :mod:`llm4seg_core.autosave`);
* ``_plot``: the live fine-tune plot.

The public names below load on first use, so that importing this package
(npe2 does, for the manifest) imports neither napari nor Qt; the reader and
writer work (and are tested) without them.
"""

from __future__ import annotations

from llm4seg_core.lazy import lazy_exports

#: Public name -> the module that defines it.
_EXPORTS = {
    "LayerData": "llm4seg_napari._reader",
    "read_layers": "llm4seg_napari._reader",
    "volume_layer": "llm4seg_napari._reader",
    "write_labels": "llm4seg_napari._writer",
    "make_lung2_sample": "llm4seg_napari._sample_data",
    "SERIES_KEY": "llm4seg_napari.geometry",
    "VOLUME_KEY": "llm4seg_napari.geometry",
    "WINDOW_KEY": "llm4seg_napari.geometry",
    "volume_from_layer": "llm4seg_napari.geometry",
    "DICOM_SEG_FILTER": "llm4seg_napari.masks",
    "MASK_FILTERS": "llm4seg_napari.masks",
    "MODEL_KEY": "llm4seg_napari.masks",
    "image_notes": "llm4seg_napari._reader",
    "is_from_dicom": "llm4seg_napari.masks",
    "layer_labels": "llm4seg_napari.masks",
    "mask_filters": "llm4seg_napari.masks",
    "apply_labels": "llm4seg_napari.masks",
    "make_mask_layer": "llm4seg_napari.masks",
    "mask_name": "llm4seg_napari.masks",
    "suggested_mask_path": "llm4seg_napari.masks",
    "Choice": "llm4seg_napari.choices",
    "task_arg": "llm4seg_napari.choices",
    "JobRunner": "llm4seg_napari.jobs",
    "Outcome": "llm4seg_napari.jobs",
    "run_guarded": "llm4seg_napari.jobs",
    "AS_LOADED": "llm4seg_napari.state",
    "WidgetState": "llm4seg_napari.state",
    "LLM4SegWidget": "llm4seg_napari.widget",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
