"""A tiny corpus of real-world video files written with the FFmpeg binary that ``imageio-ffmpeg`` ships.

Every frame shows its source index as its grey level (``20 + 5 * i``), a red stripe on the left and a green
band at the top, so a test can tell which frame a decoder returned and how it was oriented. Files are 32x24
(display), 20 to 40 frames.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

H, W = 24, 32


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def source_frames(n: int, h: int = H, w: int = W, noise: bool = False) -> np.ndarray:
    out = np.empty((n, h, w, 3), np.uint8)
    rng = np.random.default_rng(0)
    for i in range(n):
        out[i] = 20 + 5 * i
        if noise:  # texture, so that every frame costs bytes (a truncation then cuts into frame data)
            jitter = rng.integers(-12, 13, size=(h - h // 3, w - w // 4, 1))
            out[i, h // 3:, w // 4:] = (20 + 5 * i + jitter).clip(0, 255)
        out[i, :, : max(2, w // 8)] = (230, 30, 30)
        out[i, : max(2, h // 8)] = (30, 220, 30)
    return out


def frame_id(frame: np.ndarray) -> int:
    """The source index a decoded frame shows (its grey level away from the stripes)."""
    h, w = frame.shape[:2]
    return int(round((float(np.median(frame[h // 3:, w // 4:])) - 20) / 5))


@dataclass
class Item:
    """One corpus file and what it must decode to."""

    path: Path
    ids: list[int] = field(default_factory=list)  # source index of each decodable frame, presentation order
    times: list[float] = field(default_factory=list)  # their times, seconds since the first
    rotation: int = 0
    broken: str = ""  # why validate() must flag it ("" = usable)
    usable_frames: int | None = None  # at most this many frames usable (damaged tail)


def _run(args: list[str], data: bytes | None = None) -> None:
    subprocess.run([ffmpeg(), "-v", "error", "-y", *args], input=data, check=True, capture_output=True)


def _encode(path: Path, codec_args: list[str], n: int = 30, rate: int = 10, pre: list[str] | None = None,
            noise: bool = False) -> Path:
    frames = source_frames(n, noise=noise)
    _run(["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-r", str(rate), "-i", "-", *(pre or []),
          *codec_args, str(path)], frames.tobytes())
    return path


X264 = ["-c:v", "libx264", "-crf", "12", "-g", "8", "-bf", "2", "-pix_fmt", "yuv420p"]


def _has_encoder(name: str) -> bool:
    out = subprocess.run([ffmpeg(), "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    return f" {name} " in out


def build(root: Path) -> dict[str, Item]:
    """Write the corpus into ``root`` and return it by short name."""
    root.mkdir(parents=True, exist_ok=True)
    n = 30
    plain = list(range(n))
    t10 = [i / 10 for i in range(n)]
    items: dict[str, Item] = {}

    def add(name: str, path: Path, **kw) -> None:
        kw.setdefault("ids", plain)
        kw.setdefault("times", t10)
        items[name] = Item(path, **kw)

    add("h264_mp4", _encode(root / "h264.mp4", X264))
    add("vp9_webm", _encode(root / "vp9.webm", ["-c:v", "libvpx-vp9", "-crf", "10", "-b:v", "0", "-g", "8"]))
    add("hevc_mkv", _encode(root / "hevc.mkv", ["-c:v", "libx265", "-crf", "12", "-g", "8",
                                                  "-x265-params", "log-level=none"]))
    add("mjpeg_avi", _encode(root / "mjpeg.avi", ["-c:v", "mjpeg", "-q:v", "2"]))
    add("h264_mov", _encode(root / "h264.mov", X264))
    if _has_encoder("libaom-av1"):
        add("av1_mkv", _encode(root / "av1.mkv", ["-c:v", "libaom-av1", "-crf", "20", "-cpu-used", "8", "-g", "8"]))
    add("ffv1_mkv", _encode(root / "ffv1.mkv", ["-c:v", "ffv1"]))
    add("h264_10bit", _encode(root / "h264_10bit.mp4", ["-c:v", "libx264", "-crf", "12", "-g", "8",
                                                         "-pix_fmt", "yuv420p10le"]))
    add("h264_444", _encode(root / "h264_444.mp4", ["-c:v", "libx264", "-crf", "12", "-g", "8", "-pix_fmt", "yuv444p"]))
    add("h264_ts", _encode(root / "h264.ts", [*X264, "-f", "mpegts"]))
    add("h264_m4v", _encode(root / "h264.m4v", X264))
    add("mpeg2_mpg", _encode(root / "mpeg2.mpg", ["-c:v", "mpeg2video", "-q:v", "2", "-g", "8"]))
    add("theora_ogv", _encode(root / "theora.ogv", ["-c:v", "libtheora", "-q:v", "9"]))
    add("flv", _encode(root / "flv1.flv", ["-c:v", "flv", "-q:v", "2"]))
    add("wmv", _encode(root / "wmv2.wmv", ["-c:v", "wmv2", "-q:v", "2"]))
    add("mpeg4_3gp", _encode(root / "mpeg4.3gp", ["-c:v", "mpeg4", "-q:v", "2"]))
    # variable frame rate: gaps of +0.3 s after frame 10 and +0.5 s after frame 20 (pts in the 1/10 s time base)
    vfr_times = [i * 0.1 + 0.3 * (i >= 10) + 0.5 * (i >= 20) for i in range(n)]
    add("vfr_mp4", _encode(root / "vfr.mp4", [*X264, "-vf", "setpts='N+gte(N\\,10)*3+gte(N\\,20)*5'",
                                              "-fps_mode", "vfr"]), times=vfr_times)
    # rotation metadata (display matrix), 90 degrees counter-clockwise: a phone held upright
    _run(["-display_rotation", "90", "-i", str(root / "h264.mp4"), "-c", "copy", str(root / "rot90.mp4")])
    add("rot90_mp4", root / "rot90.mp4", rotation=90)
    # start offset of 2.5 s
    _run(["-i", str(root / "h264.mp4"), "-c", "copy", "-output_ts_offset", "2.5", str(root / "offset.mp4")])
    add("offset_mp4", root / "offset.mp4")
    # an edit list: cut at 0.45 s without re-encoding (frames 0-4 stay in the file, marked to be discarded)
    _run(["-ss", "0.45", "-i", str(root / "h264.mp4"), "-c", "copy", str(root / "edit.mp4")])
    add("edit_mp4", root / "edit.mp4", ids=list(range(5, n)), times=[i / 10 for i in range(n - 5)])
    # damaged tail: 40 textured frames, index at the front (faststart), the last 30 % of the bytes cut off
    _encode(root / "full.mp4", [*X264, "-movflags", "+faststart"], n=40, noise=True)
    data = (root / "full.mp4").read_bytes()
    (root / "damaged_tail.mp4").write_bytes(data[: int(len(data) * 0.7)])
    (root / "full.mp4").unlink()
    add("damaged_tail", root / "damaged_tail.mp4", ids=list(range(40)), times=[i / 10 for i in range(40)],
        usable_frames=39)
    # broken files
    data = (root / "h264.mp4").read_bytes()
    (root / "no_index.mp4").write_bytes(data[: len(data) // 2])  # index (moov) at the end: cut off
    add("no_index", root / "no_index.mp4", broken="no video stream")
    (root / "zero.mp4").write_bytes(b"")
    add("zero", root / "zero.mp4", broken="empty file")
    _run(["-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(root / "audio_only.mp4")])
    add("audio_only", root / "audio_only.mp4", broken="no video stream (streams: audio)")
    (root / "text.mp4").write_text("not a video\n")
    add("text", root / "text.mp4", broken="not a video container")
    # a unicode name
    uni = root / "vidéo_日本語_😀.mp4"
    uni.write_bytes((root / "h264.mp4").read_bytes())
    add("unicode", uni)
    return items
