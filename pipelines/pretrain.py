"""``vit3d pretrain``: masked autoencoding of unlabelled volumes or clips, then ``vit3d fit`` from the encoder.

The same LightningCLI runner as ``vit3d fit`` (:func:`pipelines.train.run_cli` with :class:`PretrainCLI`, a thin
:class:`pipelines.train.VitCLI`): stackable YAML configs, ``--print_config``, the trainer presets in
``configs/trainer/`` (DDP, FSDP), resumable loaders, best/last checkpoints, ``--ckpt_path last`` and the one error
policy. The encoder is given as in ``fit``: ``model.net`` is a ``class_path`` with typed ``init_args`` (a preset of
:mod:`pipelines.networks`, ``pipelines.networks.Pretrained`` for a ``vit3d inflate`` / ``adapt`` / ``pretrain``
file, or :class:`VideoMAEPretraining` to continue a HF ``VideoMAEForPreTraining``); the data module's ``in_chans``
and ``img_size`` are linked into it. What a run writes under ``trainer.default_root_dir``::

    <root>/encoder.safetensors                   the pretrained ViT: vit3d fit --model.net pipelines.networks.Pretrained
                                                 --model.net.init_args.path <root>/encoder.safetensors
    <root>/reconstructions/reconstruction.png    masked input / reconstruction / original, slices (volumes) or frames
    <root>/reconstructions/reconstruction.gif    the same three side by side, one frame per time step (clips)
    <root>/checkpoints/best.ckpt, last.ckpt      best on val/loss (lowest), and the latest state
    <root>/logs/version_N/                       TensorBoard (loss curves and the pictures), metrics.csv, config.yaml

Labels are not needed: ``data`` is a CSV (its ``split`` column is used when there is one; labels are ignored), a
folder (searched recursively, :func:`vit3d.data.inputs.discover_inputs`) or a glob of volumes or videos.
"""

from __future__ import annotations

import abc
import csv
import random
import sys
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.cli import LightningArgumentParser, LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from vit3d.data.inputs import discover_inputs
from vit3d.data.seeding import sample_seed
from vit3d.errors import ConfigError, MissingInputError
from vit3d.models import VisionTransformer
from vit3d.models.mae import MaskedAutoencoder, TokenMask

from .datamodules import VideoDataModule, VolumeDataModule, _ClassificationDataModule
from .module import param_groups
from .networks import network_config
from .schedulers import WarmupCosineLR
from .train import VitCLI, run_cli

__all__ = ["MAEModule", "PretrainCLI", "PretrainVideoDataModule", "PretrainVolumeDataModule", "UnlabelledDataModule",
           "VideoMAEPretraining", "main", "reconstruction_montage", "write_reconstructions"]

DEFAULT_ROOT = "outputs/vit3d-pretrain"
# MAE hides 75 % of image patches, VideoMAE 90 % of clip tubes (neighbouring frames make clips easier to fill in).
MASK_DEFAULTS = {"volume": ("random", 0.75), "clip": ("tube", 0.9)}
HELD_OUT_SHARE = 0.05  # validation share of an unsplit input list


