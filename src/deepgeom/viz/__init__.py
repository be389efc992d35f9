"""Figures: functions that take result objects/tables and return matplotlib figures (no maths here)."""

from ._common import finish_figure, plt, save_figure

__all__ = ["plt", "save_figure", "finish_figure"]
