"""The tables claims are judged on: a study's aggregated ``tables/*.parquet``, read once and cached."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ..errors import InputError, UnknownNameError

__all__ = ["Tables"]


class Tables:
    """The aggregated tables of one or more studies: ``tables.get("id_profiles", study="profiles")``.

    ``studies`` maps a study name to its output directory (which holds ``tables/<name>.parquet``); with a
    single study, ``study`` may be omitted.
    """

    def __init__(self, studies: Mapping[str, str | Path]):
        self.studies = {k: Path(v) for k, v in studies.items()}
        self._cache: dict[tuple[str, str], pd.DataFrame] = {}

    def get(self, name: str, study: str | None = None) -> pd.DataFrame:
        if study is None:
            if len(self.studies) != 1:
                raise InputError(f"table {name!r}: name the study (one of {sorted(self.studies)})")
            study = next(iter(self.studies))
        if study not in self.studies:
            raise UnknownNameError("study", study, sorted(self.studies))
        key = (study, name)
        if key not in self._cache:
            path = self.studies[study] / "tables" / f"{name}.parquet"
            if not path.is_file():
                raise InputError(f"study {study!r} has no table {name!r} (is the analysis that makes it in the config?)")
            self._cache[key] = pd.read_parquet(path)
        return self._cache[key].copy()