# ---------------------------------------------------------------------- data: the fit data modules without labels
class UnlabelledDataModule(_ClassificationDataModule):
    """A fit data module that ignores labels: a CSV, a folder or a glob of files, split into train and val.

    Everything else (the typed ``dataset`` keywords, loaders, resumable sampler, file validation) is the fit data
    module's. Validation: ``val_data`` when given, else the CSV's ``val`` rows when it has a ``split`` column (its
    ``test`` rows are left out: they stay unseen for the fine-tuned model's test), else a held-out 5 % of the
    files (at least one; chosen by ``seed``), so ``val/loss`` always exists to pick the best checkpoint.
    """

    @property
    def classes(self) -> list[str]:
        return []

    @property
    @abc.abstractmethod
    def path_keys(self) -> list[str]:
        """Table columns holding file paths (resolved against the CSV's folder)."""

    def _rows(self, source: str) -> list[dict[str, Any]]:
        """Unlabelled rows of a CSV (paths resolved against its folder), or of a folder or glob of files."""
        if not source.lower().endswith(".csv"):
            return self.predict_rows(list(discover_inputs(source, self.kind)))
        table = Path(source)
        if not table.is_file():
            raise MissingInputError("the dataset does not exist", file=source,
                                    fix="point data.init_args.data at a CSV, a folder or a glob of files")
        # The label column is dropped: a split without labels yields label -1 (vit3d.data.table.TableDataset).
        label_key = self.dataset_kwargs.get("label_key", "label")
        with table.open(newline="") as f:
            rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k and k.strip() != label_key}
                    for r in csv.DictReader(f)]
        for key in self.path_keys:
            if rows and key not in rows[0]:
                raise ConfigError(f"the CSV has no {key!r} column (columns: {sorted(rows[0])})", file=source,
                                  fix="name the image column(s) with data.init_args.dataset.init_args.image_keys")
            for r in rows:
                path = Path(r[key]).expanduser()
                r[key] = str(path if path.is_absolute() else table.parent / path)
        return rows

    def _source(self, split: str) -> tuple[list[dict[str, Any]], None]:
        if split not in ("train", "val"):
            raise ConfigError(f"vit3d pretrain has no {split!r} split",
                              fix="fine-tune the encoder with vit3d fit, and test that")
        if self.data is None:
            raise ConfigError("vit3d pretrain has no data",
                              fix="set data.init_args.data (a CSV, a folder or a glob of files)")
        rows = self._rows(self.data)
        if rows and "split" in rows[0]:
            train = [r for r in rows if r["split"] == "train"]
            val = [r for r in rows if r["split"] == "val"]
            if not train:
                raise ConfigError("the CSV has a split column but no 'train' rows", file=self.data,
                                  fix="mark the rows to learn from with split=train")
        else:
            train, val = rows, []
        if self.val_data is not None:
            val = self._rows(self.val_data)
        elif not val:
            order = list(range(len(train)))
            random.Random(self.seed).shuffle(order)
            held = set(order[: max(1, round(HELD_OUT_SHARE * len(train)))]) if len(train) > 1 else set()
            val = [train[i] for i in sorted(held)] or list(train)
            train = [r for i, r in enumerate(train) if i not in held]
        return (train if split == "train" else val), None


class PretrainVolumeDataModule(UnlabelledDataModule, VolumeDataModule):
    """:class:`pipelines.datamodules.VolumeDataModule` for ``vit3d pretrain``: the same ``dataset`` keywords and
    options, labels ignored (see :class:`UnlabelledDataModule` for the splits)."""

    @property
    def path_keys(self) -> list[str]:
        return list(self.image_keys)


class PretrainVideoDataModule(UnlabelledDataModule, VideoDataModule):
    """:class:`pipelines.datamodules.VideoDataModule` for ``vit3d pretrain``: the same clip sampling and
    ``dataset`` keywords, labels ignored (see :class:`UnlabelledDataModule` for the splits)."""

    @property
    def path_keys(self) -> list[str]:
        return ["path"]


# ---------------------------------------------------------------------- pictures
def _to_uint8(panels: list[np.ndarray], reference: np.ndarray) -> list[np.ndarray]:
    """Scale every panel with the reference's 1st-99th percentile window, to uint8."""
    lo, hi = np.percentile(reference, [1, 99])
    hi = hi if hi > lo else lo + 1.0
    return [(np.clip((p - lo) / (hi - lo), 0, 1) * 255).round().astype(np.uint8) for p in panels]


def _rgb(frames: np.ndarray) -> np.ndarray:
    """``(C, T, H, W)`` -> ``(T, H, W, 3)``: RGB as is, other channel counts show their first channel in grey."""
    img = np.moveaxis(frames, 0, -1)
    return img if img.shape[-1] == 3 else np.repeat(img[..., :1], 3, axis=-1)


