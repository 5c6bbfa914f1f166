"""Small, realistic, seeded datasets written as real files: CT-like NIfTI volumes and H.264 mp4 clips.

Both generators write a ``dataset.csv`` next to the files (paths relative to the CSV) and a
``dataset.json`` with the parameters; calling again with the same parameters returns at once.

- Volumes: a body ellipse of soft tissue (~40 HU, noise, a smooth bias field, a fat rim) in air
  (-1000 HU), holding one lesion-like object whose *shape* is the class (``sphere``, ``tube``, ``ring``,
  ``cube``, ``shell``) at a random position, size and orientation. Stored as int16 Hounsfield units with
  an LPS-style affine (x and y flipped) and anisotropic spacing, plus the lesion mask.
- Clips: a textured background and a moving disc whose *direction* of motion is the class; the disc
  wraps around the frame edges, so every single frame has the same position distribution for every
  class and only motion tells the classes apart.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from vit3d.errors import ConfigError
from vit3d.layers.helpers import to_ntuple

__all__ = ["CLIP_CLASSES", "VOLUME_CLASSES", "make_clip_dataset", "make_volume_dataset", "write_mp4"]

_FORMAT_VERSION = 2
VOLUME_CLASSES = ("sphere", "tube", "ring", "cube", "shell")
CLIP_CLASSES = ("right", "left", "down", "up", "down_right", "up_left", "down_left", "up_right")
_DIRECTIONS = {  # (dy, dx) unit vectors in image rows/cols
    "right": (0.0, 1.0), "left": (0.0, -1.0), "down": (1.0, 0.0), "up": (-1.0, 0.0),
    "down_right": (1.0, 1.0), "up_left": (-1.0, -1.0), "down_left": (1.0, -1.0), "up_right": (-1.0, 1.0),
}


def _is_current(root: Path, params: dict) -> bool:
    meta, table = root / "dataset.json", root / "dataset.csv"
    if not (meta.is_file() and table.is_file()):
        return False
    try:
        if json.loads(meta.read_text()) != params:
            return False
        with table.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, ValueError):
        return False
    key = "image" if "image" in params.get("columns", []) else "path"
    return len(rows) == params["num_samples"] and all((root / r[key]).is_file() for r in rows)


def _write_table(root: Path, rows: list[dict], columns: Sequence[str], params: dict) -> Path:
    table = root / "dataset.csv"
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    (root / "dataset.json").write_text(json.dumps(params, indent=1))
    return table


def _stratified_splits(labels: Sequence[int], val_fraction: float, test_fraction: float,
                       rng: np.random.Generator) -> list[str]:
    """Split names per sample, stratified by label, with at least one val sample per class when asked."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) "
                         "and sum to less than 1")
    labels = np.asarray(labels)
    splits = np.array(["train"] * len(labels), dtype=object)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * len(idx)))
        n_val = int(round(val_fraction * len(idx)))
        splits[idx[:n_test]] = "test"
        splits[idx[n_test:n_test + n_val]] = "val"
    return splits.tolist()


