import os

import numpy as np
import pytest
import torch
from hypothesis import settings

# 2 cores here: keep torch from oversubscribing when pytest runs alongside other work.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

settings.register_profile("deepgeom", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("deepgeom")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
