"""Interleaved A/B of training-clip throughput per DataLoader worker between two checkouts of the library.

Before/after figures from two separate runs drift with the load of a shared machine; here the two checkouts
take turns, in fresh processes, on the same source files, round after round, and the median per-worker rate
(clips per second of CPU time, one torch and one decoder thread) of each is reported.

Usage (from the repository root; ``git archive <commit> vit3d | tar -x -C /tmp/before`` makes a checkout):
    nice .venv/bin/python benchmarks/data_ab.py --a /tmp/before --b . [--sources 720p 1080p] [--clips 12]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# One measurement, run in a fresh interpreter whose ``vit3d`` is the checkout on PYTHONPATH.
CHILD = """
import json, sys, time
import torch
torch.set_num_threads(1)
import vit3d
from vit3d.data import VideoClipDataset
from vit3d.data.seeding import SampleKey
from vit3d.data.video import MetadataCache
paths, decoder, size, seed = json.loads(sys.argv[1])
ds = VideoClipDataset([{"path": p, "label": "a"} for p in paths], frames=16, stride=2, img_size=(size, size),
                      decoder=decoder, train=True, metadata_cache=MetadataCache())
ds.validate()
c = time.process_time()
for i in range(len(ds)):
    ds[SampleKey(i, seed + i)]
print(json.dumps({"rate": len(ds) / (time.process_time() - c), "lib": vit3d.__file__}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, required=True, help="folder holding the first checkout's vit3d/")
    parser.add_argument("--b", type=Path, required=True, help="folder holding the second checkout's vit3d/")
    parser.add_argument("--sources", nargs="+", default=["720p", "1080p"])
    parser.add_argument("--decoders", nargs="+", default=["pyav", "decord"])
    parser.add_argument("--clips", type=int, default=12, help="clips (distinct files) per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--size", type=int, default=112)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from data_bench import SOURCES, write_source

    results: dict[tuple[str, str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = {}
        for source in args.sources:
            video = write_source(root / f"{source}.mp4", *SOURCES[source], args.seconds)
            files[source] = [str(shutil.copyfile(video, root / f"{source}_{i:03d}.mp4")) for i in range(args.clips)]
        for r in range(args.rounds):
            for source in args.sources:
                for decoder in args.decoders:
                    for name, lib in (("a", args.a), ("b", args.b)):
                        env = {**os.environ, "PYTHONPATH": str(lib.resolve())}
                        out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(
                            [files[source], decoder, args.size, 1000 * r])], env=env, cwd=tmp, check=True,
                            capture_output=True, text=True).stdout.strip().splitlines()[-1]
                        got = json.loads(out)
                        if not got["lib"].startswith(str(lib.resolve())):
                            raise SystemExit(f"{name}: imported {got['lib']}, not the checkout under {lib}")
                        results.setdefault((source, decoder, name), []).append(got["rate"])
    print(f"a = {args.a}, b = {args.b}; {args.rounds} interleaved rounds of {args.clips} training clips "
          f"16x{args.size}x{args.size} at stride 2 (cached metadata), median clips/s per worker (CPU time)\n")
    print("| source | decoder | a | b | b / a |\n|---|---|---|---|---|")
    for source in args.sources:
        for decoder in args.decoders:
            a = statistics.median(results[(source, decoder, "a")])
            b = statistics.median(results[(source, decoder, "b")])
            print(f"| {source} | {decoder} | {a:.1f} | {b:.1f} | {b / a:.2f}x |")


if __name__ == "__main__":
    main()
