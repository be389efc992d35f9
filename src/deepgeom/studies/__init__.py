"""Config-driven studies: sweeps over datasets × models × widths × depths × seeds × label noise,
trained and analysed resumably, aggregated into tidy tables (see ``docs/studies.md``)."""

from pathlib import Path

from . import builtin  # noqa: F401 - registers the built-in analyses: the registry is full once imported
from .config import RunSpec, StudyConfig, expand_sweep, load_config, stable_key
from .registry import Analysis, analyses, get_analysis, register_analysis, unregister_analysis
from .runner import AnalysisContext, RunHandle, StudyError, StudyResult, UnitRecord, plan_units, run_study

__all__ = [
    "Analysis",
    "AnalysisContext",
    "RunHandle",
    "RunSpec",
    "StudyConfig",
    "StudyError",
    "StudyResult",
    "UnitRecord",
    "analyses",
    "default_config_path",
    "expand_sweep",
    "get_analysis",
    "load_config",
    "plan_units",
    "register_analysis",
    "run_study",
    "stable_key",
    "unregister_analysis",
]


def default_config_path(quick: bool = False):
    """Path of the packaged demo study config (``demo_quick.yaml`` with ``quick=True``)."""

    return Path(__file__).with_name("demo_quick.yaml" if quick else "demo.yaml")
