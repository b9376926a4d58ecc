"""Reads an episode store's arrays without zarr-python's per-read pipeline.

zarr-python spends ~1 ms per call and ~1 ms per chunk in its asyncio machinery, far more than it takes to
decompress the bytes of a training clip. The store's own layout is simple, so this module reads it
directly, for the layouts `EpisodeStore.create` writes (Zarr v3, C order, one dimension chunked):

    sharded (frames, vectors)   codecs = [sharding_indexed{chunk_shape, codecs = [bytes, blosc|zstd?, crc32c?],
                                          index_codecs = [bytes(little), crc32c], index_location = end}]
    unsharded (older vectors)   codecs = [bytes(little), blosc|zstd?, crc32c?]
    image codecs (frames)       the same, with codecs = [latbot.image{format}, crc32c?] and one frame per chunk
                                (latbot.data.imagecodec: PNG, QOI, WebP, JPEG XL, JPEG, decoded into the output)

A shard file's index (offset, nbytes per inner chunk, a crc32c after it) is read once per file and kept
with an open descriptor of that very file, so a shard a writer replaces later (write + rename) is still
read consistently. A chunk's bytes are read with `os.pread` (no compression: `os.preadv` straight into the
output array) and decoded by numcodecs into the preallocated output. The crc32c of every chunk is checked
unless `verify=False`. Anything else (another codec, a transpose, big endian) is not handled here:
`layout()` returns None and the caller reads with zarr-python.

The store stays a plain Zarr v3 store: zarr-python writes it and reads it; only the reading is ours.
Errors are not fill values: a block file that is missing or empty raises `BlockMissing`, an inner chunk
missing from a shard's index, a short read, a bad checksum or a chunk that does not decode raise
`BlockCorrupt`; `EpisodeStore` turns both into `StoreError`s naming the array and the frames.
"""

from __future__ import annotations

import itertools
import os
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_CODEC = "latbot.image"  # latbot.data.imagecodec.NAME (not imported here: it imports zarr)
_IMAGE_FORMATS = ("png", "qoi", "webp", "jpegxl", "jpeg")
EMPTY = 2**64 - 1  # a shard index entry of an inner chunk that was never written
BLOSC_HEADER = 16  # c-blosc 1's header: version, versionlz, flags, typesize, nbytes, blocksize, cbytes
BLOSC_MEMCPYED = 0x02  # flags: the data follows the header uncompressed
MAX_RUN_CHUNKS = 256  # uncompressed chunks back to back in a file: read by one preadv (IOV_MAX is 1024)
MAX_OPEN_FILES = 64  # open block files kept per array (least recently used are closed)
CACHE_CHUNK_BYTES = 4 << 20  # decoded chunks at most this big are kept (vectors, not frames) ...
CACHE_CHUNKS = 16  # ... this many per array


class BlockMissing(Exception):
    """The block file holding rows [start, stop) is not on disk or is empty."""

    def __init__(self, start: int, stop: int):
        super().__init__(f"the block file of rows {start}:{stop} is missing or empty")
        self.start, self.stop = start, stop


class BlockCorrupt(Exception):
    """A chunk's bytes are there but wrong (checksum, codec, truncated, missing from the shard index)."""


@dataclass(frozen=True)
class Layout:
    """What reading needs from an array's zarr.json."""

    shape: tuple[int, ...]
    dtype: np.dtype
    chunk_rows: int  # rows per (inner) chunk
    file_rows: int  # rows per block file (a shard, or the chunk itself when unsharded)
    compressor: Any  # a numcodecs codec, or None
    crc: bool  # a crc32c follows each chunk's bytes
    sharded: bool
    separator: str  # chunk key encoding: "default" → "c/0/0", v2 → "0.0"
    prefix: str
    image: str | None = None  # an image format (latbot.image codec: one frame per chunk), else None

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    @cached_property
    def chunk_nbytes(self) -> int:
        return self.chunk_rows * int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def chunks_per_file(self) -> int:
        return self.file_rows // self.chunk_rows

    def key(self, block: int) -> str:
        return self.prefix + self.separator.join(str(i) for i in (block,) + (0,) * (len(self.shape) - 1))


