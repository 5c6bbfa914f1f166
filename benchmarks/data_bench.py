"""Data loading throughput per DataLoader worker: volumes (first epoch vs cached) and video clips (decord vs PyAV).

Everything runs in one process with one torch thread and one decoder thread, which is what a DataLoader
worker gets; multiply by the number of workers for a first estimate of a loader's throughput. Rates are
given per second of the process's CPU time (what one idle core gives; robust to other jobs on the machine)
and per wall-clock second (lower when other jobs share the cores).

- Volumes: synthetic CT-like NIfTI files (``vit3d.data.synthetic``), CT preset with the MONAI backend (and
  TorchIO for comparison): eval preprocessing and training augmentation, without cache (every epoch reads
  and preprocesses), with the memory cache (the deterministic stage runs once) and with the disk cache.
- Clips: a 720p (1280x720) H.264 file written with PyAV (30 fps, keyframe every second, ``--seconds`` long,
  moving content), copied ``--clips`` times: the one-off probe per file; decoding 16 frames per backend (PyAV,
  decord, torchcodec where it imports) at full size and scaled by FFmpeg; training clips 16x112x112 at stride 2
  from ``VideoClipDataset`` in-process and through a DataLoader with 1 and 2 workers (``--workers``), with the
  metadata cache filled by ``validate()`` and with every sample probing its file again. With workers, the
  "CPU time" column counts only the main process, so read the wall-clock column.

Usage:
    .venv/bin/python benchmarks/data_bench.py [--volumes 120] [--big 16] [--clips 24] [--seconds 6] [--workers 1 2]
    .venv/bin/python benchmarks/data_bench.py --volumes 0 --big 0 --clips 24      # clips only
"""

from __future__ import annotations

import argparse
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


def write_720p(path: Path, seconds: float, fps: int = 30) -> Path:
    """A 1280x720 H.264 file (keyframe every second) with moving content: a drifting pattern and moving discs."""
    from vit3d.data.synthetic import write_mp4

    h, w = 720, 1280
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 96 + 64 * np.sin(xx / 90.0) * np.cos(yy / 70.0)
    pattern = np.stack([base, base * 0.8 + 30, 200 - base * 0.5], axis=-1).clip(0, 255).astype(np.uint8)
    n = int(seconds * fps)
    frames = np.empty((n, h, w, 3), dtype=np.uint8)
    rng = np.random.default_rng(0)
    centres, speeds = rng.uniform(0, [h, w], size=(6, 2)), rng.uniform(-12, 12, size=(6, 2))
    disc = (np.mgrid[-60:61, -60:61] ** 2).sum(0) < 60 ** 2
    for t in range(n):
        frames[t] = np.roll(pattern, (2 * t, 4 * t), axis=(0, 1))
        for (cy, cx), (vy, vx) in zip(centres, speeds, strict=True):
            py, px = int((cy + vy * t) % (h - 121)), int((cx + vx * t) % (w - 121))
            frames[t, py:py + 121, px:px + 121][disc] = (240, 60 + (t * 3) % 150, 40)
    return write_mp4(path, frames, fps=fps, crf=23, gop=fps)


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


def bench_clips(root: Path, num: int, seconds: float, workers: tuple[int, ...] = (1, 2)) -> tuple[list[tuple], str]:
    import av

    from vit3d.data import VideoClipDataset
    from vit3d.data.video import DECODERS, MetadataCache, get_decoder, probe
    from vit3d.errors import ConfigError

    video = root / "720p.mp4"
    t0 = time.perf_counter()
    write_720p(video, seconds)
    with av.open(str(video)) as c:
        s = c.streams.video[0]
        cc = s.codec_context
        desc = (f"{cc.width}x{cc.height} {cc.name} {float(s.average_rate):g} fps, {s.frames} frames, "
                f"{video.stat().st_size / 2 ** 20:.1f} MiB, written in {time.perf_counter() - t0:.1f} s")
    copies = []  # distinct files, so that no decoded clip is reused between rows
    for i in range(num):
        copies.append(root / f"720p_{i:03d}.mp4")
        shutil.copyfile(video, copies[-1])
    data = [{"path": str(c), "label": "a"} for c in copies]
    rows = []
    with timer() as t:
        for c in copies:
            probe(c)
    rows.append(("pyav", "probe (timestamps, first frame, last GOP): once per file, then cached", "-", "-",
                 t.rate(num)))
    for decoder in DECODERS:
        try:
            dec = get_decoder(decoder)
        except ConfigError:
            print(f"(skipping {decoder}: it does not import here)")
            continue
        meta = probe(video)
        starts = np.random.default_rng(0).integers(0, meta.num_frames - 31, size=num)
        for size in (None, (140, 250)):
            with timer() as t:
                for st in starts:
                    dec.frames(meta, list(range(int(st), int(st) + 32, 2)), size)
            shape = f"(16, {size[0]}, {size[1]}, 3)" if size else "(16, 720, 1280, 3)"
            rows.append((decoder, "decode only: 16 frames at stride 2, random start", "-", f"{shape} uint8",
                         t.rate(num)))
        for cached in (True, False):
            for n_workers in (0, *workers):
                cache = MetadataCache() if cached else _no_cache()
                ds = VideoClipDataset(data, frames=16, stride=2, img_size=(112, 112), decoder=decoder, train=True,
                                      metadata_cache=cache)
                if cached:
                    ds.validate()  # fills the cache (and checks the backend per file) before the workers fork
                else:
                    ds[0]
                rate = _rate(ds) if n_workers == 0 else _loader_rate(ds, n_workers)
                where = "in-process" if n_workers == 0 else f"DataLoader, {n_workers} worker(s)"
                rows.append((decoder, f"train clips, {where}", "cached" if cached else "probed per sample",
                             "(3, 16, 112, 112) float32", rate))
    return rows, desc


HEAD_VOL = ("| backend | mode | cache | epoch | volumes/s per worker (CPU time) | volumes/s (wall clock) |\n"
            "|---|---|---|---|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=120, help="number of 32x64x64 volumes (0 to skip)")
    parser.add_argument("--big", type=int, default=16, help="number of 80x192x192 volumes (0 to skip)")
    parser.add_argument("--clips", type=int, default=24, help="clips per decoder and mode (0 to skip)")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the 720p video")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="DataLoader worker counts for clips")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 torch thread, "
          "1 decoder thread")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.volumes:
            print(f"\n### Volumes: {args.volumes} synthetic CT volumes 32x64x64 (2x1x1 mm), CT preset -> "
                  "(1, 32, 64, 64)\n")
            print(HEAD_VOL)
            for r in bench_volumes(root, args.volumes, (32, 64, 64), (2.0, 1.0, 1.0), (32, 64, 64), None):
                print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} |", flush=True)
        if args.big:
            print(f"\n### Volumes: {args.big} synthetic CT volumes 80x192x192 (2.5x0.8x0.8 mm), CT preset, "
                  "resampled to 2.5x1.6x1.6 mm and cropped to (1, 80, 96, 96)\n")
            print(HEAD_VOL)
            for r in bench_volumes(root, args.big, (80, 192, 192), (2.5, 0.8, 0.8), (80, 96, 96), (2.5, 1.6, 1.6)):
                print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} |", flush=True)
        if not args.clips:
            return
        rows, desc = bench_clips(root, args.clips, args.seconds, tuple(args.workers))
        print(f"\n### Clips: 16x112x112 at stride 2 from copies of one 720p H.264 file ({desc})\n")
        print("| decoder | what | metadata | output | clips/s (CPU time of this process) | clips/s (wall clock) |\n"
              "|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} |")


if __name__ == "__main__":
    main()
