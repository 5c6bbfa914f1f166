"""ClassificationModule pieces: model building, parameter groups, freezing, metrics and view averaging."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipelines.module import (
    ClassificationModule,
    aggregate_views,
    build_network,
    classification_metrics,
    layer_ids,
    param_groups,
)

TINY = {"embed_dim": 32, "depth": 3, "num_heads": 2, "patch_size": (4, 8, 8)}


def _module(**kwargs) -> ClassificationModule:
    return ClassificationModule("vit_tiny_patch16_3d", model_args=TINY, num_classes=3, in_chans=1,
                                img_size=[8, 16, 16], **kwargs)


def test_build_network_from_name_and_class_path() -> None:
    a = build_network("vit_tiny_patch16_3d", model_args=TINY, num_classes=3, in_chans=2, img_size=[8, 16, 16])
    b = build_network("vit3d.models.vit.VisionTransformer", model_args=TINY, num_classes=3, in_chans=2,
                      img_size=[8, 16, 16])
    x = torch.randn(2, 2, 8, 16, 16)
    assert a(x).shape == b(x).shape == (2, 3)
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())


def test_build_network_errors_say_what_to_change() -> None:
    with pytest.raises(ValueError, match="did you mean"):
        build_network("vit_tiny_patch16_3", num_classes=2)
    with pytest.raises(ValueError, match="emb_dim"):
        build_network("vit_tiny_patch16_3d", model_args={"emb_dim": 32})
    with pytest.raises(ValueError, match="remove num_classes from model_args"):
        build_network("vit_tiny_patch16_3d", model_args={**TINY, "num_classes": 5}, num_classes=2)
    with pytest.raises(ValueError, match="not divisible"):
        build_network("vit_tiny_patch16_3d", model_args=TINY, img_size=[8, 16, 20])
    with pytest.raises(ValueError, match="importable class path"):
        build_network("no.such.Model")


def test_layer_ids_cover_embedding_blocks_and_head() -> None:
    net = build_network("vit_tiny_patch16_3d", model_args=TINY, num_classes=3, img_size=[8, 16, 16])
    ids, depth = layer_ids(net)
    assert depth == 3
    assert ids["cls_token"] == ids["pos_embed"] == ids["patch_embed.proj.weight"] == 0
    assert ids["blocks.0.attn.qkv.weight"] == 1 and ids["blocks.2.mlp.fc2.bias"] == 3
    assert ids["head.weight"] == ids["norm.weight"] == 4


def test_layer_decay_lr_scales_and_no_decay_groups() -> None:
    net = build_network("vit_tiny_patch16_3d", model_args=TINY, num_classes=3, img_size=[8, 16, 16])
    groups = param_groups(net, layer_decay=0.5)
    ids, depth = layer_ids(net)
    by_param = {id(p): g for g in groups for p in g["params"]}
    for name, p in net.named_parameters():
        g = by_param[id(p)]
        assert g["lr_scale"] == pytest.approx(0.5 ** (depth + 1 - ids[name]))
        assert (g.get("weight_decay") == 0.0) == (p.ndim <= 1 or name in ("cls_token", "pos_embed"))
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))


def test_configure_optimizers_applies_scales() -> None:
    m = _module(layer_decay=0.5, optimizer=lambda params: torch.optim.AdamW(params, lr=1e-2), lr_scheduler=None)
    opt = m.configure_optimizers()
    lrs = {round(g["lr"] / 1e-2, 8) for g in opt.param_groups}
    assert lrs == {round(0.5 ** k, 8) for k in range(0, 5)}


@pytest.mark.parametrize("n", [0, 1, 3])
def test_train_last_blocks_freezes_the_rest(n: int) -> None:
    m = _module(train_last_blocks=n)
    ids, depth = layer_ids(m.model)
    for name, p in m.model.named_parameters():
        assert p.requires_grad == (ids[name] > depth - n), name
    x, y = torch.randn(2, 1, 8, 16, 16), torch.tensor([0, 2])
    nn.functional.cross_entropy(m(x), y).backward()
    for name, p in m.model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name


def test_blockless_model_errors_clearly() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="has no `blocks`"):
        param_groups(net, layer_decay=0.7)
    with pytest.raises(ValueError, match="choose 0..3"):
        _module(train_last_blocks=4)


def test_metrics_match_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for c in (2, 4):
        labels = np.concatenate([np.arange(c), rng.integers(0, c, 60)])
        logits = rng.normal(size=(len(labels), c)) + 1.5 * np.eye(c)[labels]
        probs = torch.tensor(logits).softmax(-1).float()
        got = classification_metrics(probs, torch.tensor(labels))
        pred = probs.argmax(-1).numpy()
        assert float(got["acc"]) == pytest.approx(metrics.accuracy_score(labels, pred), abs=1e-6)
        assert float(got["bal_acc"]) == pytest.approx(metrics.balanced_accuracy_score(labels, pred), abs=1e-6)
        assert float(got["f1"]) == pytest.approx(metrics.f1_score(labels, pred, average="macro"), abs=1e-6)
        ref = (metrics.roc_auc_score(labels, probs[:, 1].numpy()) if c == 2
               else metrics.roc_auc_score(labels, probs.numpy(), multi_class="ovr", average="macro"))
        assert float(got["auroc"]) == pytest.approx(ref, abs=1e-5)


def test_aggregate_views_averages_per_id() -> None:
    ids = ["a", "b", "a", "c", "b", "a"]
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.5, 0.5], [0.4, 0.6], [0.6, 0.4]])
    labels = torch.tensor([0, 1, 0, -1, 1, 0])
    uids, mean, lab = aggregate_views(ids, probs, labels)
    assert uids == ["a", "b", "c"]
    assert torch.allclose(mean[0], probs[[0, 2, 5]].mean(0)) and torch.allclose(mean[1], probs[[1, 4]].mean(0))
    assert lab.tolist() == [0, 1, -1]
    with pytest.raises(ValueError, match="different labels"):
        aggregate_views(["a", "a"], probs[:2], torch.tensor([0, 1]))


def test_training_step_with_mixup_is_deterministic_per_batch() -> None:
    m = _module(mixup_alpha=0.8, cutmix_alpha=1.0, mix_seed=3)
    batch = {"image": torch.randn(4, 1, 8, 16, 16), "label": torch.tensor([0, 1, 2, 0])}
    m.log = lambda *a, **k: None  # no trainer attached
    a, b = m.training_step(batch, 5), m.training_step(batch, 5)
    assert torch.equal(a, b) and a.requires_grad