def layout(meta: dict[str, Any]) -> Layout | None:
    """The layout of an array from its zarr.json document, or None where this reader does not apply."""
    try:
        shape = tuple(int(s) for s in meta["shape"])
        dtype = np.dtype(meta["data_type"]).newbyteorder("<")
        outer = [int(s) for s in meta["chunk_grid"]["configuration"]["chunk_shape"]]
        enc = meta.get("chunk_key_encoding", {"name": "default"})
        sep = (enc.get("configuration") or {}).get("separator", "/" if enc["name"] == "default" else ".")
        prefix = {"default": "c" + sep, "v2": ""}[enc["name"]]
        if meta.get("storage_transformers") or not shape or meta.get("zarr_format") != 3:
            return None
        codecs = meta["codecs"]
        sharded = len(codecs) == 1 and codecs[0]["name"] == "sharding_indexed"
        if sharded:
            cfg = codecs[0]["configuration"]
            inner = [int(s) for s in cfg["chunk_shape"]]
            index = [c["name"] for c in cfg.get("index_codecs", [])]
            if cfg.get("index_location", "end") != "end" or index != ["bytes", "crc32c"]:
                return None
            if _endian(cfg["index_codecs"][0]) != "little":
                return None
            codecs = cfg["codecs"]
        else:
            inner = outer
        # one dimension chunked: every other dimension whole, in both the outer and the inner grid
        if outer[1:] != list(shape[1:]) or inner[1:] != list(shape[1:]) or outer[0] % inner[0]:
            return None
        names = [c["name"] for c in codecs]
        if names and names[0] == IMAGE_CODEC:  # one image per chunk (latbot.data.imagecodec)
            fmt = (codecs[0].get("configuration") or {}).get("format")
            image_ok = dtype == np.uint8 and len(shape) == 4 and shape[-1] == 3 and inner[0] == 1
            if not image_ok or fmt not in _IMAGE_FORMATS or names[1:] not in ([], ["crc32c"]):
                return None
            return Layout(shape, dtype, 1, outer[0], None, names[1:] == ["crc32c"], sharded, sep, prefix, fmt)
        if not names or names[0] != "bytes" or _endian(codecs[0]) not in ("little", None):
            return None
        crc = names[-1] == "crc32c"
        middle = codecs[1 : len(codecs) - crc]
        if len(middle) > 1:
            return None
        compressor = _compressor(middle[0]) if middle else None
        if middle and compressor is None:
            return None
        if dtype.itemsize > 1 and _endian(codecs[0]) != "little":
            return None
        return Layout(shape, dtype, inner[0], outer[0], compressor, crc, sharded, sep, prefix)
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def _endian(codec: dict[str, Any]) -> str | None:
    return (codec.get("configuration") or {}).get("endian")


def _compressor(codec: dict[str, Any]) -> Any:
    from numcodecs import Blosc, Zstd

    if codec["name"] == "zstd":
        return Zstd()
    if codec["name"] == "blosc":
        return Blosc()  # the frame header says how it was compressed
    return None


class _Block:
    """One open block file: its descriptor, size, and (sharded) its index of (offset, nbytes) per chunk."""

    __slots__ = ("fd", "index", "size")

    def __init__(self, fd: int, size: int, index: np.ndarray | None):
        self.fd, self.size, self.index = fd, size, index


