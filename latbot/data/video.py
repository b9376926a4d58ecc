"""Video decoding (PyAV; decord optional) and the one resize every frame goes through at conversion.

Resize (documented in docs/data.md): frames are resized once, when a store is written, to the store's
square training resolution with PIL's bilinear filter (antialiased when downscaling). `mode` says what
happens to a non-square source: "pad" letterboxes (keeps the whole view, black bars; the default, as
openpi's resize_with_pad), "crop" takes the centre square, "stretch" ignores the aspect ratio.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from latbot.errors import LatBotError, MissingExtraError

RESIZE_MODES = ("pad", "crop", "stretch")


class VideoError(LatBotError):
    """A video file is missing, unreadable, truncated or in an unexpected format."""


def resize_frame(frame: np.ndarray, size: tuple[int, int], mode: str = "pad") -> np.ndarray:
    """(H, W, 3) uint8 → (size[0], size[1], 3) uint8."""
    from PIL import Image

    th, tw = size
    h, w = frame.shape[:2]
    if (h, w) == (th, tw):
        return frame
    img = Image.fromarray(frame)
    if mode == "stretch":
        return np.asarray(img.resize((tw, th), Image.Resampling.BILINEAR))
    if mode == "crop":
        scale = max(th / h, tw / w)
        nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
        top, left = (nh - th) // 2, (nw - tw) // 2
        return np.asarray(img.crop((left, top, left + tw, top + th)))
    if mode == "pad":
        scale = min(th / h, tw / w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        out = np.zeros((th, tw, 3), np.uint8)
        top, left = (th - nh) // 2, (tw - nw) // 2
        out[top : top + nh, left : left + nw] = np.asarray(img.resize((nw, nh), Image.Resampling.BILINEAR))
        return out
    raise ValueError(f"resize mode must be one of {RESIZE_MODES}, got {mode!r}")


def decode_frames(
    path: str | Path,
    start: float = 0.0,
    stop: float | None = None,
    expected: int | None = None,
    tolerance: float = 1e-4,
    threaded: bool = True,
) -> Iterator[np.ndarray]:
    """RGB frames (H, W, 3) uint8 of `path` whose timestamps lie in [start, stop) seconds.

    Seeks to `start` first (LeRobot v3.0 concatenates many episodes in one mp4). With `expected`, a
    video that ends early raises a `VideoError` naming the file (a truncated download, say).
    `threaded` lets FFmpeg use every core (conversion); DataLoader workers should pass False."""
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    count = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if threaded:
                stream.thread_type = "AUTO"
            if start > 0:
                container.seek(int(max(0.0, start - 1.0) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base) if frame.pts is not None else count / float(stream.average_rate)
                if t < start - tolerance:
                    continue
                if stop is not None and t >= stop - tolerance:
                    break
                count += 1
                yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: cannot decode video: {e}") from e
    if expected is not None and count < expected:
        raise VideoError(f"{path}: expected {expected} frames in [{start:.3f}, {stop}) s, decoded {count} (truncated?)")


def decode_frames_decord(path: str | Path, indices: list[int]) -> np.ndarray:
    """Frames at `indices` with decord (h264/hevc; no AV1). Open it inside each DataLoader worker."""
    try:
        import decord
    except ImportError as e:
        raise MissingExtraError("reading video with decord", "decord", "decord") from e
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    return reader.get_batch(indices).asnumpy()


def encode_video(path: str | Path, frames: np.ndarray, fps: float, codec: str = "libsvtav1", gop: int = 2) -> None:
    """Write (T, H, W, 3) uint8 frames as an mp4 (yuv420p), as LeRobot does (AV1 by default, GOP 2).
    Used by the tests and the benchmark to build sources in LeRobot's real layout."""
    from fractions import Fraction

    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.gop_size = gop
        if codec == "libsvtav1":
            stream.options = {"preset": "11", "crf": "30"}
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