def reconstruction_montage(masked: torch.Tensor, recon: torch.Tensor, original: torch.Tensor, *,
                           num_slices: int = 8, min_size: int = 96) -> np.ndarray:
    """One uint8 ``(H, W, 3)`` picture: rows masked input, reconstruction, original; columns evenly spaced
    slices (or frames) along the first spatial axis. Each input is ``(C, *spatial)`` with 3 spatial axes."""
    arrays = [t.detach().float().cpu().numpy() for t in (masked, recon, original)]
    if arrays[2].ndim != 4:
        raise ValueError(f"pictures need (C, D, H, W) samples, got {tuple(original.shape)}")
    depth = arrays[2].shape[1]
    idx = sorted(set(np.linspace(0, depth - 1, min(num_slices, depth)).round().astype(int).tolist()))
    rows = [_rgb(a)[idx] for a in _to_uint8(arrays, arrays[2])]
    factor = max(1, -(-min_size // min(rows[0].shape[1:3])))
    gap = 2
    grid = np.full((3 * rows[0].shape[1] * factor + 2 * gap, len(idx) * (rows[0].shape[2] * factor + gap) - gap, 3),
                   255, dtype=np.uint8)
    h, w = rows[0].shape[1] * factor, rows[0].shape[2] * factor
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            grid[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = \
                panel.repeat(factor, axis=0).repeat(factor, axis=1)
    return grid


def write_reconstructions(masked: torch.Tensor, recon: torch.Tensor, original: torch.Tensor, folder: str | Path, *,
                          clip: bool, fps: float = 4.0) -> list[Path]:
    """Write ``reconstruction.png`` (the montage) and, for clips, ``reconstruction.gif`` (masked input,
    reconstruction and original side by side, one frame per time step) into ``folder``."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = [folder / "reconstruction.png"]
    Image.fromarray(reconstruction_montage(masked, recon, original)).save(out[0])
    if clip:
        arrays = [t.detach().float().cpu().numpy() for t in (masked, recon, original)]
        frames = np.concatenate([_rgb(a) for a in _to_uint8(arrays, arrays[2])], axis=2)  # (T, H, 3W, 3)
        factor = max(1, -(-128 // min(frames.shape[1:3])))
        images = [Image.fromarray(f.repeat(factor, axis=0).repeat(factor, axis=1)) for f in frames]
        out.append(folder / "reconstruction.gif")
        images[0].save(out[1], save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)), loop=0)
    return out


# ---------------------------------------------------------------------- a whole autoencoder to continue
class VideoMAEPretraining(MaskedAutoencoder):
    """Encoder **and decoder** of a HF ``VideoMAEForPreTraining`` checkpoint, to continue its pretraining.

    ``model.net: {class_path: pipelines.pretrain.VideoMAEPretraining, init_args: {path: <dir>}}``; the file fixes
    the architecture and the decoder (``model.decoder_*`` and ``norm_pix_loss`` are left unset), the data's clip
    size must match it. Read safely by :func:`vit3d.weights.load_videomae_pretraining`; the report is
    ``load_report``.

    Args:
        path: a HF ``VideoMAEForPreTraining`` directory (``config.json`` beside the weights) or weights file.
        in_chans: the data's channels; linked from the data module and checked against the file.
        img_size: the data's clip size ``[T, H, W]``; linked from the data module and checked against the file.
    """

    def __init__(self, path: str, *, in_chans: int | None = None, img_size: list[int] | None = None) -> None:
        from vit3d.weights.videomae_pretraining import is_videomae_pretraining, load_videomae_pretraining

        if not Path(path).exists():
            raise MissingInputError("VideoMAE pretraining checkpoint not found", file=path,
                                    fix="give a VideoMAEForPreTraining directory (save_pretrained) or its weights")
        if not is_videomae_pretraining(path):
            from vit3d.errors import CheckpointError

            raise CheckpointError("not a VideoMAEForPreTraining checkpoint (no decoder)", file=path,
                                  fix="for an encoder alone give its weights file to pipelines.networks.Pretrained "
                                      "(a new decoder is built)")
        # Masks: a ratio every grid of 2+ tokens accepts; MAEModule sets the run's (model.mask_type, mask_ratio).
        source = load_videomae_pretraining(path, mask_type="tube", mask_ratio=0.5)
        encoder = source.encoder
        if (in_chans is not None and in_chans != encoder.in_chans) or (
                img_size is not None and tuple(img_size) != tuple(encoder.img_size)):
            raise ConfigError(f"the checkpoint takes inputs of {encoder.in_chans} channels and size "
                              f"{list(encoder.img_size)}, the data gives {in_chans} and {img_size}", file=path,
                              fix="set the data's dataset frames and img_size to match")
        block = source.decoder_blocks[0]
        width = block.attn.qkv.in_features
        super().__init__(encoder, decoder_embed_dim=width, decoder_depth=len(source.decoder_blocks),
                         decoder_num_heads=block.attn.num_heads, decoder_mlp_ratio=block.mlp.fc1.out_features / width,
                         decoder_pos_embed=source.decoder_pos_type, decoder_norm_eps=source.decoder_norm.eps,
                         mask_type=source.mask_type, mask_ratio=source.mask_ratio,
                         norm_pix_loss=source.norm_pix_loss, pixel_mean=source.pixel_mean, pixel_std=source.pixel_std)
        self.load_state_dict(source.state_dict(), strict=True)
        self.load_report = source.load_report
        self.path = path


# ---------------------------------------------------------------------- the LightningModule
class MAEModule(pl.LightningModule):
    """Masked-autoencoder pretraining of any vit3d ViT (:class:`vit3d.models.mae.MaskedAutoencoder`).

    Args:
        net: the encoder, a :class:`vit3d.models.VisionTransformer`, given as in ``vit3d fit``: in configs a
            ``class_path`` with typed ``init_args``: ``pipelines.networks.<preset>`` (any ``vit3d models`` ViT;
            its ``pretrained`` takes a 2D checkpoint, inflated on the fly, or a 3D file), or
            ``pipelines.networks.Pretrained`` (architecture and weights from a ``vit3d inflate`` / ``adapt`` /
            ``pretrain`` file). ``in_chans`` and ``img_size`` are linked from the data; the classifier head is
            dropped. A whole :class:`~vit3d.models.mae.MaskedAutoencoder` continues with its own decoder:
            :class:`VideoMAEPretraining` (a HF ``VideoMAEForPreTraining``).
        data_kind: ``volume`` or ``clip``; linked from the data module (picks the mask defaults and pictures).
        mask_type: ``random`` patches (volumes) or whole ``tube`` s through time (clips); ``null``: by data_kind.
        mask_ratio: share of patches hidden; ``null``: 0.75 for volumes, 0.9 for clips.
        mask_seed: seed of the masks (``null`` = the global seed); a mask depends on (seed, batch count, rank)
            only, so a resumed run masks exactly like an uninterrupted one.
        decoder_embed_dim: width of the new decoder (``null``: 256; unset for a whole autoencoder).
        decoder_depth: blocks of the new decoder (``null``: 4).
        decoder_num_heads: heads of the new decoder (``null``: 8).
        norm_pix_loss: predict per-patch normalised pixels (MAE, VideoMAE; ``null``: true); ``false`` predicts
            raw values.
        optimizer: optimiser callable taking parameter groups (AdamW by default).
        lr_scheduler: scheduler callable; the default warms up linearly then decays along a cosine.
        grad_checkpointing: recompute encoder blocks in backward (less memory).
        encoder_path: where the encoder is written at the end (default ``<default_root_dir>/encoder.safetensors``).
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        data_kind: Literal["volume", "clip"] = "volume",
        mask_type: Literal["random", "tube"] | None = None,
        mask_ratio: float | None = None,
        mask_seed: int | None = None,
        decoder_embed_dim: int | None = None,
        decoder_depth: int | None = None,
        decoder_num_heads: int | None = None,
        norm_pix_loss: bool | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = WarmupCosineLR,
        grad_checkpointing: bool = False,
        encoder_path: str | None = None,
    ) -> None:
        super().__init__()
        given = _given_hyperparameters.get()  # the config LightningCLI parsed, when it built this module
        self.save_hyperparameters(ignore=["net", "optimizer", "lr_scheduler"])
        if data_kind not in MASK_DEFAULTS:
            raise ConfigError(f"data_kind={data_kind!r} must be one of {list(MASK_DEFAULTS)}")
        default_type, default_ratio = MASK_DEFAULTS[data_kind]
        mask_type = mask_type or default_type
        mask_ratio = default_ratio if mask_ratio is None else mask_ratio
        decoder = {"decoder_embed_dim": decoder_embed_dim, "decoder_depth": decoder_depth,
                   "decoder_num_heads": decoder_num_heads, "norm_pix_loss": norm_pix_loss}
        if isinstance(net, MaskedAutoencoder):
            set_keys = [k for k, v in decoder.items() if v is not None]
            if set_keys:
                raise ConfigError(f"{type(net).__name__} brings its own decoder; model.{set_keys[0]} cannot change it",
                                  fix=f"unset model.{', model.'.join(set_keys)}")
            mae = net
            mae.set_masking(mask_type, mask_ratio)
        elif isinstance(net, VisionTransformer):
            if net.num_classes:
                net.reset_classifier(0)  # pretraining uses no head; fit adds a fresh one for its classes
                if isinstance(getattr(net, "model_args", None), dict):
                    net.model_args = {**net.model_args, "num_classes": 0}
            mae = MaskedAutoencoder(
                net, decoder_embed_dim=256 if decoder_embed_dim is None else decoder_embed_dim,
                decoder_depth=4 if decoder_depth is None else decoder_depth,
                decoder_num_heads=8 if decoder_num_heads is None else decoder_num_heads,
                mask_type=mask_type, mask_ratio=mask_ratio,
                norm_pix_loss=True if norm_pix_loss is None else norm_pix_loss)
        else:
            raise ConfigError(f"masked autoencoding pretrains vit3d VisionTransformers; model.net builds a "
                              f"{type(net).__name__}", fix="give a ViT preset (vit3d models) or "
                                                            "pipelines.networks.Pretrained")
        # As in fit: the checkpoint stores the encoder's architecture when vit3d can describe it, else the config.
        net_config = (given or {}).get("net")
        stored = network_config(mae.encoder) if isinstance(net, VisionTransformer) else None
        if stored is not None or net_config is not None:
            self.hparams["net"] = stored or net_config
        self.started_from = _started_from(net_config)  # for the encoder file's provenance
        self.model = mae
        if grad_checkpointing:
            mae.encoder.set_grad_checkpointing(True)
        self.data_kind = data_kind
        self.mask_seed = int(mask_seed if mask_seed is not None else torch.initial_seed() % 2**31)
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.encoder_path = encoder_path
        self.skipped = 0  # training samples the loader skipped (data on_error=skip), logged per epoch
        self._picture: tuple[torch.Tensor, TokenMask] | None = None

    # ------------------------------------------------------------------ steps
    def _mask(self, x: torch.Tensor, stream: int, index: int) -> TokenMask:
        seed = sample_seed(self.mask_seed, stream, index, self.global_rank)
        return self.model.random_mask(x, torch.Generator().manual_seed(seed))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        self.skipped += len(batch.get("failed", []))
        if "image" not in batch:  # every sample of the batch was skipped (data on_error=skip): nothing to compute
            return None
        x = batch["image"]
        # The batch count across epochs is restored with the loop state, so a resumed run draws the same masks.
        mask = self._mask(x, 0, self.trainer.fit_loop.epoch_loop.total_batch_idx)
        loss = self.model(x, mask)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(x))
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/skipped", float(self.skipped), on_step=False, on_epoch=True, reduce_fx="sum", sync_dist=True)
        self.skipped = 0

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if "image" not in batch:
            return
        x = batch["image"]
        mask = self._mask(x, -1, batch_idx)  # the same masks every epoch: comparable val/loss
        self.log("val/loss", self.model(x, mask), prog_bar=True, batch_size=len(x), sync_dist=True)
        if batch_idx == 0:
            self._picture = (x[:1].detach(), TokenMask(*(t[:1] for t in mask)))

    def _pictures(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        if self._picture is None:
            return None
        x, mask = self._picture
        was_training = self.model.training
        self.model.eval()
        masked, recon, original = self.model.reconstruct(x, mask)
        self.model.train(was_training)
        return masked[0], recon[0], original[0]

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        pictures = self._pictures()
        if pictures is None or pictures[0].ndim != 4:
            return
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/reconstruction", reconstruction_montage(*pictures),
                                            self.global_step, dataformats="HWC")

    # ------------------------------------------------------------------ the result
    def on_train_end(self) -> None:
        """Write the encoder (every rank takes part: FSDP gathers the full state) and the final pictures."""
        from vit3d.weights import Checkpoint, LoadReport, save_checkpoint, vit_config

        state = self.trainer.strategy.lightning_module_state_dict()
        if not self.trainer.is_global_zero:
            return
        prefix = "model.encoder."
        encoder_state = {k[len(prefix):]: v.detach().cpu() for k, v in state.items() if k.startswith(prefix)}
        report = getattr(self.model.encoder, "load_report", None) or LoadReport()
        root = Path(self.trainer.default_root_dir)
        path = Path(self.encoder_path) if self.encoder_path else root / "encoder.safetensors"
        provenance = {"method": "masked autoencoding (vit3d pretrain)", "mask_type": self.model.mask_type,
                      "mask_ratio": self.model.mask_ratio, "norm_pix_loss": self.model.norm_pix_loss,
                      "epochs": self.current_epoch, "steps": self.global_step,
                      "started_from": self.started_from}
        save_checkpoint(Checkpoint(encoder_state, vit_config(self.model.encoder), report), path, provenance)
        written = [path]
        pictures = self._pictures()
        if pictures is not None and pictures[0].ndim == 4:
            written += write_reconstructions(*pictures, root / "reconstructions", clip=self.data_kind == "clip")
        rank_zero_info(f"vit3d pretrain: wrote {', '.join(map(str, written))}\n  fine-tune with: vit3d fit -c "
                       f"<config> --model.net pipelines.networks.Pretrained --model.net.init_args.path {path}")

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(param_groups(self.model))
        if self.lr_scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": self.lr_scheduler_factory(optimizer), "interval": "step"}}

    def on_train_start(self) -> None:
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, WarmupCosineLR) and scheduler.total_steps is None:
                total = self.trainer.estimated_stepping_batches
                if total is None or total < 1 or total == float("inf"):
                    raise ValueError("the warm-up/cosine schedule needs a finite run: set trainer.max_epochs or "
                                     "trainer.max_steps, or give lr_scheduler.init_args.total_steps")
                scheduler.set_total_steps(int(total))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vit3d"] = {"mask_seed": self.mask_seed}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.mask_seed = checkpoint.get("vit3d", {}).get("mask_seed", self.mask_seed)