class ArrayReader:
    """Rows of one array of a store. Not shared between threads; a forked worker may keep using it (reads
    are `pread`s at explicit offsets), a spawned one opens its own."""

    def __init__(self, directory: str | Path, lay: Layout, verify: bool = True):
        self.directory = Path(directory)
        self.layout = lay
        self.verify = verify and lay.crc
        self._blocks: OrderedDict[int, _Block] = OrderedDict()
        self._decoded: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache = lay.chunk_nbytes <= CACHE_CHUNK_BYTES
        self._blosc = type(lay.compressor).__name__ == "Blosc"

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        blocks = getattr(self, "_blocks", {})
        while blocks:
            _, block = blocks.popitem()
            try:
                os.close(block.fd)
            except OSError:
                pass

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_blocks": OrderedDict(), "_decoded": OrderedDict()}

    # -- reading -------------------------------------------------------------------------------------------
    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop)."""
        return self.take(np.arange(start, stop))

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows at `rows` (increasing integers, each in [0, shape[0])) → (len(rows), *row_shape)."""
        lay = self.layout
        rows = np.asarray(rows, np.int64)
        out = np.empty((len(rows), *lay.row_shape), lay.dtype)
        if not len(rows):
            return out
        if rows[0] < 0 or rows[-1] >= lay.shape[0]:
            raise IndexError(f"rows {rows[0]}..{rows[-1]} outside [0, {lay.shape[0]})")
        cr = lay.chunk_rows
        if cr == 1 and lay.sharded and lay.compressor is None and lay.image is None and len(rows) > 1:
            self._take_frames(rows, out)
            return out
        chunks = rows // cr
        cuts = np.flatnonzero(chunks[1:] != chunks[:-1]) + 1
        bounds = np.concatenate([[0], cuts, [len(rows)]]).tolist()
        whole: list[tuple[int, np.ndarray]] = []
        for i0, i1 in itertools.pairwise(bounds):
            c = int(chunks[i0])
            local = rows[i0:i1] - c * cr
            if i1 - i0 == cr and local[0] == 0 and local[-1] == cr - 1 and c not in self._decoded:
                whole.append((c, out[i0:i1]))  # a whole chunk, in order: decoded straight into the output
            else:
                out[i0:i1] = self._chunk(c)[local]
        if lay.compressor is None and lay.image is None and len(whole) > 1:
            self._read_runs(whole)
        else:
            for c, dst in whole:
                self._decode(c, dst)
        return out

    def _take_frames(self, rows: np.ndarray, out: np.ndarray) -> None:
        """Uncompressed one-row chunks of a sharded array (frames at `chunk_frames=1`): each shard's index
        entries for `rows` are checked at once, and chunks back to back in the file are read by one `preadv`
        per run. Anything wrong goes through `_read_runs`, which names the chunk."""
        lay = self.layout
        want = lay.chunk_nbytes + 4 * lay.crc
        blocks, local = np.divmod(rows, lay.file_rows)
        cuts = (np.flatnonzero(blocks[1:] != blocks[:-1]) + 1).tolist()
        base = memoryview(out.reshape(-1).view(np.uint8))
        for i0, i1 in itertools.pairwise([0, *cuts, len(rows)]):
            block = self._block(int(blocks[i0]))
            entries = block.index[local[i0:i1]]
            offsets, sizes = entries[:, 0], entries[:, 1]
            last = block.size - (block.index.nbytes + 4) - want  # the highest offset a chunk may start at
            if last < 0 or (sizes != want).any() or (offsets > np.uint64(last)).any():
                self._read_runs([(int(r), out[i0 + k : i0 + k + 1]) for k, r in enumerate(rows[i0:i1].tolist())])
                continue
            breaks = (np.flatnonzero(offsets[1:] != offsets[:-1] + np.uint64(want)) + 1).tolist()
            chunk_ids = rows[i0:i1].tolist()
            n = lay.chunk_nbytes
            for r0, r1 in itertools.pairwise([0, *breaks, i1 - i0]):
                for s0 in range(r0, r1, MAX_RUN_CHUNKS):
                    s1 = min(r1, s0 + MAX_RUN_CHUNKS)
                    a, b = (i0 + s0) * n, (i0 + s1) * n  # these rows of `out`, as bytes
                    views = [base[p : p + n] for p in range(a, b, n)] if lay.crc else [base[a:b]]
                    self._read_run(block, int(offsets[s0]), chunk_ids[s0:s1], views)

    def _chunk(self, c: int) -> np.ndarray:
        """Chunk `c` decoded into a fresh array (kept in a small cache when it is small)."""
        hit = self._decoded.get(c)
        if hit is not None:
            self._decoded.move_to_end(c)
            return hit
        lay = self.layout
        buf = np.empty((lay.chunk_rows, *lay.row_shape), lay.dtype)
        self._decode(c, buf)
        if self._cache:
            self._decoded[c] = buf
            if len(self._decoded) > CACHE_CHUNKS:
                self._decoded.popitem(last=False)
        return buf

    def _locate(self, c: int) -> tuple[_Block, int, int]:
        """Chunk `c`'s block file, offset and size there (checked against the file)."""
        lay = self.layout
        block_no, local = divmod(c * lay.chunk_rows, lay.file_rows)
        block = self._block(block_no)
        if block.index is None:
            return block, 0, block.size
        offset, nbytes = (int(v) for v in block.index[local // lay.chunk_rows])
        if offset == EMPTY and nbytes == EMPTY:
            raise BlockCorrupt(f"chunk {c} is missing from its shard's index")
        if offset + nbytes > block.size - (block.index.nbytes + 4):
            raise BlockCorrupt(f"chunk {c} lies outside its shard file ({offset}+{nbytes} > {block.size})")
        return block, offset, nbytes

    def _read_runs(self, whole: list[tuple[int, np.ndarray]]) -> None:
        """Uncompressed whole chunks → their outputs; chunks lying back to back in one file (a clip of
        one-frame chunks, as written) are read by one `preadv` each run, checksums checked per chunk."""
        lay = self.layout
        want = lay.chunk_nbytes + 4 * lay.crc
        chunks: list[int] = []
        views: list[memoryview] = []
        start = end = -1
        block = None
        for c, dst in whole:
            b, offset, nbytes = self._locate(c)
            if nbytes != want:
                raise BlockCorrupt(f"chunk {c} holds {nbytes} bytes, expected {want}")
            if chunks and (b is not block or offset != end or len(chunks) == MAX_RUN_CHUNKS):
                self._read_run(block, start, chunks, views)
                chunks, views = [], []
            if not chunks:
                block, start = b, offset
            chunks.append(c)
            views.append(memoryview(dst.reshape(-1).view(np.uint8)))
            end = offset + nbytes
        self._read_run(block, start, chunks, views)

    def _read_run(self, block: _Block, offset: int, chunks: list[int], views: list[memoryview]) -> None:
        """Chunks lying back to back in `block` from `offset` → `views` (one per chunk, or without checksums
        any split of the same bytes) by one `preadv`; each chunk's crc32c checked."""
        lay = self.layout
        tails = [bytearray(4) for _ in chunks] if lay.crc else []
        iov = [v for pair in zip(views, tails, strict=True) for v in pair] if lay.crc else views
        nbytes = len(chunks) * (lay.chunk_nbytes + 4 * lay.crc)
        got = os.preadv(block.fd, iov, offset)
        if got != nbytes:
            raise BlockCorrupt(f"chunks {chunks[0]}..{chunks[-1]}: read {got} of {nbytes} bytes")
        if self.verify:
            for c, view, tail in zip(chunks, views, tails, strict=True):
                _check_crc(view, tail, c)

    def _decode(self, c: int, dst: np.ndarray) -> None:
        """Chunk `c`'s bytes → `dst` (C-contiguous, exactly one chunk)."""
        lay = self.layout
        block, offset, nbytes = self._locate(c)
        want = lay.chunk_nbytes
        view = memoryview(dst.reshape(-1).view(np.uint8))
        if lay.compressor is None and lay.image is None:
            if nbytes != want + 4 * lay.crc:
                raise BlockCorrupt(f"chunk {c} holds {nbytes} bytes, expected {want + 4 * lay.crc}")
            tail = bytearray(4 * lay.crc)
            got = os.preadv(block.fd, [view, tail] if lay.crc else [view], offset)
            if got != nbytes:
                raise BlockCorrupt(f"chunk {c}: read {got} of {nbytes} bytes")
            if self.verify:
                _check_crc(view, tail, c)
            return
        if self._blosc and nbytes == want + BLOSC_HEADER + 4 * lay.crc and self._memcpyed(block, offset, c, view):
            return
        raw = os.pread(block.fd, nbytes, offset)
        if len(raw) != nbytes or nbytes < 4 * lay.crc:
            raise BlockCorrupt(f"chunk {c}: read {len(raw)} of {nbytes} bytes")
        payload = memoryview(raw)[: nbytes - 4] if lay.crc else memoryview(raw)
        if self.verify:
            _check_crc(payload, memoryview(raw)[nbytes - 4 :], c)
        try:
            if lay.image is not None:
                from latbot.data.imagecodec import decode_into

                decode_into(payload, lay.image, dst[0])
                return
            _decompress(lay.compressor, payload, dst, want)
        except BlockCorrupt:
            raise
        except Exception as e:  # the codec's own error on bytes that do not decode
            raise BlockCorrupt(f"chunk {c} does not decode ({type(e).__name__}: {e})") from e

    def _memcpyed(self, block: _Block, offset: int, c: int, view: memoryview) -> bool:
        """A blosc chunk its compressor stored as is (incompressible frames: camera images): header, bytes and
        checksum read by one `preadv` straight into the output, no copy. False when the header says the chunk
        is compressed after all (it merely has that size): the caller decodes it."""
        lay = self.layout
        head, tail = bytearray(BLOSC_HEADER), bytearray(4 * lay.crc)
        nbytes = BLOSC_HEADER + len(view) + len(tail)
        got = os.preadv(block.fd, [head, view, tail] if lay.crc else [head, view], offset)
        if got != nbytes:
            raise BlockCorrupt(f"chunk {c}: read {got} of {nbytes} bytes")
        decoded, cbytes = int.from_bytes(head[4:8], "little"), int.from_bytes(head[12:16], "little")
        if not head[2] & BLOSC_MEMCPYED or decoded != len(view) or cbytes != nbytes - len(tail):
            return False
        if self.verify:
            import google_crc32c

            if google_crc32c.extend(google_crc32c.value(bytes(head)), np.frombuffer(view, np.uint8)) != int.from_bytes(
                tail, "little"
            ):
                raise BlockCorrupt(f"chunk {c}: crc32c checksum mismatch (the bytes on disk are damaged)")
        return True

    def _block(self, block_no: int) -> _Block:
        block = self._blocks.get(block_no)
        if block is not None:
            self._blocks.move_to_end(block_no)
            return block
        lay = self.layout
        rows = (block_no * lay.file_rows, min((block_no + 1) * lay.file_rows, lay.shape[0]))
        try:
            fd = os.open(self.directory / lay.key(block_no), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
            raise BlockMissing(*rows) from e
        try:
            size = os.fstat(fd).st_size
            if size == 0:
                raise BlockMissing(*rows)
            index = self._index(fd, size) if lay.sharded else None
        except BaseException:
            os.close(fd)
            raise
        block = self._blocks[block_no] = _Block(fd, size, index)
        if len(self._blocks) > MAX_OPEN_FILES:
            os.close(self._blocks.popitem(last=False)[1].fd)
        return block

    def _index(self, fd: int, size: int) -> np.ndarray:
        n = self.layout.chunks_per_file
        length = 16 * n + 4
        if size < length:
            raise BlockCorrupt(f"shard file of {size} bytes is shorter than its index ({length} bytes)")
        raw = os.pread(fd, length, size - length)
        if len(raw) != length:
            raise BlockCorrupt("short read of a shard index")
        _check_crc(memoryview(raw)[:-4], memoryview(raw)[-4:], "index")
        return np.frombuffer(raw, "<u8", count=2 * n).reshape(n, 2)


def _check_crc(payload: memoryview, stored: Any, what: Any) -> None:
    import google_crc32c

    if google_crc32c.value(np.frombuffer(payload, np.uint8)) != int.from_bytes(bytes(stored), "little"):
        raise BlockCorrupt(f"chunk {what}: crc32c checksum mismatch (the bytes on disk are damaged)")


def _decompress(codec: Any, payload: memoryview, dst: np.ndarray, want: int) -> None:
    from numcodecs import Blosc

    if isinstance(codec, Blosc):
        # the blosc header: nbytes (decoded) at bytes 4:8, cbytes (this frame) at 12:16, little endian
        head = bytes(payload[:16])
        if len(head) < 16 or int.from_bytes(head[4:8], "little") != want:
            raise BlockCorrupt(f"blosc chunk does not hold {want} bytes")
        if int.from_bytes(head[12:16], "little") != len(payload):
            raise BlockCorrupt("blosc chunk is truncated")
        codec.decode(payload, out=dst.reshape(-1).view(np.uint8))
        return
    raw = codec.decode(payload)  # zstd: the frame's size is checked before copying
    if len(memoryview(raw).cast("B")) != want:
        raise BlockCorrupt(f"chunk decodes to {len(memoryview(raw).cast('B'))} bytes, expected {want}")
    dst.reshape(-1).view(np.uint8)[:] = np.frombuffer(raw, np.uint8)