def _plan(root: Path, folder: str, params: dict) -> tuple[np.random.Generator, list[int], list[str]] | None:
    """``None`` when ``root`` already holds the dataset ``params`` describe; else make ``root/folder`` and return
    the generator, the balanced labels and their stratified splits."""
    if _is_current(root, params):
        return None
    (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(params["seed"])
    labels = [i % params["num_classes"] for i in range(params["num_samples"])]
    return rng, labels, _stratified_splits(labels, params["val_fraction"], params["test_fraction"], rng)


def _tilted_rotation(rng: np.random.Generator, max_tilt: float) -> np.ndarray:
    """A rotation whose first column (a tube's axis) is within ``max_tilt`` radians of the z axis."""
    tilt, azimuth = rng.uniform(0, max_tilt), rng.uniform(0, 2 * math.pi)
    axis = np.array([math.cos(tilt), math.sin(tilt) * math.sin(azimuth), math.sin(tilt) * math.cos(azimuth)])
    other = rng.normal(size=3)
    other -= other.dot(axis) * axis
    other /= np.linalg.norm(other)
    return np.stack([axis, other, np.cross(axis, other)], axis=1)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform random 3x3 rotation (QR of a Gaussian matrix with the sign fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _lesion_params(shape: str, rng: np.random.Generator, scale: float = 1.0) -> tuple[tuple[float, ...], float]:
    """Random size parameters (mm) of a lesion ``shape`` and its bounding radius in mm.

    Sizes are for a 64 mm field of view and scale with ``scale`` (the field of view over 64 mm).
    """
    params, radius = _lesion_params_64(shape, rng)
    return tuple(v * scale for v in params), radius * scale


def _lesion_params_64(shape: str, rng: np.random.Generator) -> tuple[tuple[float, ...], float]:
    if shape == "sphere":
        r = rng.uniform(10.0, 13.0)
        return (r,), r
    if shape == "shell":
        r, t = rng.uniform(9.0, 12.0), rng.uniform(1.6, 2.4)
        return (r, t), r + t
    if shape == "tube":
        r, h = rng.uniform(2.5, 3.5), rng.uniform(15.0, 21.0)
        return (r, h), h + r
    if shape == "ring":
        big, small = rng.uniform(8.0, 11.0), rng.uniform(2.2, 3.0)
        return (big, small), big + small
    if shape == "cube":
        half = rng.uniform(6.0, 8.5)
        return (half,), half * math.sqrt(3.0)
    raise ConfigError(f"unknown lesion shape {shape!r}; choose from {VOLUME_CLASSES}")


def _lesion_sdf(shape: str, p: np.ndarray, params: tuple[float, ...]) -> np.ndarray:
    """Signed distance (mm, negative inside) of ``shape`` centred at the origin; ``p`` is ``(..., 3)`` in mm."""
    if shape == "sphere":
        return np.linalg.norm(p, axis=-1) - params[0]
    if shape == "shell":  # hollow sphere
        r, t = params
        return np.abs(np.linalg.norm(p, axis=-1) - r) - t
    if shape == "tube":  # capsule along the first axis
        r, h = params
        q = p.copy()
        q[..., 0] = p[..., 0] - np.clip(p[..., 0], -h, h)
        return np.linalg.norm(q, axis=-1) - r
    if shape == "ring":  # torus in the plane of the first two axes
        big, small = params
        planar = np.linalg.norm(p[..., :2], axis=-1) - big
        return np.sqrt(planar ** 2 + p[..., 2] ** 2) - small
    q = np.abs(p) - params[0]  # cube
    return np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(axis=-1), 0.0)


def _smooth_field(shape: tuple[int, int, int], rng: np.random.Generator, coarse: int = 4) -> np.ndarray:
    """A smooth random field in [-1, 1] (trilinear upsampling of a coarse random grid)."""
    import torch

    grid = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(1, 1, coarse, coarse, coarse)).astype(np.float32))
    return torch.nn.functional.interpolate(grid, size=shape, mode="trilinear", align_corners=True)[0, 0].numpy()


