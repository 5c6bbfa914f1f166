"""``ClassificationModule``: any network, injected optimiser and scheduler, metrics for volumes and clips.

The LightningModule receives a plain ``nn.Module`` and optimiser / scheduler callables, as Lightning recommends. In
configs the network is ``class_path`` + typed ``init_args`` (a registry preset from :mod:`pipelines.networks`, a
family class, or any ``nn.Module``), and ``num_classes``, ``in_chans`` and ``img_size`` arrive in its ``init_args``
from the data module through ``LightningCLI.link_arguments``, so each is written once.
"""

from __future__ import annotations

import os
import shutil
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch import nn
from torchmetrics.functional.classification import (
    binary_auroc,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_f1_score,
)

from vit3d.data import average_views
from vit3d.errors import ConfigError
from vit3d.layers.helpers import check_choice

from .mixup import Mixup
from .networks import network_config
from .schedulers import WarmupCosineLR

__all__ = ["ClassificationModule", "classification_metrics", "labels_per_id", "layer_ids", "param_groups"]


# ---------------------------------------------------------------------- parameter groups
def _blocks(model: nn.Module) -> tuple[str, nn.Module]:
    """The ``blocks`` stack of ``model`` and its qualified name, or a ValueError saying what is needed."""
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] == "blocks" and isinstance(module, (nn.ModuleList, nn.Sequential)):
            return name, module
    raise ConfigError(f"{type(model).__name__} has no `blocks` ModuleList/Sequential; layer_decay and "
                     "train_last_blocks need a model built from a stack of blocks (ViT, CCT). Unset them for this "
                     "model")


def layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """Layer index of every parameter: 0 before the blocks (embeddings), ``i + 1`` in block ``i``, ``depth + 1`` after.

    Returns:
        ``(ids, depth)``.
    """
    prefix, blocks = _blocks(model)
    depth = len(blocks)
    ids: dict[str, int] = {}
    after = False
    for name, _ in model.named_parameters():
        if name.startswith(prefix + "."):
            ids[name] = int(name[len(prefix) + 1:].split(".", 1)[0]) + 1
            after = True
        else:
            # Parameters owned by the root (cls_token, pos_embed) and modules before the blocks are the embedding.
            ids[name] = depth + 1 if after and "." in name else 0
    return ids, depth


def _no_weight_decay(model: nn.Module) -> set[str]:
    names = {n for n, p in model.named_parameters() if p.ndim <= 1}  # biases, norms, scalar gates
    names |= {n for n, _ in model.named_parameters() if n.rsplit(".", 1)[-1] in ("pos_embed", "cls_token")}
    extra = getattr(model, "no_weight_decay", None)  # the timm convention for more names
    if callable(extra):
        names |= {n for n, _ in model.named_parameters() if n in set(extra())}
    return names


def param_groups(model: nn.Module, *, layer_decay: float | None = None,
                 train_last_blocks: int | None = None) -> list[dict[str, Any]]:
    """Optimiser parameter groups: no weight decay on biases/norms/positions, optional layer-wise lr decay.

    Args:
        model: the network.
        layer_decay: the lr of layer ``l`` (0 = embeddings, ``depth + 1`` = head) is scaled by
            ``layer_decay ** (depth + 1 - l)`` (BEiT / MAE fine-tuning recipe); ``None`` disables it.
        train_last_blocks: freeze the embeddings and all but the last ``N`` blocks (``0`` trains only the final
            norm and head, a linear probe); ``None`` trains everything.

    Returns:
        Groups for a torch optimiser; each carries ``lr_scale``, applied by
        :meth:`ClassificationModule.configure_optimizers`, and ``weight_decay = 0`` where decay is off.
    """
    if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
        raise ConfigError(f"layer_decay must be in (0, 1], got {layer_decay}")
    ids, depth = layer_ids(model) if (layer_decay is not None or train_last_blocks is not None) else ({}, 0)
    if train_last_blocks is not None:
        if not 0 <= train_last_blocks <= depth:
            raise ConfigError(f"train_last_blocks={train_last_blocks} but the model has {depth} blocks; "
                             f"choose 0..{depth}")
        for name, param in model.named_parameters():
            param.requires_grad_(ids[name] > depth - train_last_blocks)
    no_decay = _no_weight_decay(model)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = ids.get(name, 0)
        scale = 1.0 if layer_decay is None else layer_decay ** (depth + 1 - layer)
        key = (layer if layer_decay is not None else 0, name in no_decay)
        if key not in groups:
            groups[key] = {"params": [], "lr_scale": scale}
            if name in no_decay:
                groups[key]["weight_decay"] = 0.0
        groups[key]["params"].append(param)
    if not groups:
        raise ConfigError("no trainable parameters left; raise train_last_blocks or unset it")
    return [groups[k] for k in sorted(groups)]


