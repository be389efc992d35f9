"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from its IDX files, read without torchvision.

The files come from Debian's ``dataset-fashion-mnist`` package, which ``make setup`` (scripts/setup.sh)
unpacks into ``~/.cache/deepgeom/fashion-mnist``. Nothing is downloaded at run time.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ._dataset import Dataset, as_inputs, as_labels
from .builtin import subsample
from .idx import read_idx

__all__ = ["load_fashion_mnist", "fashion_mnist_dirs", "FILES", "HOW_TO_GET"]

#: split → (images file, labels file), without the optional ``.gz``
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
HOW_TO_GET = (
    "get them with `make setup`, or by hand: `apt-get download dataset-fashion-mnist && "
    "dpkg-deb -x dataset-fashion-mnist_*.deb x && mkdir -p ~/.cache/deepgeom/fashion-mnist && "
    "cp x/usr/share/datasets/fashion-mnist/*.gz ~/.cache/deepgeom/fashion-mnist/` "
    "(or pass root=DIR / set DEEPGEOM_DATA_DIR)"
)


def fashion_mnist_dirs(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Directories searched, in order: ``root`` alone if given; else ``$DEEPGEOM_DATA_DIR/fashion-mnist``,
    ``~/.cache/deepgeom/fashion-mnist``, ``/usr/share/datasets/fashion-mnist``."""
    if root is not None:
        return [Path(root).expanduser()]
    dirs = []
    env = os.environ.get("DEEPGEOM_DATA_DIR")
    if env:
        dirs.append(Path(env).expanduser() / "fashion-mnist")
    dirs += [Path.home() / ".cache" / "deepgeom" / "fashion-mnist", Path("/usr/share/datasets/fashion-mnist")]
    return dirs


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    return None


def _locate(root: str | os.PathLike[str] | None) -> dict[str, Path]:
    searched = fashion_mnist_dirs(root)
    for d in searched:
        found = {stem: _find(d, stem) for pair in FILES.values() for stem in pair}
        if all(found.values()):
            return found  # type: ignore[return-value]
    where = ", ".join(str(d) for d in searched)
    raise InputError(
        f"Fashion-MNIST IDX files ({', '.join(s + '[.gz]' for p in FILES.values() for s in p)}) "
        f"not found in: {where}; {HOW_TO_GET}"
    )


@functools.lru_cache(maxsize=2)
def _read_split(images: Path, labels: Path, mtimes: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
        raise InputError(f"{str(images)!r}: expected uint8 images of shape (N, 28, 28); got {x.dtype} {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise InputError(f"{str(labels)!r}: expected {x.shape[0]} labels to match {str(images)!r}; "
                         f"got shape {y.shape}")
    if y.size and int(y.max()) > 9:
        raise InputError(f"{str(labels)!r}: labels must be 0..9; found {int(y.max())}")
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_fashion_mnist(
    *, seed: int = 0, root: str | os.PathLike[str] | None = None,
    n_train: int | None = None, n_test: int | None = None, pool: int = 1,
) -> Dataset:
    """Fashion-MNIST: the real 60,000 train / 10,000 test 28×28 grey images of 10 clothing classes.

    Read from IDX files (``.gz`` or raw) in the first directory of :func:`fashion_mnist_dirs` that holds
    all four; pixel values scaled to [0, 1] (divided by 255); inputs of shape ``(N, 1, 28, 28)``.
    ``n_train``/``n_test`` take a seeded random subset (sorted indices, recorded in ``meta``).
    ``pool`` (1, 2, 4, 7, 14 or 28) averages non-overlapping ``pool × pool`` pixel squares: ``pool=2``
    gives 14×14 images and cuts a convolutional net's cost about 4× (the subset is drawn first, so the
    same ``seed`` selects the same images at every resolution).
    Missing files raise :class:`InputError` saying how to get them.
    """
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1 or 28 % pool:
        raise InputError(f"fashion-mnist pool must be a whole divisor of 28 (1, 2, 4, 7, 14, 28); got {pool!r}")
    files = _locate(root)
    rng = np.random.default_rng(seed)
    parts = {}
    for split, (img, lab) in FILES.items():
        ip, lp = files[img], files[lab]
        x, y = _read_split(ip.resolve(), lp.resolve(), (ip.stat().st_mtime, lp.stat().st_mtime))
        idx = subsample(len(y), n_train if split == "train" else n_test, rng, f"n_{split}")
        xs = x if len(idx) == len(x) else x[idx]
        xf = np.divide(xs[:, None], np.float32(255.0), dtype=np.float32)
        if pool > 1:  # mean of each pool×pool square, in float64 then back to float32
            s = 28 // pool
            xf = xf.reshape(len(xf), 1, s, pool, s, pool).mean(axis=(3, 5), dtype=np.float64).astype(np.float32)
        parts[split] = (xf, y[idx], idx)
    meta = {"source": "IDX files", "root": str(files[FILES["train"][0]].parent), "seed": int(seed),
            "pool": pool}
    if n_train is not None:
        meta["train_indices"] = parts["train"][2]
    if n_test is not None:
        meta["test_indices"] = parts["test"][2]
    return Dataset(
        name="fashion-mnist",
        x_train=as_inputs(parts["train"][0], "fashion-mnist x_train", copy=False, check_finite=False),
        y_train=as_labels(parts["train"][1], "fashion-mnist y_train"),
        x_test=as_inputs(parts["test"][0], "fashion-mnist x_test", copy=False, check_finite=False),
        y_test=as_labels(parts["test"][1], "fashion-mnist y_test"),
        n_classes=10,
        input_shape=(1, 28 // pool, 28 // pool),
        meta=meta,
    )
