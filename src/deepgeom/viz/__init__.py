"""Figures: functions that take result objects/tables and return matplotlib figures (no maths here)."""
