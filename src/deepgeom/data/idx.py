"""Reader and writer for the IDX format of (Fashion-)MNIST, plain or gzip-compressed.

IDX (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a type byte (0x08 uint8,
0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), a byte with the number of dimensions,
one big-endian uint32 per dimension, then the data in C order, big-endian. Compression is detected
from the gzip magic bytes, not the file name.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from .._io import atomic_write_bytes
from ..errors import InputError

__all__ = ["read_idx", "write_idx"]

_CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_BY_DTYPE = {np.dtype(v).newbyteorder("="): k for k, v in _CODES.items()}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read IDX file {str(path)!r}: {exc.strerror or exc}") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"corrupt gzip IDX file {str(path)!r}: {exc}") from exc
    return raw


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a native-endian numpy array of its stored shape.

    Raises :class:`InputError` naming the file when the magic number is wrong, the type code is unknown
    or the data length does not match the dimensions in the header (truncated or corrupt file).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a-idx2-ubyte"
        >>> write_idx(p, np.arange(6, dtype=np.uint8).reshape(2, 3))
        >>> read_idx(p).tolist()
        [[0, 1, 2], [3, 4, 5]]
    """
    path = Path(path)
    buf = _read_bytes(path)
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0:
        raise InputError(f"{str(path)!r} is not an IDX file: bad magic number {buf[:4].hex() or '(empty)'} "
                         "(expected 0000 + type byte + ndim byte)")
    code, ndim = buf[2], buf[3]
    if code not in _CODES:
        raise InputError(f"{str(path)!r}: unknown IDX type code 0x{code:02x}; known: "
                         + ", ".join(f"0x{c:02x}" for c in _CODES))
    header = 4 + 4 * ndim
    if ndim == 0 or len(buf) < header:
        raise InputError(f"{str(path)!r}: IDX header truncated or with 0 dimensions (ndim={ndim})")
    dims = tuple(int(v) for v in np.frombuffer(buf, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_CODES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(buf) - header != expected:
        raise InputError(f"{str(path)!r}: IDX header says shape {dims} ({expected} data bytes) but the "
                         f"file holds {len(buf) - header}; it is truncated or corrupt — download it again")
    arr = np.frombuffer(buf, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: np.ndarray, *, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when ``compress`` or the name ends in ``.gz``)."""
    a = np.ascontiguousarray(array)
    key = a.dtype.newbyteorder("=")
    if key not in _BY_DTYPE:
        raise InputError(f"IDX cannot store dtype {a.dtype}; use uint8, int8, int16, int32, float32 or float64")
    if a.ndim == 0 or a.ndim > 255:
        raise InputError(f"IDX needs 1 to 255 dimensions; got {a.ndim}")
    code = _BY_DTYPE[key]
    data = (bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
            + a.astype(_CODES[code]).tobytes())
    path = Path(path)
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=6)
    atomic_write_bytes(path, data)
