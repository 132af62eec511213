"""napari plugin for LLM4Seg (dock widget, reader, writer, sample data: later issues)."""
