"""The wire format: msgpack, with numpy arrays as maps {b"__ndarray__": True, b"data": bytes,
b"dtype": str, b"shape": [...]} and numpy scalars as {b"__npgeneric__": True, b"data": value,
b"dtype": str} — the convention of openpi's `msgpack_numpy`, so its clients and ours interoperate.

Decoding never runs code: only numeric and boolean dtypes are accepted, and an array's byte count must
match its shape; anything else is a `WireError` (the server answers 400).
"""

from __future__ import annotations

from typing import Any

import numpy as np

ALLOWED_KINDS = "biuf"  # bool, signed, unsigned, float


class WireError(ValueError):
    """A message that is not valid msgpack, or holds an array it cannot safely rebuild."""


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in ALLOWED_KINDS:
            raise WireError(f"arrays of dtype {obj.dtype} are not sent")
        return {
            b"__ndarray__": True,
            b"data": np.ascontiguousarray(obj).tobytes(),
            b"dtype": obj.dtype.str,
            b"shape": list(obj.shape),
        }
    if isinstance(obj, np.generic):
        if obj.dtype.kind not in ALLOWED_KINDS:
            raise WireError(f"scalars of dtype {obj.dtype} are not sent")
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _decode(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        try:
            dtype = np.dtype(obj[b"dtype"])
            shape = tuple(int(n) for n in obj[b"shape"])
            data = obj[b"data"]
        except (KeyError, TypeError, ValueError) as e:
            raise WireError(f"malformed array ({e})") from e
        if dtype.kind not in ALLOWED_KINDS:
            raise WireError(f"arrays of dtype {dtype} are not accepted")
        if not isinstance(data, bytes) or any(n < 0 for n in shape):
            raise WireError("malformed array (data must be bytes, shape non-negative)")
        if len(data) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise WireError(f"array of shape {shape} and dtype {dtype} cannot hold {len(data)} bytes")
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if b"__npgeneric__" in obj:
        try:
            dtype = np.dtype(obj[b"dtype"])
        except (KeyError, TypeError) as e:
            raise WireError(f"malformed scalar ({e})") from e
        if dtype.kind not in ALLOWED_KINDS:
            raise WireError(f"scalars of dtype {dtype} are not accepted")
        return dtype.type(obj[b"data"])
    return obj


def pack(obj: Any) -> bytes:
    import msgpack

    return msgpack.packb(obj, default=_encode)


def unpack(data: bytes) -> Any:
    import msgpack

    try:
        return msgpack.unpackb(data, object_hook=_decode)
    except WireError:
        raise
    except Exception as e:  # msgpack raises several unrelated types for garbage input
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise WireError(f"not a msgpack message ({detail})") from e
