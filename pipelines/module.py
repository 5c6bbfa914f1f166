"""``ClassificationModule``: any vit3d model, injected optimiser and scheduler, metrics for volumes and clips.

The LightningModule receives a plain ``nn.Module`` (or builds one from the registry) and optimiser / scheduler
callables, as Lightning recommends; ``num_classes``, ``in_chans`` and ``img_size`` arrive from the data module through
``LightningCLI.link_arguments`` so each is written once.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics.functional.classification import (
    binary_auroc,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_f1_score,
)

import vit3d
from vit3d.models.registry import build_model, is_model

from .mixup import Mixup
from .schedulers import WarmupCosineLR

__all__ = ["ClassificationModule", "aggregate_views", "build_network", "classification_metrics", "layer_ids",
           "param_groups"]


# ---------------------------------------------------------------------- model construction
def build_network(model: str | None, *, model_args: dict[str, Any] | None = None, pretrained: str | None = None,
                  num_classes: int | None = None, in_chans: int | None = None,
                  img_size: int | Sequence[int] | None = None) -> nn.Module:
    """Build ``model`` (a registry name or a dotted class path) with ``model_args`` and the data-given sizes.

    ``num_classes``, ``in_chans`` and ``img_size`` come from the data module; repeating one of them in
    ``model_args`` with another value is an error rather than a silent override.

    Raises:
        ValueError: unknown model name (with the nearest names), unknown keyword, a clash with the data's sizes, or
            a class path that does not import.
    """
    args = dict(model_args or {})
    linked = {"num_classes": num_classes, "in_chans": in_chans,
              "img_size": tuple(img_size) if isinstance(img_size, (list, tuple)) else img_size}
    linked = {k: v for k, v in linked.items() if v is not None}
    for key, value in linked.items():
        if key in args:
            given = tuple(args[key]) if isinstance(args[key], (list, tuple)) else args[key]
            if given != value:
                raise ValueError(f"model_args.{key}={args[key]!r} disagrees with the data module's {key}={value!r}; "
                                 f"remove {key} from model_args: the data module sets it")
    kwargs = {**args, **linked}
    if pretrained is not None or model is None or is_model(model):
        return vit3d.create_model(model, pretrained=pretrained, **kwargs)
    if "." in model:
        module_name, _, cls_name = model.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), cls_name)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"model={model!r} is neither a registered model nor an importable class path "
                             f"({err}); see `vit3d models` for the registered names") from err
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"model={model!r} is not an nn.Module class")
        return build_model(cls, {}, kwargs, name=model)
    return vit3d.create_model(model, **kwargs)  # raises the registry's "unknown model ... did you mean" error


# ---------------------------------------------------------------------- parameter groups
def _blocks(model: nn.Module) -> tuple[str, nn.Module]:
    """The ``blocks`` stack of ``model`` and its qualified name, or a ValueError saying what is needed."""
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] == "blocks" and isinstance(module, (nn.ModuleList, nn.Sequential)):
            return name, module
    raise ValueError(f"{type(model).__name__} has no `blocks` ModuleList/Sequential; layer_decay and "
                     "train_last_blocks need a model built from a stack of blocks (ViT, CCT). Unset them for this model")


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
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    ids, depth = layer_ids(model) if (layer_decay is not None or train_last_blocks is not None) else ({}, 0)
    if train_last_blocks is not None:
        if not 0 <= train_last_blocks <= depth:
            raise ValueError(f"train_last_blocks={train_last_blocks} but the model has {depth} blocks; "
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
        raise ValueError("no trainable parameters left; raise train_last_blocks or unset it")
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


def aggregate_views(ids: Sequence[str], probs: torch.Tensor,
                    labels: torch.Tensor) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Average the probabilities of every view (clip, crop) of the same id, in order of first appearance.

    Returns:
        ``(unique_ids, mean_probs (M, C), labels (M,))``.

    Raises:
        ValueError: when the views of one id carry different labels.
    """
    order: dict[str, int] = {}
    for i in ids:
        order.setdefault(i, len(order))
    index = torch.tensor([order[i] for i in ids], dtype=torch.long)
    sums = torch.zeros(len(order), probs.shape[1], dtype=torch.float64).index_add_(0, index, probs.double())
    counts = torch.bincount(index, minlength=len(order)).double()
    out_labels = torch.full((len(order),), -2, dtype=torch.long)
    out_labels[index] = labels.long()
    mismatch = out_labels[index] != labels.long()
    if mismatch.any():
        bad = ids[int(mismatch.nonzero()[0])]
        raise ValueError(f"views of {bad!r} carry different labels; every view of an id must share its label")
    return list(order), (sums / counts[:, None]).float(), out_labels


