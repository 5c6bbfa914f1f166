"""Data loading throughput per DataLoader worker, and the workers a GPU step needs: volumes (uncached vs cached)
and video clips (decord vs PyAV, 720p and 1080p sources).

Everything runs in one process with one torch thread and one decoder thread, which is what a DataLoader
worker gets. Rates are given per second of the process's CPU time (what one idle core gives; robust to other
jobs on the machine) and per wall-clock second (lower when other jobs share the cores). Each row also gives the
workers that feed a GPU step, ``ceil(demand / rate per worker)``, for the demand set by ``--clip-step``/
``--clip-batch`` and ``--volume-step``/``--volume-batch``:

- clips: a ViT-B/16 on 16x224x224 clips (bf16, H100-class GPU) trains at roughly 60-100 clips/s; the default
  8 clips per 0.1 s step is 80 clips/s;
- volumes: a ViT-S 3D on 96^3 volumes trains at several hundred volumes/s; the default 32 volumes per 0.1 s step
  is 320 volumes/s.

Sources:
- Volumes: synthetic CT-like NIfTI files (``vit3d.data.synthetic``), CT preset with the MONAI backend (and
  TorchIO for comparison): eval preprocessing and training augmentation, without cache (every epoch reads
  and preprocesses), with the memory cache (the deterministic stage runs once) and with the disk cache.
- Clips: a 1280x720, a 1920x1080 and a 256x144 (what a one-off re-encode to 1.25x the 112 crop gives) H.264
  file written with PyAV (30 fps, keyframe every second, no B-frames,
  ``--seconds`` long, moving content), copied ``--clips`` times: the one-off probe per file; decoding 16 frames
  at stride 2 per backend at full size and scaled by FFmpeg; training clips 16x112x112 (``--size``) at stride 2
  from ``VideoClipDataset`` with the metadata cache filled by ``validate()``, decoded at the crop scale
  (``decode_resize=True``, the default) and at full size (then resized as float tensors), and with every sample
  probing its file again, and with ``reencode_cache`` (each video re-encoded once at the size the crops need:
  the first epoch pays it, later ones decode the small file). ``--workers 1 2`` adds rows through a DataLoader
  with that many workers (wall clock only: the work is in the workers).

Apart from the ``reencode_cache`` rows (skipped where the dataset lacks it), the script needs nothing newer than
``VideoClipDataset``, so it also times an older checkout of the library (``PYTHONPATH=<checkout>``, run from
outside the repository) for before/after figures.

Usage:
    nice .venv/bin/python benchmarks/data_bench.py [--volumes 120] [--big 16] [--clips 24] [--seconds 4]
    nice .venv/bin/python benchmarks/data_bench.py --volumes 0 --big 0 --sources 1080p   # clips only
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


class Rate:
    """Items per second of CPU time of this process (what an idle core would give) and per wall-clock second."""

    def __init__(self, n: int, cpu: float, wall: float) -> None:
        self.cpu, self.wall = n / cpu, n / wall

    def __str__(self) -> str:
        return f"{self.cpu:.1f} | {self.wall:.1f}"


def workers(demand: float, per_worker: float) -> int:
    """DataLoader workers that deliver ``demand`` samples/s at ``per_worker`` each (the closed form of
    ``vit3d.data.throughput.workers_needed``, repeated so that the script runs against older checkouts)."""
    return max(1, math.ceil(demand / per_worker - 1e-9))


class timer:  # noqa: N801 - used as a context manager
    def __enter__(self) -> timer:
        self.c0, self.w0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu, self.wall = time.process_time() - self.c0, time.perf_counter() - self.w0

    def rate(self, n: int) -> Rate:
        return Rate(n, self.cpu, self.wall)


def _rate(ds: torch.utils.data.Dataset, n: int | None = None) -> Rate:
    n = len(ds) if n is None else n
    with timer() as t:
        for i in range(n):
            s = ds[i % len(ds)]
            assert s is not None
    return t.rate(n)


def bench_volumes(root: Path, num: int, shape: tuple[int, int, int], spacing: tuple[float, float, float],
                  img_size: tuple[int, int, int], resample: tuple[float, float, float] | None) -> list[tuple]:
    from vit3d.data import VolumeDataset, synthetic

    csv = synthetic.make_volume_dataset(root / f"vol_{'x'.join(map(str, shape))}", num_samples=num, shape=shape,
                                        spacing=spacing, val_fraction=0.0, test_fraction=0.0)
    kw = dict(img_size=img_size, spacing=resample)
    rows = []
    for backend in ("monai", "torchio"):
        for train in (False, True):
            ds = VolumeDataset(csv, backend=backend, train=train, **kw)
            ds[0]  # warm up (imports, readers)
            rows.append((backend, "train" if train else "eval", "none", "every epoch", _rate(ds)))
    with timer() as t:
        ds = VolumeDataset(csv, train=True, cache="memory", cache_num_workers=1, **kw)  # fills the cache
    rows.append(("monai", "train", "memory", "building the dataset (fills the cache, no augmentation)", t.rate(num)))
    rows.append(("monai", "train", "memory", "cached epoch", _rate(ds)))
    with tempfile.TemporaryDirectory() as cache_dir:
        ds = VolumeDataset(csv, train=True, cache="disk", cache_dir=cache_dir, **kw)
        rows.append(("monai", "train", "disk", "first epoch (writes cache)", _rate(ds)))
        rows.append(("monai", "train", "disk", "cached epoch", _rate(ds)))
    return rows


def write_source(path: Path, height: int, width: int, seconds: float, fps: int = 30) -> Path:
    """An H.264 file (keyframe every second) with moving content: a drifting pattern and moving discs, written
    frame by frame (a 1080p video does not fit in memory as one array)."""
    from vit3d.data.synthetic import write_mp4

    h, w = height, width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 96 + 64 * np.sin(xx / 90.0) * np.cos(yy / 70.0)
    pattern = np.stack([base, base * 0.8 + 30, 200 - base * 0.5], axis=-1).clip(0, 255).astype(np.uint8)
    rng = np.random.default_rng(0)
    r = max(20, h // 12)
    centres, speeds = rng.uniform(0, [h, w], size=(6, 2)), rng.uniform(-12, 12, size=(6, 2)) * h / 720
    disc = (np.mgrid[-r:r + 1, -r:r + 1] ** 2).sum(0) < r ** 2

    def frames():  # noqa: ANN202 - a generator of (H, W, 3) uint8
        for t in range(int(seconds * fps)):
            frame = np.roll(pattern, (2 * t, 4 * t), axis=(0, 1))
            for (cy, cx), (vy, vx) in zip(centres, speeds, strict=True):
                py, px = int((cy + vy * t) % (h - 2 * r - 1)), int((cx + vx * t) % (w - 2 * r - 1))
                frame[py:py + 2 * r + 1, px:px + 2 * r + 1][disc] = (240, 60 + (t * 3) % 150, 40)
            yield frame

    return write_mp4(path, frames(), fps=fps, crf=23, gop=fps)


# 144p: the size a one-off re-encode of the videos to 1.25x the 112 crop gives (the deterministic step cached)
SOURCES = {"720p": (720, 1280), "1080p": (1080, 1920), "144p": (144, 256)}


def _no_cache():  # noqa: ANN202 - a MetadataCache
    """A metadata cache that never hits: every sample probes its file again (what a dataset without one pays)."""
    from vit3d.data.video.meta import MetadataCache, probe

    class NoCache(MetadataCache):
        def get(self, path):  # noqa: ANN001, ANN202
            return probe(path)

    return NoCache()


def _loader_rate(ds: torch.utils.data.Dataset, workers: int, batch_size: int = 4) -> Rate:
    """Clips/s through a DataLoader with ``workers`` processes (wall clock; CPU time of the workers is not ours)."""
    from vit3d.data import collate

    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate,
                                         persistent_workers=False)
    n = 0
    with timer() as t:
        for batch in loader:
            n += len(batch.get("id", []))
    return Rate(n, max(t.cpu, 1e-9), t.wall)


def bench_clips(root: Path, source: str, num: int, seconds: float, size: int, workers: tuple[int, ...] = ()
                ) -> tuple[list[tuple], str]:
    import av

    from vit3d.data import VideoClipDataset
    from vit3d.data.video import DECODERS, MetadataCache, get_decoder, probe
    from vit3d.errors import ConfigError

    h, w = SOURCES[source]
    video = root / f"{source}.mp4"
    t0 = time.perf_counter()
    write_source(video, h, w, seconds)
    with av.open(str(video)) as c:
        s = c.streams.video[0]
        cc = s.codec_context
        desc = (f"{cc.width}x{cc.height} {cc.name} {float(s.average_rate):g} fps, {s.frames} frames, "
                f"{video.stat().st_size / 2 ** 20:.1f} MiB, written in {time.perf_counter() - t0:.1f} s")
    copies = []  # distinct files, so that no decoded clip is reused between rows
    for i in range(num):
        copies.append(root / f"{source}_{i:03d}.mp4")
        shutil.copyfile(video, copies[-1])
    data = [{"path": str(c), "label": "a"} for c in copies]
    rows = []
    with timer() as t:
        for c in copies:
            probe(c)
    rows.append(("pyav", "probe (timestamps, first frame, last GOP): once per file, then cached", "-", "-",
                 t.rate(num), None))
    scaled = (int(round(h * 1.25 * size / h)) // 2 * 2, int(round(w * 1.25 * size / h)) // 2 * 2)
    for decoder in DECODERS:
        try:
            dec = get_decoder(decoder)
        except ConfigError:
            print(f"(skipping {decoder}: it does not import here)")
            continue
        meta = probe(video)
        starts = np.random.default_rng(0).integers(0, meta.num_frames - 31, size=num)
        for out in (None, scaled):
            with timer() as t:
                for st in starts:
                    dec.frames(meta, list(range(int(st), int(st) + 32, 2)), out)
            shape = f"(16, {out[0]}, {out[1]}, 3)" if out else f"(16, {h}, {w}, 3)"
            rows.append((decoder, "decode only: 16 frames at stride 2, random start", "-", f"{shape} uint8",
                         t.rate(num)))
        plans = [(True, True, 0, "train clips, decoded at the crop scale"),
                 (True, False, 0, "train clips, decoded at full size, float resize"),
                 (False, True, 0, "train clips, decoded at the crop scale")]
        plans += [(True, True, n, f"train clips, DataLoader, {n} worker(s)") for n in workers]
        for cached, resize, n_workers, what in plans:
            cache = MetadataCache() if cached else _no_cache()
            ds = VideoClipDataset(data, frames=16, stride=2, img_size=(size, size), decoder=decoder, train=True,
                                  decode_resize=resize, metadata_cache=cache)
            if cached:
                ds.validate()  # fills the cache (and checks the backend per file) before the workers fork
            else:
                ds[0]
            rate = _rate(ds) if n_workers == 0 else _loader_rate(ds, n_workers)
            rows.append((decoder, what, "cached" if cached else "probed per sample",
                         f"(3, 16, {size}, {size}) float32", rate, n_workers))
        if "reencode_cache" not in inspect.signature(VideoClipDataset).parameters:  # an older checkout
            continue
        with tempfile.TemporaryDirectory() as small:  # each video re-encoded once at the crops' size
            ds = VideoClipDataset(data, frames=16, stride=2, img_size=(size, size), decoder=decoder, train=True,
                                  metadata_cache=MetadataCache(), reencode_cache=small)
            ds.validate()
            out = f"(3, 16, {size}, {size}) float32"
            rows.append((decoder, "train clips, reencode_cache: first epoch (re-encodes every video)", "cached",
                         out, _rate(ds), None))
            rows.append((decoder, "train clips, reencode_cache: later epochs", "cached", out, _rate(ds), 0))
    return rows, desc


def _print_table(head: str, unit: str, rows: list[tuple], demand: float) -> None:
    """Rows ``(..., Rate[, DataLoader workers])``; the workers column from the CPU-time rate per worker (or, for
    rows through a DataLoader, the wall-clock rate divided by its workers)."""
    print(f"| {head} | {unit}/s per worker (CPU time) | {unit}/s (wall clock) | workers for {demand:g} {unit}/s |")
    print("|" + "---|" * (head.count("|") + 4))
    for r in rows:
        *cols, rate, n = r if len(r) == 6 else (*r, 0)
        per_worker = rate.wall / n if n else rate.cpu
        cpu = "-" if n else f"{rate.cpu:.1f}"
        need = "-" if n is None else workers(demand, per_worker)  # None: a once-per-file cost, not per sample
        print(f"| {' | '.join(map(str, cols))} | {cpu} | {rate.wall:.1f} | {need} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=120, help="number of 32x64x64 volumes (0 to skip)")
    parser.add_argument("--big", type=int, default=16, help="number of 80x192x192 volumes (0 to skip)")
    parser.add_argument("--clips", type=int, default=24, help="clips per decoder and row (0 to skip)")
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES),
                        help="clip sources (144p: what re-encoding the videos once to 1.25x the crop gives)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each source video")
    parser.add_argument("--size", type=int, default=112, help="training crop size of the clips")
    parser.add_argument("--workers", type=int, nargs="*", default=[], help="DataLoader worker counts for clips")
    parser.add_argument("--clip-step", type=float, default=0.1, help="seconds per GPU step on clips")
    parser.add_argument("--clip-batch", type=int, default=8, help="clips per GPU step")
    parser.add_argument("--volume-step", type=float, default=0.1, help="seconds per GPU step on volumes")
    parser.add_argument("--volume-batch", type=int, default=32, help="volumes per GPU step")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import av
    import monai
    import torchio

    try:
        import decord
        decord_version = decord.__version__
    except ImportError:
        decord_version = "not installed"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch "
          f"{torch.__version__}, MONAI {monai.__version__}, TorchIO {torchio.__version__}, PyAV {av.__version__}, "
          f"decord {decord_version}; 1 torch thread, 1 decoder thread")
    clip_demand, volume_demand = args.clip_batch / args.clip_step, args.volume_batch / args.volume_step
    print(f"demand: {args.volume_batch} volumes per {args.volume_step:g} s step = {volume_demand:g} volumes/s; "
          f"{args.clip_batch} clips per {args.clip_step:g} s step = {clip_demand:g} clips/s")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.volumes:
            print(f"\n### Volumes: {args.volumes} synthetic CT volumes 32x64x64 (2x1x1 mm), CT preset -> "
                  "(1, 32, 64, 64)\n")
            _print_table("backend | mode | cache | epoch", "volumes", bench_volumes(
                root, args.volumes, (32, 64, 64), (2.0, 1.0, 1.0), (32, 64, 64), None), volume_demand)
        if args.big:
            print(f"\n### Volumes: {args.big} synthetic CT volumes 80x192x192 (2.5x0.8x0.8 mm), CT preset, "
                  "resampled to 2.5x1.6x1.6 mm and cropped to (1, 80, 96, 96)\n")
            _print_table("backend | mode | cache | epoch", "volumes", bench_volumes(
                root, args.big, (80, 192, 192), (2.5, 0.8, 0.8), (80, 96, 96), (2.5, 1.6, 1.6)), volume_demand)
        if not args.clips:
            return
        for source in args.sources:
            rows, desc = bench_clips(root, source, args.clips, args.seconds, args.size, tuple(args.workers))
            print(f"\n### Clips: 16x{args.size}x{args.size} at stride 2 from copies of one {source} H.264 file "
                  f"({desc})\n")
            _print_table("decoder | what | metadata | output", "clips", rows, clip_demand)


if __name__ == "__main__":
    main()
