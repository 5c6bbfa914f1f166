"""``vit3d bench``: time training steps of a registered model; print step time, FLOP/s, % of matmul peak, memory.

Example:
    vit3d bench --model vit_small_patch16_3d --input 3x16x112x112 --batch 4 --precision bf16-mixed --depth 4
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vit3d.errors import ConfigError

from . import CommandParser


def _parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="vit3d bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a registered model name (see `vit3d models`)")
    p.add_argument("--input", default="3x16x112x112", help="C x spatial sizes, e.g. 3x16x112x112 or 1x96x96x96")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--precision", default="bf16-mixed", help="32 | bf16-mixed (also fp32 | bf16)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model first")
    p.add_argument("--steps", type=int, default=6, help="timed steps (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (the first two measure memory)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--depth", type=int, default=None, help="override the preset's number of blocks")
    p.add_argument("--patch-size", default=None, help="e.g. 2x16x16 (default: the preset's)")
    p.add_argument("--patch-drop-rate", type=float, default=0.0, help="fraction of patch tokens dropped per step")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute block activations in backward")
    p.add_argument("--device", default=None, help="cpu | cuda[:i] (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    p.add_argument("--no-peak", action="store_true", help="skip the matmul-peak measurement")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    import torch

    import vit3d
    from vit3d.bench import benchmark_model, parse_input

    if args.batch < 1:
        raise ConfigError(f"--batch {args.batch} must be at least 1")
    c, spatial = parse_input(args.input)
    overrides = dict(img_size=spatial, in_chans=c, num_classes=args.num_classes, spatial_dims=len(spatial),
                     patch_drop_rate=args.patch_drop_rate)
    if args.depth is not None:
        overrides["depth"] = args.depth
    if args.patch_size is not None:
        overrides["patch_size"] = tuple(int(v) for v in args.patch_size.lower().split("x"))
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def build() -> torch.nn.Module:
        model = vit3d.create_model(args.model, **overrides)
        if args.grad_checkpointing:
            model.set_grad_checkpointing(True)
        return model

    options = {k: v for k, v in vars(args).items() if k not in ("model", "input", "batch", "precision", "compile",
                                                                   "steps", "out")}
    result = benchmark_model(build, batch=args.batch, precision=args.precision, input_shape=(c, spatial),
                             steps=args.steps, warmup=args.warmup, compile=args.compile, device=device,
                             num_classes=args.num_classes, name=args.model, measure_peak=not args.no_peak,
                             options={k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()})
    text = json.dumps(result.to_dict(), indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
