"""Per-frame image codecs for an episode store's frames: one chunk = one (1, H, W, 3) uint8 frame, encoded as
one image (PNG, QOI, WebP lossless, JPEG XL lossless, or JPEG at a stated quality) with imagecodecs.

In Zarr v3 this is an array-to-bytes codec, named `latbot.image`, in place of `bytes`; a crc32c follows it as
for the other codecs (the frame arrays' codecs are `[latbot.image{format, ...}, crc32c]` inside the shard):

    {"name": "latbot.image", "configuration": {"format": "png"}}
    {"name": "latbot.image", "configuration": {"format": "jpeg", "quality": 95}}

`register()` makes zarr-python know the codec (EpisodeStore does this before it opens or creates a store;
the package's `zarr.codecs` entry point does it for plain zarr-python once LatBot is installed). The store
codec names (`EpisodeStore.create(codec=...)`, `latbot data convert --codec`) map to configurations in
`STORE_CODECS`; `jpeg<Q>` takes any quality Q in [1, 100] (jpeg95 and jpeg90 are the measured ones).
imagecodecs is imported only when a frame is encoded or decoded, so stores with the byte codecs
(none/lz4/zstd) never need it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import JSON, parse_named_configuration

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer

NAME = "latbot.image"
FORMATS = ("png", "qoi", "webp", "jpegxl", "jpeg")
LOSSY = ("jpeg",)
# store codec name → configuration (see module docstring); jpeg<Q> is parsed by `store_config`
STORE_CODECS: dict[str, dict[str, Any]] = {
    "png": {"format": "png"},
    "qoi": {"format": "qoi"},
    "webp-lossless": {"format": "webp"},
    "jpegxl-lossless": {"format": "jpegxl"},
    "jpeg95": {"format": "jpeg", "quality": 95},
    "jpeg90": {"format": "jpeg", "quality": 90},
}
# imagecodecs' class holding `.available` per format
_AVAILABLE = {"png": "PNG", "qoi": "QOI", "webp": "WEBP", "jpegxl": "JPEGXL", "jpeg": "JPEG8"}
# encoder settings: PNG zlib level 6 (libpng's default); libwebp lossless effort 75 / method 4 (its
# defaults); JPEG XL lossless at effort 3 (decoding cost does not depend on it; encoding at the default 7
# is ~10× slower for ~5 % smaller files); JPEG 4:4:4 (no chroma subsampling: 224² frames are small)
PNG_LEVEL, WEBP_LEVEL, WEBP_METHOD, JPEGXL_EFFORT = 6, 75, 4, 3


def store_config(codec: str) -> dict[str, Any] | None:
    """The codec configuration of a store codec name (`png`, `jpeg95`, ...), or None for a byte codec."""
    if codec in STORE_CODECS:
        return dict(STORE_CODECS[codec])
    m = re.fullmatch(r"jpeg(\d{1,3})", codec)
    if m and 1 <= int(m.group(1)) <= 100:
        return {"format": "jpeg", "quality": int(m.group(1))}
    return None


def available(codec: str) -> bool:
    """True when this imagecodecs build can encode and decode the store codec `codec`."""
    config = store_config(codec)
    if config is None:
        return False
    try:
        import imagecodecs
    except ImportError:
        return False
    _bind_png_to_its_own_zlib()
    return bool(getattr(getattr(imagecodecs, _AVAILABLE[config["format"]], None), "available", False))


def is_lossless(codec: str) -> bool:
    config = store_config(codec)
    return config is None or config["format"] not in LOSSY


def _imagecodecs() -> Any:
    try:
        import imagecodecs
    except ImportError as e:  # a declared dependency; a broken environment says so
        raise RuntimeError("image codecs need the `imagecodecs` package: pip install imagecodecs") from e
    _bind_png_to_its_own_zlib()
    return imagecodecs


def _bind_png_to_its_own_zlib() -> None:
    """Load imagecodecs' PNG extension with RTLD_DEEPBIND, once: it then resolves zlib's symbols in its own
    dependencies first. Loaded plainly after a library that exports an older zlib (decord does), its
    libpng calls that zlib and every PNG fails with "bad parameters to zlib"."""
    import os
    import sys

    if "imagecodecs._png" in sys.modules or not hasattr(os, "RTLD_DEEPBIND"):
        return
    flags = sys.getdlopenflags()
    sys.setdlopenflags(os.RTLD_NOW | os.RTLD_DEEPBIND)
    try:
        import imagecodecs._png  # noqa: F401
    except ImportError:
        pass  # a build without PNG: `available("png")` says so
    finally:
        sys.setdlopenflags(flags)


def encode(image: np.ndarray, fmt: str, quality: int | None = None) -> bytes:
    """One (H, W, 3) uint8 image → its encoded bytes."""
    ic = _imagecodecs()
    image = np.ascontiguousarray(image)
    if fmt == "png":
        return bytes(ic.png_encode(image, level=PNG_LEVEL))
    if fmt == "qoi":
        return bytes(ic.qoi_encode(image))
    if fmt == "webp":
        return bytes(ic.webp_encode(image, level=WEBP_LEVEL, lossless=True, method=WEBP_METHOD, numthreads=1))
    if fmt == "jpegxl":
        return bytes(ic.jpegxl_encode(image, lossless=True, effort=JPEGXL_EFFORT, numthreads=1))
    if fmt == "jpeg":
        return bytes(ic.jpeg8_encode(image, level=quality, subsampling="444"))
    raise ValueError(f"unknown image format {fmt!r}")


def decode_into(data: Any, fmt: str, out: np.ndarray) -> None:
    """Encoded bytes → `out` ((H, W, 3) uint8, C-contiguous), decoded in place. Raises ValueError when the
    bytes are not an image of exactly that shape (the caller reports damage)."""
    ic = _imagecodecs()
    if fmt == "png":
        got = ic.png_decode(data, out=out)
    elif fmt == "qoi":
        got = ic.qoi_decode(data, out=out)
    elif fmt == "webp":
        got = ic.webp_decode(data, hasalpha=False, out=out)
    elif fmt == "jpegxl":
        got = ic.jpegxl_decode(data, numthreads=1, out=out)
    elif fmt == "jpeg":
        got = ic.jpeg8_decode(data, out=out)
    else:
        raise ValueError(f"unknown image format {fmt!r}")
    if got is not out and (got.shape != out.shape or got.dtype != out.dtype):
        raise ValueError(f"decoded a {got.dtype}{got.shape} image, expected {out.dtype}{out.shape}")
    if got is not out:
        out[...] = got


@dataclass(frozen=True)
class ImageCodec(ArrayBytesCodec):
    """A (1, H, W, 3) uint8 chunk ↔ one encoded image (see the module docstring)."""

    is_fixed_size = False

    format: str
    quality: int | None

    def __init__(self, *, format: str, quality: int | None = None) -> None:
        if format not in FORMATS:
            raise ValueError(f"{NAME}: format must be one of {FORMATS}, got {format!r}")
        if (format in LOSSY) != (quality is not None):
            raise ValueError(f"{NAME}: a quality is given for lossy formats ({LOSSY}) only, got {quality!r}")
        if quality is not None and not (isinstance(quality, int) and 1 <= quality <= 100):
            raise ValueError(f"{NAME}: quality must be an integer in [1, 100], got {quality!r}")
        object.__setattr__(self, "format", format)
        object.__setattr__(self, "quality", quality)

    @classmethod
    def from_store_codec(cls, codec: str) -> ImageCodec:
        config = store_config(codec)
        if config is None:
            raise ValueError(f"{codec!r} is not an image codec")
        return cls(**config)

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, configuration = parse_named_configuration(data, NAME, require_configuration=True)
        return cls(**configuration)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        config: dict[str, JSON] = {"format": self.format}
        if self.quality is not None:
            config["quality"] = self.quality
        return {"name": NAME, "configuration": config}

    def validate(self, *, shape: tuple[int, ...], dtype: Any, chunk_grid: Any) -> None:
        if len(shape) != 4 or shape[-1] != 3 or np.dtype(dtype.to_native_dtype()) != np.uint8:
            raise ValueError(f"{NAME}: needs uint8 (N, H, W, 3) frames, got {dtype} {shape}")

    def _check_spec(self, chunk_spec: ArraySpec) -> tuple[int, ...]:
        shape = tuple(chunk_spec.shape)
        if len(shape) != 4 or shape[0] != 1 or shape[-1] != 3:
            raise ValueError(f"{NAME}: a chunk must be one (1, H, W, 3) frame, got {shape}")
        return shape

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        shape = self._check_spec(chunk_spec)
        out = np.empty(shape, np.uint8)
        decode_into(chunk_bytes.as_numpy_array(), self.format, out[0])
        return chunk_spec.prototype.nd_buffer.from_numpy_array(out)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        self._check_spec(chunk_spec)
        image = np.asarray(chunk_array.as_numpy_array(), np.uint8)[0]
        data = np.frombuffer(encode(image, self.format, self.quality), np.uint8)
        return chunk_spec.prototype.buffer.from_array_like(data)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        raise NotImplementedError  # variable size


def register() -> None:
    """Make zarr-python know the `latbot.image` codec (idempotent)."""
    from zarr.registry import register_codec

    register_codec(NAME, ImageCodec)
