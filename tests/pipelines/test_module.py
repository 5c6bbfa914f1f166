"""ClassificationModule pieces: the injected network, parameter groups, freezing, metrics and per-id labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipelines.module import (
    ClassificationModule,
    classification_metrics,
    labels_per_id,
    layer_ids,
    param_groups,
)
from pipelines.networks import preset_class
from vit3d.errors import ConfigError

TINY = {"embed_dim": 32, "depth": 3, "num_heads": 2, "patch_size": (4, 8, 8)}


def build_network(**kwargs) -> nn.Module:
    return preset_class("vit_tiny_patch16_3d")(**TINY, img_size=[8, 16, 16], **kwargs)


def _module(**kwargs) -> ClassificationModule:
    return ClassificationModule(build_network(num_classes=3, in_chans=1), **kwargs)


def test_module_takes_any_network_and_checks_it_against_the_classes() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(8, 3))
    m = ClassificationModule(net, class_names=["a", "b", "c"])
    assert m.num_classes == 3 and m(torch.randn(2, 8)).shape == (2, 3)
    with pytest.raises(ConfigError, match="no num_classes attribute"):
        ClassificationModule(nn.Linear(8, 3))
    with pytest.raises(ConfigError, match="3 outputs but there are 2 classes"):
        ClassificationModule(build_network(num_classes=3), class_names=["a", "b"])
    with pytest.raises(ConfigError, match="at least 2 classes"):
        ClassificationModule(build_network(num_classes=1))


def test_checkpoint_hparams_hold_a_rebuildable_network() -> None:
    m = _module()
    net = m.hparams["net"]
    assert net["class_path"] == "pipelines.networks.vit_tiny_patch16_3d"
    assert net["init_args"]["embed_dim"] == 32 and net["init_args"]["patch_size"] == [4, 8, 8]
    rebuilt = preset_class("vit_tiny_patch16_3d")(**net["init_args"])
    rebuilt.load_state_dict(m.model.state_dict(), strict=True)
    x = torch.randn(1, 1, 8, 16, 16)
    assert torch.equal(rebuilt.eval()(x), m.model.eval()(x))


def test_backward_reaches_every_parameter() -> None:
    m = _module()
    batch = {"image": torch.randn(4, 1, 8, 16, 16), "label": torch.tensor([0, 1, 2, 0]), "failed": []}
    m.log = lambda *a, **k: None  # no trainer attached
    m.training_step(batch, 0).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_layer_ids_cover_embedding_blocks_and_head() -> None:
    net = build_network(num_classes=3)
    ids, depth = layer_ids(net)
    assert depth == 3
    assert ids["cls_token"] == ids["pos_embed"] == ids["patch_embed.proj.weight"] == 0
    assert ids["blocks.0.attn.qkv.weight"] == 1 and ids["blocks.2.mlp.fc2.bias"] == 3
    assert ids["head.weight"] == ids["norm.weight"] == 4


def test_layer_decay_lr_scales_and_no_decay_groups() -> None:
    net = build_network(num_classes=3)
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


def test_labels_per_id_follow_the_averaged_views() -> None:
    from vit3d.data import average_views

    ids = ["a", "b", "a", "c", "b", "a"]
    logits = torch.randn(6, 2)
    labels = torch.tensor([0, 1, 0, -1, 1, 0])
    uids, mean = average_views(logits, ids)
    assert uids == ["a", "b", "c"]
    assert torch.allclose(mean[0], logits[[0, 2, 5]].softmax(-1).mean(0))
    assert labels_per_id(ids, labels, uids).tolist() == [0, 1, -1]
    with pytest.raises(ValueError, match="carry labels 0 and 1"):
        labels_per_id(["a", "a"], torch.tensor([0, 1]), ["a"])


def test_skipped_samples_are_counted_and_an_all_failed_batch_is_skipped() -> None:
    m = _module()
    m.log = lambda *a, **k: None
    assert m.training_step({"failed": ["x", "y"]}, 0) is None
    assert m.training_step(None, 1) is None
    assert m.skipped == {"train": 2}


def test_training_step_with_mixup_is_deterministic_per_batch() -> None:
    m = _module(mixup_alpha=0.8, cutmix_alpha=1.0, mix_seed=3)
    batch = {"image": torch.randn(4, 1, 8, 16, 16), "label": torch.tensor([0, 1, 2, 0]), "failed": []}
    m.log = lambda *a, **k: None  # no trainer attached
    a, b = m.training_step(batch, 5), m.training_step(batch, 5)
    assert torch.equal(a, b) and a.requires_grad


def test_sliding_window_evaluation_matches_the_library_aggregate() -> None:
    """With sliding windows on, an input larger than the network is classified by vit3d.inference's aggregate of
    its windows; an input of the network's size is one plain forward pass."""
    from pipelines.networks import preset_class
    from vit3d.inference import sliding_window_logits

    net = preset_class("vit_tiny_patch16_3d")(patch_size=[4, 8, 8], embed_dim=24, depth=1, num_heads=2,
                                              num_classes=3, in_chans=1, img_size=[8, 16, 16])
    module = ClassificationModule(net, sliding_window_overlap=0.5, sliding_window_aggregate="max").eval()
    big = torch.randn(2, 1, 12, 24, 40)
    with torch.no_grad():
        got = module.eval_logits(big)
        want = sliding_window_logits(net, big, overlap=0.5, aggregate="max").logits
        assert torch.equal(got, want) and got.shape == (2, 3)
        small = torch.randn(2, 1, 8, 16, 16)
        assert torch.equal(module.eval_logits(small), net(small))
    with pytest.raises(ValueError, match="sliding_window_overlap=1.0"):
        ClassificationModule(net, sliding_window_overlap=1.0)


def test_compile_keeps_the_checkpoint_keys_and_happens_once() -> None:
    """``compile: true`` compiles the network in place (``nn.Module.compile``): the state dict, hence every
    checkpoint, keeps its keys, and a second ``configure_model`` (validate after fit) does not compile again."""
    m = _module(compile=True)
    keys = list(m.state_dict())
    m.configure_model()
    compiled = m.model._compiled_call_impl
    assert compiled is not None and list(m.state_dict()) == keys
    m.configure_model()
    assert m.model._compiled_call_impl is compiled
    plain = _module()
    plain.configure_model()
    assert plain.model._compiled_call_impl is None


@pytest.mark.slow
def test_a_compiled_network_trains_like_the_eager_one() -> None:
    """The compiled forward and backward equal eager ones (inductor on CPU; slow: it compiles)."""
    torch.manual_seed(0)
    eager, compiled = _module(), _module(compile=True)
    compiled.load_state_dict(eager.state_dict())
    compiled.configure_model()
    x = torch.randn(2, 1, 8, 16, 16)
    outs = []
    for m in (eager, compiled):
        out = m(x)
        out.sum().backward()
        outs.append((out, [p.grad for p in m.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-4, atol=1e-5)
    for a, b in zip(outs[0][1], outs[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_compile_without_a_cpu_compiler_is_one_clear_error(monkeypatch) -> None:
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr("shutil.which", lambda name: None)
    m = _module(compile=True)
    with pytest.raises(ConfigError, match="no C.. compiler was found.*set model.compile false"):
        m.configure_model()
    assert m.model._compiled_call_impl is None
