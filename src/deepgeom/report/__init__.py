"""The static HTML report of a study: ``build_report(study_dir) -> path to index.html``."""

from .builder import SECTIONS, build_report
from .context import NotRun, ReportContext, html_table

__all__ = ["build_report", "ReportContext", "NotRun", "html_table", "SECTIONS"]
