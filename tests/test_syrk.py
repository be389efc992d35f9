"""The half-flop symmetric product through torch's MKL (functional/_syrk.py) and the per-thread job
runner the minibatch CKA kernels use: values against torch's own product, the untouched triangle, the
fallback switch, and that every job runs once with the caller's thread count restored."""

from __future__ import annotations

import threading

import pytest
import torch

from deepgeom.functional import _syrk as S

needs_syrk = pytest.mark.skipif(not S.syrk_available(torch.float32), reason="torch without MKL syrk")


@needs_syrk
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (64, 257), (300, 40)])
def test_syrk_lower_is_the_lower_triangle_of_the_product(dtype, shape):
    """Lower triangle = tril(A Aᵀ) to the dtype's rounding (the same inner products in another order);
    the strict upper triangle keeps whatever it held."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(*shape, generator=g, dtype=dtype)
    out = torch.full((shape[0], shape[0]), 7.0, dtype=dtype)
    S.syrk_lower(A, out)
    ref = (A.double() @ A.double().T).to(dtype)
    eps = torch.finfo(dtype).eps
    tol = 4 * eps * shape[1] ** 0.5 * float((A.double() ** 2).sum(1).max())
    assert float((out.tril() - ref.tril()).abs().max()) <= tol
    assert bool((out.triu(1) == torch.full_like(out, 7.0).triu(1)).all())


@needs_syrk
def test_syrk_lower_edge_cases():
    out = torch.full((4, 4), 3.0)
    S.syrk_lower(torch.empty(4, 0), out)  # no features: a zero product
    assert float(out.abs().max()) == 0
    with pytest.raises(ValueError, match="contiguous"):
        S.syrk_lower(torch.randn(6, 4).T, torch.empty(4, 4))
    with pytest.raises(ValueError, match="contiguous"):
        S.syrk_lower(torch.randn(4, 6), torch.empty(5, 5))


def test_no_syrk_switch(monkeypatch):
    """DEEPGEOM_NO_SYRK=1 turns the MKL route off (callers then use full products)."""
    monkeypatch.setenv("DEEPGEOM_NO_SYRK", "1")
    monkeypatch.setattr(S, "_bound", None)
    assert not S.syrk_available(torch.float32)
    assert not S.syrk_available(torch.float64)
    monkeypatch.setattr(S, "_bound", None)  # re-bound without the switch for later tests
    monkeypatch.delenv("DEEPGEOM_NO_SYRK")
    S._bind()


@pytest.mark.parametrize("threads", [1, 2])
def test_run_per_thread_runs_every_job_once_and_restores_threads(threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        seen: list[int] = []
        lock = threading.Lock()

        def job(i):
            torch.ones(1000).sum()  # a torch call inside a worker
            with lock:
                seen.append(i)

        S.run_per_thread([lambda i=i: job(i) for i in range(9)], list(range(9)))
        assert sorted(seen) == list(range(9))
        assert torch.get_num_threads() == threads

        def bad():
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            S.run_per_thread([bad] + [lambda: None] * 3, [1, 2, 3, 4])
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
