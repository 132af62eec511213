"""Standalone Qt app for LLM4Seg (a later issue fills this in)."""
