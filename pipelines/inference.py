"""Load a ``vit3d fit`` checkpoint for inference, with exactly the eval preprocessing it was trained with.

::

    bundle = load_for_inference("outputs/demo/checkpoints/best.ckpt")
    sample = bundle.preprocess("scan.nii.gz")          # dict: image (C, D, H, W), label -1, id, view
    probs = bundle.predict_proba(sample["image"][None])  # (1, num_classes)
    bundle.class_names[int(probs.argmax())]

A checkpoint holds its whole run config (what ``LightningCLI`` parsed, with the network stored as its architecture:
no pretrained file is needed): :func:`run_config` turns it into the ``model`` / ``data`` config that ``vit3d
validate|test|predict --ckpt_path`` use as defaults, and :func:`load_for_inference` instantiates it through the same
typed parser. The file is read with ``torch.load(weights_only=True)``: no code from it runs.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.cli import instantiate_module
from torch import nn

from vit3d.errors import CheckpointError, MissingInputError

from .datamodules import _ClassificationDataModule
from .module import ClassificationModule

__all__ = ["InferenceBundle", "load_for_inference", "read_checkpoint", "run_config"]

# Where the data module reads its training files: not needed (and often absent) where inference runs.
_DATA_PATHS = ("data", "val_data", "test_data", "predict_data")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The dict stored in a ``vit3d fit`` checkpoint, read without running code from it.

    Raises:
        MissingInputError: no such file.
        CheckpointError: unreadable, refused (it holds Python objects other than tensors and plain data), or not
            written by ``vit3d fit``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError("checkpoint not found", file=path,
                                fix="pass a .ckpt written by `vit3d fit` (<default_root_dir>/checkpoints/best.ckpt)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError("refused: the file holds Python objects that only an unsafe load would run",
                              file=path, fix="use a checkpoint written by `vit3d fit`; vit3d never loads such "
                                             "files unsafely") from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"cannot read the checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else 'truncated'})", file=path,
                              fix="the file is truncated or not a PyTorch checkpoint; use another one") from err
    missing = [k for k in ("state_dict", "hyper_parameters", "datamodule_hyper_parameters")
               if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"not a `vit3d fit` checkpoint: it lacks {missing}", file=path,
                              fix="a bare weights file loads with vit3d.load_model or "
                                  "vit3d.create_model(name, pretrained=...)")
    return ckpt


def run_config(ckpt_path: str | Path, *, stage: Literal["validate", "test", "predict"] = "predict",
               ckpt: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``{"model": ..., "data": ...}`` config a checkpoint was trained with, ready for the CLI parser.

    Args:
        ckpt_path: a ``.ckpt`` written by ``vit3d fit``.
        stage: ``predict`` drops the training data paths (the files to predict are given instead);
            ``validate``/``test`` keep them.
        ckpt: the already-read checkpoint, if at hand.
    """
    ckpt = read_checkpoint(ckpt_path) if ckpt is None else ckpt
    model = {k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}
    net = model.get("net")
    if isinstance(net, dict):
        # The data module links these into the network again; a value here would be a second source.
        init = {k: v for k, v in (net.get("init_args") or {}).items()
                if k not in ("num_classes", "in_chans", "img_size")}
        model["net"] = {**net, "init_args": init}
    data_hp = dict(ckpt["datamodule_hyper_parameters"])
    class_path = data_hp.pop("_class_path", None)
    data_hp = {k: v for k, v in data_hp.items() if not k.startswith("_")}
    if stage == "predict":
        for key in _DATA_PATHS:
            data_hp.pop(key, None)
    if model.get("class_names"):
        data_hp["classes"] = list(model["class_names"])
    config: dict[str, Any] = {"model": model}
    if class_path is not None:
        config["data"] = {"class_path": class_path, "init_args": data_hp}
    return config


@dataclass
class InferenceBundle:
    """What inference needs from a checkpoint.

    Attributes:
        model: the network in eval mode (a plain ``nn.Module``: ``(B, C, *spatial)`` -> logits).
        class_names: class names in logit order.
        kind: ``"volume"`` or ``"clip"``.
        preprocess: ``path -> sample dict`` with the training run's eval preprocessing: ``image`` ``(C, *spatial)``
            (a MONAI MetaTensor for volumes, so maps can be inverted to the file's grid), ``label`` -1, ``id``,
            ``view``.
        datamodule: the rebuilt data module (``datamodule.dataset_kwargs`` are the preprocessing keywords).
        module: the rebuilt :class:`ClassificationModule` holding ``model``.
        config: the run config the checkpoint holds (:func:`run_config`).
    """

    model: nn.Module
    class_names: list[str]
    kind: Literal["volume", "clip"]
    preprocess: Callable[[str | Path], dict[str, Any]]
    datamodule: _ClassificationDataModule
    module: ClassificationModule
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def img_size(self) -> list[int]:
        return list(self.datamodule.img_size)

    @property
    def in_chans(self) -> int:
        return int(self.datamodule.in_chans)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, num_classes)`` of a preprocessed batch ``(B, C, *spatial)``."""
        device = next(self.model.parameters()).device
        x = x.as_tensor() if hasattr(x, "as_tensor") else x  # MONAI MetaTensor -> plain tensor
        return self.model(x.to(device)).float().softmax(-1).cpu()

    def predict_file(self, path: str | Path) -> dict[str, float]:
        """``{class name: probability}`` for one file."""
        probs = self.predict_proba(self.preprocess(path)["image"][None])[0]
        return dict(zip(self.class_names, probs.tolist(), strict=True))


def load_for_inference(ckpt_path: str | Path, *, map_location: str | torch.device = "cpu") -> InferenceBundle:
    """Rebuild the network and its eval preprocessing from a ``vit3d fit`` checkpoint alone.

    Args:
        ckpt_path: a ``.ckpt`` written by ``vit3d fit`` (``best.ckpt``/``last.ckpt``).
        map_location: device for the weights.

    Raises:
        MissingInputError: no such file.
        CheckpointError: the file is not a readable ``vit3d fit`` checkpoint (the message says why).
    """
    ckpt = read_checkpoint(ckpt_path)
    config = run_config(ckpt_path, stage="predict", ckpt=ckpt)
    data_cfg = config["data"]
    datamodule = instantiate_module(_ClassificationDataModule, {"_class_path": data_cfg["class_path"],
                                                                **data_cfg["init_args"]})
    model_cfg = dict(config["model"])
    net = dict(model_cfg["net"])
    net["init_args"] = {**net["init_args"], "num_classes": datamodule.num_classes,
                        "in_chans": datamodule.in_chans, "img_size": datamodule.img_size}
    model_cfg.update(net=net, lr_scheduler=None)
    module = instantiate_module(ClassificationModule, model_cfg)
    module.load_state_dict(ckpt["state_dict"], strict=True)
    module.to(map_location).eval()
    class_names = list(module.class_names)
    overrides = datamodule.split_overrides("predict")
    if datamodule.kind == "volume":
        dataset = datamodule.dataset([], split=None, classes=class_names, train=False, **overrides)

        def preprocess(file: str | Path) -> dict[str, Any]:
            return dataset.load_one(file)
    else:
        def preprocess(file: str | Path) -> dict[str, Any]:
            rows = datamodule.predict_rows([str(file)])
            return datamodule.dataset(rows, split=None, classes=class_names, train=False, **overrides)[0]

    return InferenceBundle(model=module.model, class_names=class_names, kind=datamodule.kind,  # type: ignore
                           preprocess=preprocess, datamodule=datamodule, module=module, config=config)
