"""``vit3d bench``: time training steps of a registered model (step time, FLOP/s, % of matmul peak, memory), or
time the training data of a config and print how many DataLoader workers a step of a given time needs.

Examples:
    vit3d bench --model vit_small_patch16_3d --input 3x16x112x112 --batch 4 --precision bf16-mixed --depth 4
    vit3d bench -c configs/base.yaml -c configs/demo_clips.yaml --step-time 0.25 --batch 8

The data mode builds the training split as `vit3d fit` does (same configs, stacked), times a few samples with one
torch thread as a DataLoader worker has (CPU time: what one idle core gives), and prints the samples/s a step of
--step-time seconds on --batch samples consumes and the workers that feed it, ceil(demand / per-worker rate).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vit3d.errors import ConfigError, MissingInputError

from . import CommandParser


def _parser() -> argparse.ArgumentParser:
    p = CommandParser(prog="vit3d bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a registered model name (see `vit3d models`): time its steps")
    p.add_argument("-c", "--config", action="append", type=Path, default=None,
                   help="data mode: a vit3d YAML config (repeat to stack, as `vit3d fit -c`); time its training data")
    p.add_argument("--data", default=None, help="data mode: the dataset (data.init_args.data of the config)")
    p.add_argument("--step-time", type=float, default=None,
                   help="data mode: seconds per training step the loader must feed (e.g. from the model mode)")
    p.add_argument("--samples", type=int, default=8, help="data mode: samples timed")
    p.add_argument("--input", default="3x16x112x112", help="C x spatial sizes, e.g. 3x16x112x112 or 1x96x96x96")
    p.add_argument("--batch", type=int, default=None,
                   help="samples per step (default: 4; data mode: the config's data.init_args.batch_size)")
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


def _emit(text: str, out: Path | None) -> None:
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, dicts merged key by key (how stacked ``-c`` configs combine)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _data_config(paths: list[Path]) -> dict[str, Any]:
    import yaml

    config: dict[str, Any] = {}
    for path in paths:
        if not path.is_file():
            raise MissingInputError("config not found", file=str(path), fix="pass a vit3d YAML config")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError("the config is not a YAML mapping", file=str(path))
        config = _merge(config, loaded)
    data = config.get("data")
    if not isinstance(data, dict) or "class_path" not in data:
        raise ConfigError(f"no data module in {', '.join(map(str, paths))} (a data: section with class_path)",
                          fix="add a data config, e.g. -c configs/demo_clips.yaml")
    return data


def data_main(args: argparse.Namespace) -> int:
    """The data mode: build the training split as `vit3d fit` does, time it, print the workers it needs."""
    from lightning.pytorch.cli import instantiate_module

    from pipelines.datamodules import _ClassificationDataModule
    from vit3d.data.throughput import loader_demand, measure_samples

    if args.step_time is None:
        raise ConfigError("the data mode needs --step-time (seconds per training step to feed)",
                          fix="e.g. --step-time 0.25 (the median_step_s of `vit3d bench --model ...`)")
    data = _data_config(args.config)
    init_args = dict(data.get("init_args") or {})
    if args.data is not None:
        init_args["data"] = args.data
    datamodule = instantiate_module(_ClassificationDataModule, {"_class_path": data["class_path"], **init_args})
    dataset = datamodule.split_dataset("train")  # what setup("fit") builds for training
    batch = args.batch if args.batch is not None else datamodule.batch_size
    rate = measure_samples(dataset, samples=args.samples, seed=datamodule.seed)
    demand = loader_demand(rate, step_time_s=args.step_time, batch=batch)
    result = {"mode": "data", "configs": [str(c) for c in args.config], "data": str(datamodule.data),
              "dataset": repr(dataset), "num_workers_configured": datamodule.num_workers, **demand.to_dict()}
    _emit(json.dumps(result, indent=1), args.out)
    print(demand.describe(), file=sys.stderr)  # stdout stays one JSON document
    if not demand.fits:
        print(f"warning: {demand.workers} workers exceed the {demand.cores} cores of this machine (one is the "
              "training process's): the loader cannot feed this step here; cache the deterministic "
              "preprocessing, decode smaller, or use a machine with more cores per accelerator", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if (args.model is None) == (args.config is None):
        raise ConfigError("give either --model (time training steps) or -c/--config (time the training data)",
                          fix="e.g. `vit3d bench --model vit_small_patch16_3d` or `vit3d bench -c "
                              "configs/demo_clips.yaml --step-time 0.25`")
    if args.batch is not None and args.batch < 1:
        raise ConfigError(f"--batch {args.batch} must be at least 1")
    if args.config is not None:
        return data_main(args)
    args.batch = 4 if args.batch is None else args.batch
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

    data_only = ("config", "data", "step_time", "samples")
    options = {k: v for k, v in vars(args).items() if k not in ("model", "input", "batch", "precision", "compile",
                                                                   "steps", "out", *data_only)}
    result = benchmark_model(build, batch=args.batch, precision=args.precision, input_shape=(c, spatial),
                             steps=args.steps, warmup=args.warmup, compile=args.compile, device=device,
                             num_classes=args.num_classes, name=args.model, measure_peak=not args.no_peak,
                             options={k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()})
    _emit(json.dumps(result.to_dict(), indent=1), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
