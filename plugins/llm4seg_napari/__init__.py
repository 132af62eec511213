"""napari plugin for LLM4Seg.

Contributions (``napari.yaml``): a reader for DICOM folders/files, NIfTI, NRRD
and MetaImage (``_reader``), a writer that saves labels as masks in the source
image's geometry (``_writer``), and the demo chest CT as sample data
(``_sample_data``), and the "LLM4Seg" dock widget (``_widget``: Segment,
corrections, Fine-tune, Save). This package imports neither napari nor Qt at
module level, so the reader and writer work (and are tested) without them.
"""