def _make_volume(label: str, shape: tuple[int, int, int], spacing: tuple[float, float, float],
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One CT-like volume in Hounsfield units and its lesion mask, both ``(D, H, W)``."""
    d, h, w = shape
    sd, sh, sw = spacing
    z, y, x = np.meshgrid((np.arange(d) + 0.5) * sd, (np.arange(h) + 0.5) * sh, (np.arange(w) + 0.5) * sw,
                          indexing="ij")
    ext = np.array([d * sd, h * sh, w * sw])
    centre = ext / 2
    # body: an elliptic cylinder along z whose semi-axes vary a little between patients
    ay, ax = ext[1] * rng.uniform(0.40, 0.46), ext[2] * rng.uniform(0.42, 0.48)
    rho = np.sqrt(((y - centre[1]) / ay) ** 2 + ((x - centre[2]) / ax) ** 2)
    body = rho <= 1.0
    fat = body & (rho > 1.0 - 3.5 / min(ay, ax))
    tissue_hu = rng.uniform(30.0, 50.0)
    vol = np.full(shape, -1000.0, dtype=np.float32)
    vol[body] = tissue_hu
    vol[fat] = rng.uniform(-110.0, -80.0)
    vol += body * 15.0 * _smooth_field(shape, rng)

    # lesion: random orientation (tubes run roughly along z, like vessels), size and position inside the body
    p = np.stack([z, y, x], axis=-1)
    rot = _tilted_rotation(rng, math.radians(35)) if label == "tube" else _random_rotation(rng)
    params, _ = _lesion_params(label, rng, scale=min(ext) / 64.0)
    inside = _lesion_sdf(label, (p - centre) @ rot, params) <= 0
    pts = p[inside] - centre  # the lesion's voxels (mm) when centred; place it so that all stay inside
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    shift = np.zeros(3)
    for _ in range(100):
        cand = rng.uniform(-centre - lo + 1.0, centre - hi - 1.0)
        q = pts + centre + cand
        if np.all(((q[:, 1] - centre[1]) / (ay - 4.5)) ** 2 + ((q[:, 2] - centre[2]) / (ax - 4.5)) ** 2 <= 1.0):
            shift = cand
            break
    sdf = _lesion_sdf(label, (p - centre - shift) @ rot, params)
    mask = sdf <= 0
    weight = 1.0 / (1.0 + np.exp(np.clip(sdf / 0.6, -30, 30)))  # partial-volume edge
    contrast = rng.uniform(160.0, 240.0)  # contrast-enhancing lesion: ~200-280 HU
    vol += (weight * contrast).astype(np.float32)
    vol += rng.normal(0.0, rng.uniform(10.0, 20.0), size=shape).astype(np.float32)
    return np.clip(np.round(vol), -1024, 3071).astype(np.int16), mask.astype(np.uint8)


def _affine(spacing: tuple[float, float, float], shape: tuple[int, int, int]) -> np.ndarray:
    """NIfTI affine for an array stored as ``(x, y, z) = (W, H, D)``: LPS-like (x, y flipped), centred."""
    sd, sh, sw = spacing
    d, h, w = shape
    aff = np.diag([-sw, -sh, sd, 1.0])
    aff[:3, 3] = [sw * (w - 1) / 2, sh * (h - 1) / 2, -sd * (d - 1) / 2]
    return aff


def make_volume_dataset(root: str | Path, *, num_samples: int = 120, shape: Sequence[int] = (32, 64, 64),
                        spacing: Sequence[float] = (2.0, 1.0, 1.0), num_classes: int = 2, seed: int = 0,
                        val_fraction: float = 0.2, test_fraction: float = 0.1) -> Path:
    """Write CT-like NIfTI volumes whose lesion shape is the class, and return the CSV path.

    Args:
        root: output folder (created).
        num_samples: number of volumes (classes are balanced).
        shape: array size ``(D, H, W)``; files store it as ``(x, y, z) = (W, H, D)`` as NIfTI does.
        spacing: voxel size in mm ``(D, H, W)``; anisotropic by default (2 mm slices).
        num_classes: 2 to 5 shapes, taken in the order ``sphere, tube, ring, cube, shell``.
        seed: everything is a function of the seed.
        val_fraction: fraction per class in the ``val`` split.
        test_fraction: fraction per class in the ``test`` split.

    Returns:
        ``root / "dataset.csv"`` with columns ``image, label, split, mask`` (paths relative to ``root``).
    """
    import nibabel as nib

    shape = to_ntuple(shape, 3, "shape")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ConfigError(f"spacing {spacing} must be three positive sizes in mm (D, H, W)")
    if not 2 <= num_classes <= len(VOLUME_CLASSES):
        raise ConfigError(f"num_classes={num_classes} must be between 2 and {len(VOLUME_CLASSES)} "
                         f"(shapes {VOLUME_CLASSES})")
    if num_samples < num_classes:
        raise ConfigError(f"num_samples={num_samples} must be at least num_classes={num_classes}")
    root = Path(root)
    columns = ["image", "label", "split", "mask"]
    params = dict(kind="volumes", version=_FORMAT_VERSION, num_samples=num_samples, shape=list(shape),
                  spacing=list(spacing), num_classes=num_classes, seed=seed, val_fraction=val_fraction,
                  test_fraction=test_fraction, columns=columns)
    plan = _plan(root, "volumes", params)
    if plan is None:
        return root / "dataset.csv"
    rng, labels, splits = plan
    affine = _affine(spacing, shape)
    rows = []
    for i, (lab, split) in enumerate(zip(labels, splits, strict=True)):
        name = VOLUME_CLASSES[lab]
        vol, mask = _make_volume(name, shape, spacing, np.random.default_rng([seed, i]))
        image_rel, mask_rel = f"volumes/vol_{i:04d}.nii.gz", f"volumes/vol_{i:04d}_mask.nii.gz"
        for arr, rel in ((vol, image_rel), (mask, mask_rel)):
            img = nib.Nifti1Image(np.ascontiguousarray(arr.transpose(2, 1, 0)), affine)
            img.header.set_xyzt_units("mm", "sec")
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
            nib.save(img, root / rel)
        rows.append(dict(image=image_rel, label=name, split=split, mask=mask_rel))
    return _write_table(root, rows, columns, params)


# ---------------------------------------------------------------------------------------------- clips


def write_mp4(path: str | Path, frames: np.ndarray | Iterable[np.ndarray], fps: float = 8, *, crf: int = 18,
              codec: str = "libx264", pix_fmt: str = "yuv420p", gop: int | None = None,
              pts: Sequence[int] | None = None, time_base: tuple[int, int] | None = None,
              preset: str = "veryfast", low_latency: bool = True) -> Path:
    """Write ``frames`` ``(T, H, W, 3)`` uint8 RGB as an H.264 mp4 with PyAV (even ``H`` and ``W`` for yuv420p).

    ``frames`` may also be an iterable of ``(H, W, 3)`` frames, written as they come (long or 1080p videos
    without holding them all in memory). ``gop`` sets the keyframe interval in frames (x264's default is 250).
    ``pts`` (in ``time_base`` units) gives each frame its own timestamp, e.g. to keep a variable frame rate when
    re-encoding; by default frame ``i`` is shown at ``i / fps``. ``low_latency`` (x264's zerolatency tuning: no
    B-frames) keeps tiny test files simple; real videos have B-frames.
    """
    from fractions import Fraction

    import av

    if isinstance(frames, np.ndarray) and (frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8):
        raise ConfigError(f"frames must be (T, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    path = Path(path)
    count = 0
    with av.open(str(path), mode="w") as container:
        stream = None
        for rgb in frames:
            rgb = np.asarray(rgb)
            if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
                raise ConfigError(f"each frame must be (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
            if stream is None:
                stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], pix_fmt
                stream.options = {"crf": str(crf), "preset": preset, **({"tune": "zerolatency"} if low_latency
                                                                        else {}), **({"g": str(gop)} if gop else {})}
                if time_base is not None:
                    stream.time_base = stream.codec_context.time_base = Fraction(*time_base)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if pts is not None:
                frame.pts = int(pts[count])
                frame.time_base = Fraction(*time_base) if time_base is not None else stream.codec_context.time_base
            count += 1
            for packet in stream.encode(frame):
                container.mux(packet)
        if stream is None:
            raise ConfigError("no frames to write")
        for packet in stream.encode():
            container.mux(packet)
    return path


def _make_clip(direction: str, length: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 frames of a disc moving in ``direction`` over a static textured background."""
    import torch

    h, w = size
    coarse = torch.from_numpy(rng.uniform(0, 1, size=(1, 3, 6, 6)).astype(np.float32))
    bg = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]
    bg = (0.25 + 0.35 * bg.clamp(0, 1)).permute(1, 2, 0).numpy() * 255  # muted colours
    colour = rng.uniform(180, 255, size=3) * rng.choice([1.0, 0.4], size=3)  # bright, saturated
    colour[rng.integers(3)] = 255.0
    radius = rng.uniform(0.09, 0.14) * min(h, w)
    speed = rng.uniform(0.03, 0.05) * min(h, w)  # pixels per frame
    dy, dx = _DIRECTIONS[direction]
    norm = math.hypot(dy, dx)
    vy, vx = speed * dy / norm, speed * dx / norm
    y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((length, h, w, 3), dtype=np.uint8)
    for t in range(length):
        cy, cx = (y0 + vy * t) % h, (x0 + vx * t) % w
        # periodic distance: the disc wraps around the frame edges
        ddy = np.minimum(np.abs(yy - cy), h - np.abs(yy - cy))
        ddx = np.minimum(np.abs(xx - cx), w - np.abs(xx - cx))
        alpha = np.clip(radius + 0.5 - np.sqrt(ddy ** 2 + ddx ** 2), 0, 1)[..., None]
        frame = bg * (1 - alpha) + colour * alpha + rng.normal(0, 4.0, size=(h, w, 1))
        out[t] = np.clip(np.round(frame), 0, 255).astype(np.uint8)
    return out


def make_clip_dataset(root: str | Path, *, num_samples: int = 80, frames: int = 16, size: Sequence[int] = (64, 64),
                      fps: float = 8, num_classes: int = 4, seed: int = 0, video_frames: int | None = None,
                      val_fraction: float = 0.2, test_fraction: float = 0.1, crf: int = 18) -> Path:
    """Write H.264 mp4 clips whose label is the direction an object moves, and return the CSV path.

    Args:
        root: output folder (created).
        num_samples: number of videos (classes are balanced).
        frames: the clip length a model will see; videos hold ``video_frames`` frames.
        size: frame size ``(H, W)``; both even (yuv420p).
        fps: frame rate written in the container.
        num_classes: 2 (``right, left``), 4 (``+ down, up``) or up to 8 (``+ diagonals``).
        seed: everything is a function of the seed.
        video_frames: frames per video; defaults to ``2 * frames`` so that stride-2 sampling fits.
        val_fraction: fraction per class in the ``val`` split.
        test_fraction: fraction per class in the ``test`` split.
        crf: x264 constant rate factor (lower is closer to lossless).

    Returns:
        ``root / "dataset.csv"`` with columns ``path, label, split`` (paths relative to ``root``).
    """
    size = to_ntuple(size, 2, "size")
    if size[0] % 2 or size[1] % 2:
        raise ConfigError(f"size {size} must be even along both axes for yuv420p H.264; e.g. "
                         f"{(size[0] + size[0] % 2, size[1] + size[1] % 2)}")
    if not 2 <= num_classes <= len(CLIP_CLASSES):
        raise ConfigError(f"num_classes={num_classes} must be between 2 and {len(CLIP_CLASSES)} "
                         f"(directions {CLIP_CLASSES})")
    video_frames = int(video_frames or 2 * frames)
    if video_frames < 1:
        raise ConfigError(f"video_frames={video_frames} must be positive")
    root = Path(root)
    columns = ["path", "label", "split"]
    params = dict(kind="clips", version=_FORMAT_VERSION, num_samples=num_samples, frames=frames, size=list(size),
                  fps=fps, num_classes=num_classes, seed=seed, video_frames=video_frames,
                  val_fraction=val_fraction, test_fraction=test_fraction, crf=crf, columns=columns)
    plan = _plan(root, "clips", params)
    if plan is None:
        return root / "dataset.csv"
    rng, labels, splits = plan
    rows = []
    for i, (lab, split) in enumerate(zip(labels, splits, strict=True)):
        name = CLIP_CLASSES[lab]
        clip = _make_clip(name, video_frames, size, np.random.default_rng([seed, i]))
        rel = f"clips/clip_{i:04d}.mp4"
        write_mp4(root / rel, clip, fps=fps, crf=crf)
        rows.append(dict(path=rel, label=name, split=split))
    return _write_table(root, rows, columns, params)
