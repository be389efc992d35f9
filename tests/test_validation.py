"""Shared input checks: every estimator relies on these to turn bad input into a clear error."""

import numpy as np
import pytest
import torch

from deepgeom import InputError, UnknownNameError
from deepgeom._validation import check_fraction, check_matrix, check_positive_int, check_same_n


def test_check_matrix_accepts_numpy_torch_and_memmap(tmp_path):
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert check_matrix(X) is X
    T = torch.from_numpy(X)
    assert check_matrix(T) is T
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(4, 3))
    mm[:] = X
    assert check_matrix(mm) is mm


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros(5), r"2-D .*reshape 1-D"),
        (np.zeros((2, 3, 4)), r"2-D"),
        (np.zeros((3, 0)), r"no features"),
        (np.array([["a", "b"]]), r"numeric"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), r"NaN or Inf \(first in row 0\)"),
        (torch.tensor([[1.0, 2.0], [float("inf"), 1.0]]), r"NaN or Inf \(first in row 1\)"),
    ],
)
def test_check_matrix_rejects_with_a_clear_message(bad, match):
    with pytest.raises(InputError, match=match):
        check_matrix(bad)


def test_input_error_is_a_value_error_and_too_few_rows_is_named():
    with pytest.raises(ValueError, match="at least 3 points"):
        check_matrix(np.zeros((2, 2)), min_rows=3)


def test_same_n_fraction_and_positive_int():
    assert check_same_n(np.zeros((5, 2)), np.zeros((5, 7))) == 5
    with pytest.raises(InputError, match="same number of examples"):
        check_same_n(np.zeros((5, 2)), np.zeros((4, 2)))
    assert check_fraction(0.5, "f") == 0.5
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(InputError, match=r"f must be in \[0.0, 1.0\]"):
            check_fraction(bad, "f")
    with pytest.raises(InputError):
        check_fraction(0.0, "f", open_low=True)
    assert check_positive_int(3, "k") == 3
    with pytest.raises(InputError, match="integer >= 1"):
        check_positive_int(0, "k")


def test_unknown_name_lists_choices():
    err = UnknownNameError("dataset", "mnist2d", ["mnist1d", "digits"])
    assert "mnist1d, digits" in str(err) and isinstance(err, ValueError)


def test_check_labels():
    from deepgeom._validation import check_labels

    y, c = check_labels(torch.tensor([0, 2, 1, 2]), 4)
    assert y.dtype == np.int64 and y.tolist() == [0, 2, 1, 2] and c == 3
    assert check_labels(np.array([0, 1]), n_classes=5)[1] == 5
    for bad, match in [
        (np.array([0.0, 1.0]), r"integer dtype.*astype\(int\)"),
        (np.array([0.5, 1.0]), "integer class indices"),
        (np.array([[0, 1]]), "1-D"),
        (np.array([0, -1]), ">= 0"),
    ]:
        with pytest.raises(InputError, match=match):
            check_labels(bad)
    with pytest.raises(InputError, match="same number of examples"):
        check_labels(np.array([0, 1]), 3)
    with pytest.raises(InputError, match="out of range for 2 classes"):
        check_labels(np.array([0, 2]), n_classes=2)