# ---------------------------------------------------------------------- metrics
def classification_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Accuracy, balanced accuracy (macro recall), macro F1 and AUROC of ``(N, C)`` probabilities.

    AUROC is the binary one on the positive class for ``C == 2``, else the macro one-vs-rest average.
    """
    num_classes = probs.shape[1]
    probs, labels = probs.float(), labels.long()
    out = {
        "acc": multiclass_accuracy(probs, labels, num_classes, average="micro"),
        "bal_acc": multiclass_accuracy(probs, labels, num_classes, average="macro"),
        "f1": multiclass_f1_score(probs, labels, num_classes, average="macro"),
    }
    if num_classes == 2:
        out["auroc"] = binary_auroc(probs[:, 1], labels)
    else:
        out["auroc"] = multiclass_auroc(probs, labels, num_classes, average="macro")
    return out


def labels_per_id(ids: list[str], labels: torch.Tensor, order: list[str]) -> torch.Tensor:
    """The label of each id of ``order`` (the unique ids :func:`vit3d.data.average_views` returns).

    Raises:
        ValueError: when the views of one id carry different labels.
    """
    seen: dict[str, int] = {}
    for i, label in zip(ids, labels.tolist(), strict=True):
        if seen.setdefault(i, label) != label:
            raise ConfigError(f"views of {i!r} carry labels {seen[i]} and {label}; every view of an id must share "
                             "its label")
    return torch.tensor([seen[i] for i in order], dtype=torch.long)


def _gather_objects(obj: Any) -> list[Any]:
    """``[obj]`` on one process, every rank's ``obj`` under torch.distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        out: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, obj)
        return out
    return [obj]


# ---------------------------------------------------------------------- the LightningModule
def check_compiler(device_type: str) -> None:
    """``torch.compile`` on CPU generates C++: fail before the first step, in one line, when no compiler is found."""
    if device_type != "cpu":
        return
    names = [os.environ.get("CXX")] + ["g++", "c++", "clang++"]
    if not any(name and shutil.which(name) for name in names):
        raise ConfigError("model.compile is true but no C++ compiler was found (torch.compile builds C++ kernels "
                          "on CPU)", fix="install g++ or clang++ (or set CXX), or set model.compile false")