def _started_from(net_config: Any) -> str | None:
    """The weights file a run's ``model.net`` config starts from (``path`` or ``pretrained``), if any."""
    init = net_config.get("init_args") if isinstance(net_config, dict) else None
    init = init if isinstance(init, dict) else vars(init) if init is not None else {}
    found = init.get("path") or init.get("pretrained")
    return None if found is None else str(found)


# ---------------------------------------------------------------------- the command
class PretrainCLI(VitCLI):
    """:class:`pipelines.train.VitCLI` (same trainer, loggers, checkpoints, resume) with the pretraining links and a
    checkpoint monitor on the lowest ``val/loss``."""

    command = "vit3d pretrain"

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.set_defaults({"checkpoint.monitor": "val/loss", "checkpoint.mode": "min"})

    def link_data_to_model(self, parser: LightningArgumentParser) -> None:
        """The data's ``in_chans`` and ``img_size`` into the encoder (no classes: pretraining has none)."""
        for key in ("in_chans", "img_size"):
            parser.link_arguments(f"data.{key}", f"model.net.init_args.{key}", apply_on="instantiate")
        parser.link_arguments("data.kind", "model.data_kind", apply_on="instantiate")


def main(argv: list[str] | None = None) -> int:
    """Run ``vit3d pretrain [-c CONFIG ...] [--KEY VALUE ...] [--ckpt_path last]``; returns the exit status.

    User errors propagate to :func:`pipelines.cli.main` (one line, exit 2), as for ``vit3d fit``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "vit3d pretrain [-c CONFIG ...] [--print_config] [--KEY VALUE ...] [--ckpt_path last]"
    parser_kwargs = {"prog": "vit3d pretrain", "fit": {
        "prog": "vit3d pretrain", "usage": usage,
        "description": "Masked-autoencoder pretraining on unlabelled volumes or clips; writes "
                       "<root>/encoder.safetensors for vit3d fit (model.net: pipelines.networks.Pretrained)."}}
    return run_cli(["fit", *argv], parser_kwargs, cli_class=PretrainCLI, model_class=MAEModule,
                   datamodule_class=UnlabelledDataModule, default_root=DEFAULT_ROOT)


if __name__ == "__main__":
    sys.exit(main())
