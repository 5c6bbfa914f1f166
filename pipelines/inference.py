"""Load a ``vit3d fit`` checkpoint for inference, with exactly the eval preprocessing it was trained with.

::

    bundle = load_for_inference("outputs/demo/checkpoints/best.ckpt")
    sample = bundle.preprocess("scan.nii.gz")          # dict: image (C, D, H, W), label -1, id, view
    probs = bundle.predict_proba(sample["image"][None])  # (1, num_classes)
    bundle.class_names[int(probs.argmax())]

The checkpoint is read with ``torch.load(weights_only=True)``: no code from the file runs. Architecture and
preprocessing come from the hyperparameters the module and data module saved (``save_hyperparameters``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .datamodules import VideoDataModule, VolumeDataModule, _ClassificationDataModule
from .module import ClassificationModule

__all__ = ["InferenceBundle", "load_for_inference"]

_DATAMODULES: dict[str, type[_ClassificationDataModule]] = {
    "pipelines.datamodules.VolumeDataModule": VolumeDataModule,
    "pipelines.datamodules.VideoDataModule": VideoDataModule,
}
# Keywords of ClassificationModule that define the network (the rest only matter for training).
_ARCH_KEYS = ("model", "model_args", "pretrained", "num_classes", "in_chans", "img_size", "class_names")


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
        datamodule: the rebuilt data module (its ``dataset_kwargs(train=False)`` are the preprocessing keywords).
        module: the rebuilt :class:`ClassificationModule` holding ``model``.
        hparams: the module's saved hyperparameters.
        data_hparams: the data module's saved hyperparameters.
    """

    model: nn.Module
    class_names: list[str]
    kind: Literal["volume", "clip"]
    preprocess: Callable[[str | Path], dict[str, Any]]
    datamodule: _ClassificationDataModule
    module: ClassificationModule
    hparams: dict[str, Any] = field(default_factory=dict)
    data_hparams: dict[str, Any] = field(default_factory=dict)

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


def _datamodule_class(hparams: dict[str, Any]) -> type[_ClassificationDataModule]:
    path = hparams.get("_class_path")
    if path in _DATAMODULES:
        return _DATAMODULES[path]
    if path is None:  # saved outside LightningCLI: tell the kinds apart by their keywords
        return VideoDataModule if "frames" in hparams else VolumeDataModule
    raise ValueError(f"the checkpoint's data module {path!r} is not one of {sorted(_DATAMODULES)}; "
                     "load_for_inference rebuilds only vit3d's data modules")


def _keep_params(cls: type, hparams: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in hparams.items() if k in params and k != "self"}


def load_for_inference(ckpt_path: str | Path, *, map_location: str | torch.device = "cpu") -> InferenceBundle:
    """Rebuild the model and its eval preprocessing from a ``vit3d fit`` checkpoint.

    Args:
        ckpt_path: a ``.ckpt`` written by ``vit3d fit`` (``best.ckpt``/``last.ckpt``).
        map_location: device for the weights.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a vit3d Lightning checkpoint (the message says what is missing).
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass a .ckpt written by `vit3d fit` "
                                "(e.g. <default_root_dir>/checkpoints/best.ckpt)")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    missing = [k for k in ("state_dict", "hyper_parameters", "datamodule_hyper_parameters") if k not in ckpt]
    if missing:
        raise ValueError(f"{path} lacks {missing}; it is not a checkpoint written by `vit3d fit` (a bare weights "
                         "file loads with vit3d.load_model or vit3d.create_model(pretrained=...))")
    hparams, data_hparams = dict(ckpt["hyper_parameters"]), dict(ckpt["datamodule_hyper_parameters"])
    arch = {k: hparams[k] for k in _ARCH_KEYS if k in hparams}
    if arch.get("model") is not None:
        arch["pretrained"] = None  # the checkpoint holds every weight; the start point is not needed
    module = ClassificationModule(**arch, lr_scheduler=None)
    module.load_state_dict(ckpt["state_dict"], strict=True)
    module.eval()
    class_names = list(module.class_names)

    dm_cls = _datamodule_class(data_hparams)
    dm_args = _keep_params(dm_cls, data_hparams)
    for key in ("data", "val_data", "test_data", "predict_data"):
        dm_args.pop(key, None)  # the training files need not exist where inference runs
    dm_args.update(classes=class_names, validate_files=False)
    datamodule = dm_cls(**dm_args)

    if isinstance(datamodule, VolumeDataModule):
        from vit3d.data.volume import VolumeDataset

        dataset = VolumeDataset([], **datamodule.dataset_kwargs(train=False))

        def preprocess(file: str | Path) -> dict[str, Any]:
            return dataset.load_one(file)
    else:
        def preprocess(file: str | Path) -> dict[str, Any]:
            sample = datamodule.make_dataset([{"path": str(file)}], None, False, stage_split="val",
                                             classes=class_names)[0]
            if sample is None:
                raise ValueError(f"could not read {file}; see the log for the reason")
            return sample

    return InferenceBundle(model=module.model, class_names=class_names, kind=datamodule.kind, preprocess=preprocess,
                           datamodule=datamodule, module=module, hparams=hparams, data_hparams=data_hparams)