def _gather_objects(obj: Any) -> list[Any]:
    """``[obj]`` on one process, every rank's ``obj`` under torch.distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        out: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, obj)
        return out
    return [obj]


# ---------------------------------------------------------------------- the LightningModule
class ClassificationModule(pl.LightningModule):
    """Classification of volumes or clips with any vit3d model.

    Args:
        model: a registered name (``vit3d models``), a dotted class path, or an ``nn.Module`` (Python use only).
        model_args: constructor keywords for ``model`` (``embed_dim``, ``depth``, ``patch_size``, ``drop_path_rate``...).
        pretrained: weights to start from: a 2D checkpoint or a ``vit3d inflate`` safetensors file (with
            ``model: null`` the architecture comes from the file).
        num_classes: classifier outputs; linked from the data module.
        in_chans: input channels; linked from the data module.
        img_size: spatial input size ``(D, H, W)`` or ``(T, H, W)``; linked from the data module.
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
    """

    def __init__(
        self,
        model: str | nn.Module | None = "vit_tiny_patch16_3d",
        *,
        model_args: dict[str, Any] | None = None,
        pretrained: str | None = None,
        num_classes: int | None = None,
        in_chans: int | None = None,
        img_size: int | list[int] | None = None,
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
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "lr_scheduler"] if isinstance(model, nn.Module)
                                  else ["optimizer", "lr_scheduler"])
        if lr_scheduler_interval not in ("step", "epoch"):
            raise ValueError(f"lr_scheduler_interval={lr_scheduler_interval!r} must be 'step' or 'epoch'")
        if class_names is not None and num_classes is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} entries but num_classes={num_classes}")
        if isinstance(model, nn.Module):
            net = model
            given = getattr(net, "num_classes", None)
            if num_classes is not None and given is not None and given != num_classes:
                raise ValueError(f"the model has {given} outputs but the data has {num_classes} classes; "
                                 "call model.reset_classifier(num_classes) or build it with num_classes")
        else:
            net = build_network(model, model_args=model_args, pretrained=pretrained, num_classes=num_classes,
                                in_chans=in_chans, img_size=img_size)
        self.model = net
        self.num_classes = int(num_classes if num_classes is not None else net.num_classes)
        if self.num_classes < 2:
            raise ValueError(f"classification needs at least 2 classes, got num_classes={self.num_classes}")
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        if grad_checkpointing:
            net.set_grad_checkpointing(True)
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
        self._outputs: dict[str, list[dict[str, Any]]] = {}

    # ------------------------------------------------------------------ forward and training
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> logits ``(B, num_classes)``."""
        return self.model(x)

    def _mix_generator(self, batch_idx: int) -> torch.Generator:
        seed = ((self.mix_seed * 1_000_003 + self.current_epoch) * 1_000_003 + batch_idx) * 131 + self.global_rank
        return torch.Generator().manual_seed(seed % 2**63)

    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> torch.Tensor | None:
        if "image" not in batch:  # every sample of the batch was skipped (data.on_error=skip)
            return None
        x, y = batch["image"], batch["label"]
        if (y < 0).any():
            raise ValueError("training batch holds unlabelled samples (label -1); check the label column of the "
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

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, stage: str, batch: dict[str, Any] | None) -> None:
        if "image" not in batch:
            return
        logits = self(batch["image"]).float()
        y = batch["label"]
        labelled = y >= 0
        if labelled.any():
            loss = F.cross_entropy(logits[labelled], y[labelled])
            self.log(f"{stage}/loss", loss, prog_bar=stage == "val", batch_size=int(labelled.sum()), sync_dist=True)
        self._outputs.setdefault(stage, []).append({
            "id": list(batch["id"]), "probs": logits.softmax(-1).cpu(), "label": y.cpu()})

    def _eval_epoch_end(self, stage: str) -> None:
        outputs = self._outputs.pop(stage, [])
        local = {"id": [i for o in outputs for i in o["id"]],
                 "probs": torch.cat([o["probs"] for o in outputs]) if outputs else torch.zeros(0, self.num_classes),
                 "label": torch.cat([o["label"] for o in outputs]) if outputs else torch.zeros(0, dtype=torch.long)}
        parts = _gather_objects(local)
        ids = [i for p in parts for i in p["id"]]
        if not ids or self.trainer.sanity_checking:
            return
        probs, labels = torch.cat([p["probs"] for p in parts]), torch.cat([p["label"] for p in parts])
        # Multi-view testing (and padded distributed samplers): average every view of an id first.
        uids, probs, labels = aggregate_views(ids, probs, labels)
        keep = labels >= 0
        if not keep.any():
            return
        metrics = classification_metrics(probs[keep], labels[keep])
        if len(uids) < len(ids) and stage == "test":
            clip = classification_metrics(torch.cat([p["probs"] for p in parts]), torch.cat([p["label"] for p in parts]))
            metrics["clip_acc"] = clip["acc"]
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
        if "image" not in batch:
            return {"id": [], "probs": torch.zeros(0, self.num_classes), "label": torch.zeros(0, dtype=torch.long)}
        probs = self(batch["image"]).float().softmax(-1).cpu()
        return {"id": list(batch["id"]), "probs": probs, "label": batch["label"].cpu()}

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
                    raise ValueError("the warm-up/cosine schedule needs a finite run: set trainer.max_epochs or "
                                     "trainer.max_steps, or give lr_scheduler.init_args.total_steps")
                scheduler.set_total_steps(int(total))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vit3d"] = {"class_names": self.class_names, "mix_seed": self.mix_seed}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.mix_seed = checkpoint.get("vit3d", {}).get("mix_seed", self.mix_seed)


def trainable_parameters(module: nn.Module) -> Iterable[nn.Parameter]:
    """The parameters that receive gradients (after ``train_last_blocks`` froze the rest)."""
    return (p for p in module.parameters() if p.requires_grad)