class ClassificationModule(pl.LightningModule):
    """Classification of volumes or clips with any network.

    Args:
        net: the network, ``(B, C, *spatial)`` -> logits ``(B, num_classes)``. In configs a ``class_path`` with
            typed ``init_args``: ``pipelines.networks.<preset>`` (any ``vit3d models`` name, with ``pretrained``),
            ``pipelines.networks.Pretrained`` (architecture from a ``vit3d inflate`` file), a family class
            (``vit3d.models.VisionTransformer``, ``vit3d.models.CCT``) or any importable ``nn.Module``.
        class_names: class names in label order; linked from the data module and saved for inference.
        optimizer: optimiser callable taking parameter groups (AdamW by default; set ``lr`` and ``weight_decay``
            in its ``init_args``).
        lr_scheduler: scheduler callable taking the optimiser; the default warms up linearly then decays along
            a cosine over the whole run. ``null`` keeps the lr constant.
        lr_scheduler_interval: step the scheduler every optimiser ``step`` or every ``epoch``.
        label_smoothing: smoothing of the training targets.
        mixup_alpha: mixup Beta parameter (0 = off).
        cutmix_alpha: CutMix Beta parameter (0 = off).
        mix_prob: probability of mixing a batch when mixup or CutMix is on.
        mix_switch_prob: probability of CutMix rather than mixup when both are on.
        cutmix_axes: spatial axes CutMix cuts (``null`` = all; ``[1, 2]`` for clips keeps the box through time).
        mix_seed: seed of the mixing draws (``null`` = the global seed); draws depend on (seed, epoch, batch, rank)
            only, so a resumed run mixes exactly like an uninterrupted one.
        layer_decay: layer-wise lr decay for fine-tuning (e.g. 0.75); ``null`` = off.
        train_last_blocks: fine-tune only the last ``N`` blocks plus norm and head (``0`` = linear probe).
        grad_checkpointing: recompute block activations in backward (less memory).
        compile: ``torch.compile`` the network's forward when the run starts (``nn.Module.compile``, so checkpoint
            keys do not change). The first steps are slower while it compiles; on CPU it needs a C++ compiler.
            ``vit3d bench --compile`` measures what it gains for a model (docs/benchmarks.md).
        sliding_window_overlap: evaluate (validate, test, predict) inputs larger than the network's input by
            overlapping windows of its input size (:func:`vit3d.inference.sliding_window_logits`), each window
            overlapping the next by this share; ``null`` = off. Pair it with the dataset's ``fov: whole`` (the whole
            scan at the training spacing) and ``eval_batch_size: 1``, since whole scans differ in size.
        sliding_window_aggregate: how window logits become one: ``mean``, ``max`` or ``attention``.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        class_names: list[str] | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = WarmupCosineLR,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        label_smoothing: float = 0.1,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        mix_switch_prob: float = 0.5,
        cutmix_axes: list[int] | None = None,
        mix_seed: int | None = None,
        layer_decay: float | None = None,
        train_last_blocks: int | None = None,
        grad_checkpointing: bool = False,
        compile: bool = False,
        sliding_window_overlap: float | None = None,
        sliding_window_aggregate: Literal["mean", "max", "attention"] = "mean",
    ) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
        given = _given_hyperparameters.get()  # the config LightningCLI parsed, when it built this module
        self.save_hyperparameters(ignore=["net", "optimizer", "lr_scheduler"])
        # A checkpoint must rebuild the network alone: store its architecture (no pretrained file needed) when
        # vit3d can describe it, else the config it was built from.
        net_config = network_config(net) or (given or {}).get("net")
        if net_config is not None:
            self.hparams["net"] = net_config
        num_classes = getattr(net, "num_classes", None)
        if num_classes is None:
            if class_names is None:
                raise ConfigError(f"{type(net).__name__} has no num_classes attribute and no class_names were given",
                                  fix="pass class_names (the data module links them in configs)")
            num_classes = len(class_names)
        if class_names is not None and len(class_names) != num_classes:
            raise ConfigError(f"the network has {num_classes} outputs but there are {len(class_names)} classes "
                              f"{class_names}", fix="build the network with num_classes=len(class_names)")
        self.num_classes = int(num_classes)
        if self.num_classes < 2:
            raise ConfigError(f"classification needs at least 2 classes, got num_classes={self.num_classes}")
        self.model = net
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        if grad_checkpointing:
            net.set_grad_checkpointing(True)
        self.compile_net = compile
        self._net_compiled = False
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.lr_scheduler_interval = lr_scheduler_interval
        self.label_smoothing = label_smoothing
        self.mixup = Mixup(self.num_classes, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=mix_prob,
                           switch_prob=mix_switch_prob, label_smoothing=label_smoothing, cut_axes=cutmix_axes)
        self.mix_seed = int(mix_seed if mix_seed is not None else torch.initial_seed() % 2**31)
        self.layer_decay = layer_decay
        self.train_last_blocks = train_last_blocks
        if train_last_blocks is not None or layer_decay is not None:
            param_groups(net, layer_decay=layer_decay, train_last_blocks=train_last_blocks)  # fail fast, freeze now
        if sliding_window_overlap is not None and not 0.0 <= sliding_window_overlap < 1.0:
            raise ConfigError(f"sliding_window_overlap={sliding_window_overlap} is outside [0, 1)",
                              fix="use e.g. 0.25, or null to evaluate the input as it comes")
        check_choice("sliding_window_aggregate", sliding_window_aggregate, ("mean", "max", "attention"))
        self.sliding_window_overlap = sliding_window_overlap
        self.sliding_window_aggregate = sliding_window_aggregate
        self._outputs: dict[str, list[dict[str, Any]]] = {}
        self.skipped: dict[str, int] = {}  # stage -> samples skipped while loading (data on_error=skip)

    # ------------------------------------------------------------------ forward and training
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> logits ``(B, num_classes)``."""
        return self.model(x)

    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for evaluation: one forward pass, or sliding windows when they are on and ``x`` is larger than
        the network's input."""
        if self.sliding_window_overlap is None:
            return self(x)
        from vit3d.inference import model_input_size, sliding_window_logits

        if tuple(x.shape[2:]) == model_input_size(self.model):
            return self(x)
        return sliding_window_logits(self.model, x, overlap=self.sliding_window_overlap,
                                     aggregate=self.sliding_window_aggregate).logits

    def configure_model(self) -> None:
        # Here rather than in __init__: Lightning calls it once the strategy has placed (or sharded) the network.
        if self.compile_net and not self._net_compiled:
            trainer = self._trainer
            device = trainer.strategy.root_device if trainer is not None else next(self.model.parameters()).device
            check_compiler(device.type)
            self.model.compile()
            self._net_compiled = True

    def on_fit_start(self) -> None:
        # What loading the pretrained weights did (renamed, resampled, re-initialised, dropped), before step one.
        report = getattr(self.model, "load_report", None)
        if report is not None and self.trainer.is_global_zero:
            print(f"pretrained weights: {report}")

    def _count_failed(self, stage: str, batch: dict[str, Any] | None) -> bool:
        """Count the batch's skipped samples; False when nothing is left to compute."""
        failed = [] if batch is None else batch.get("failed", [])
        if failed:
            self.skipped[stage] = self.skipped.get(stage, 0) + len(failed)
        return batch is not None and "image" in batch

    def _mix_generator(self, batch_idx: int) -> torch.Generator:
        seed = ((self.mix_seed * 1_000_003 + self.current_epoch) * 1_000_003 + batch_idx) * 131 + self.global_rank
        return torch.Generator().manual_seed(seed % 2**63)

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> torch.Tensor | None:
        if not self._count_failed("train", batch):  # every sample of the batch was skipped (on_error=skip)
            return None
        x, y = batch["image"], batch["label"]
        if (y < 0).any():
            raise ConfigError("training batch holds unlabelled samples (label -1); check the label column of the "
                             "training split")
        if self.mixup.enabled:
            x, target = self.mixup(x, y, self._mix_generator(batch_idx))
            logits = self(x)
            loss = torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        else:
            logits = self(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
            self.log("train/acc", (logits.argmax(-1) == y).float().mean(), on_step=False, on_epoch=True,
                     batch_size=len(y), sync_dist=True)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        return loss

    def on_train_epoch_end(self) -> None:
        # Samples the loader skipped this epoch (unreadable, on_error=skip): in the logs next to the loss.
        self.log("train/skipped", float(self.skipped.pop("train", 0)), on_step=False, on_epoch=True,
                 reduce_fx="sum", sync_dist=True)

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, stage: str, batch: dict[str, Any] | None) -> None:
        outputs = self._outputs.setdefault(stage, [])
        if not self._count_failed(stage, batch):
            return
        logits = self.eval_logits(batch["image"]).float()
        y = batch["label"]
        labelled = y >= 0
        if labelled.any():
            loss = F.cross_entropy(logits[labelled], y[labelled])
            self.log(f"{stage}/loss", loss, prog_bar=stage == "val", batch_size=int(labelled.sum()), sync_dist=True)
        outputs.append({"id": list(batch["id"]), "logits": logits.cpu(), "label": y.cpu()})

    def _eval_epoch_end(self, stage: str) -> None:
        outputs = self._outputs.pop(stage, [])
        skipped = self.skipped.pop(stage, 0)
        local = {"id": [i for o in outputs for i in o["id"]],
                 "logits": torch.cat([o["logits"] for o in outputs]) if outputs else torch.zeros(0, self.num_classes),
                 "label": torch.cat([o["label"] for o in outputs]) if outputs else torch.zeros(0, dtype=torch.long),
                 "skipped": skipped}
        parts = _gather_objects(local)
        ids = [i for p in parts for i in p["id"]]
        if self.trainer.sanity_checking:
            return
        metrics: dict[str, Any] = {"skipped": float(sum(p["skipped"] for p in parts))}
        if ids:
            logits, labels = torch.cat([p["logits"] for p in parts]), torch.cat([p["label"] for p in parts])
            # Multi-view testing (and padded distributed samplers): average every view of an id first.
            uids, probs = average_views(logits, ids)
            vid_labels = labels_per_id(ids, labels, uids)
            keep = vid_labels >= 0
            if keep.any():
                metrics.update(classification_metrics(probs[keep], vid_labels[keep]))
                metrics["samples"] = float(int(keep.sum()))
                if len(uids) < len(ids) and stage == "test":
                    metrics["clip_acc"] = classification_metrics(logits.softmax(-1), labels)["acc"]
        # Every rank holds the same gathered values, so no further reduction is needed.
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.items()}, prog_bar=stage == "val",
                      rank_zero_only=False, sync_dist=False)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict[str, Any] | None, batch_idx: int) -> dict[str, Any]:
        """``{"id", "logits", "failed"}``: the logits of the batch's good samples and the inputs that failed."""
        failed = [] if batch is None else list(batch.get("failed", []))
        if batch is None or "image" not in batch:
            return {"id": [], "logits": torch.zeros(0, self.num_classes), "failed": failed}
        return {"id": list(batch["id"]), "logits": self.eval_logits(batch["image"]).float().cpu(), "failed": failed}

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        groups = param_groups(self.model, layer_decay=self.layer_decay, train_last_blocks=self.train_last_blocks)
        optimizer = self.optimizer_factory(groups)
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": self.lr_scheduler_interval,
                                 "monitor": "val/loss"}}

    def on_train_start(self) -> None:
        # The run length is known only now: asking for it in configure_optimizers would build the train loader
        # before a resumed run restores the loader's position.
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, WarmupCosineLR) and scheduler.total_steps is None:
                total = (self.trainer.max_epochs if self.lr_scheduler_interval == "epoch"
                         else self.trainer.estimated_stepping_batches)
                if total is None or total < 1 or total == float("inf"):
                    raise ConfigError("the warm-up/cosine schedule needs a finite run: set trainer.max_epochs or "
                                     "trainer.max_steps, or give lr_scheduler.init_args.total_steps")
                scheduler.set_total_steps(int(total))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vit3d"] = {"class_names": self.class_names, "mix_seed": self.mix_seed}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.mix_seed = checkpoint.get("vit3d", {}).get("mix_seed", self.mix_seed)

