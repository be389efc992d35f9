"""The static HTML report of a study: ``build_report(study_dir) -> path to index.html``."""

from .builder import NotRun, ReportContext, build_report, html_table

__all__ = ["build_report", "ReportContext", "NotRun", "html_table"]
