"""Kept so that ``deepgeom.studies._io`` still imports: the atomic writes live in :mod:`deepgeom._io`."""

from __future__ import annotations

from .._io import atomic_write_bytes, atomic_write_json, atomic_write_text, publish_dir, write_table

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "write_table", "publish_dir"]
