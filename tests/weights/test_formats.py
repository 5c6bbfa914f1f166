"""Each 2D checkpoint layout loads into a model whose outputs equal the source library's own forward pass.

Oracles: HF transformers and MONAI run here; timm and torchvision are used where they import (skipped
otherwise), and torchvision's layout is also checked against a forward pass built on ``nn.MultiheadAttention``
exactly as torchvision's encoder block uses it. Google's npz layout is checked against a forward pass written
directly on the jax arrays (einsum over ``[D, heads, head_dim]`` kernels).
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import vit3d
from vit3d.weights import detect_format, load_2d

TOL = 1e-4


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


# ---------------------------------------------------------------------- HF transformers
HF_CASES = [  # (hidden, layers, heads, image, patch, eps, qkv_bias)
    (32, 1, 2, 32, 8, 1e-12, True),
    (48, 2, 3, 24, 4, 1e-6, False),
    (64, 2, 4, 32, 16, 1e-5, True),
]


@pytest.mark.parametrize("hidden,layers,heads,image,patch,eps,qkv_bias", HF_CASES)
@pytest.mark.parametrize("classifier", [True, False])
def test_hf_matches_transformers(tmp_path, hidden, layers, heads, image, patch, eps, qkv_bias, classifier):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                 intermediate_size=hidden * 3, image_size=image, patch_size=patch,
                                 layer_norm_eps=eps, qkv_bias=qkv_bias, num_labels=7)
    cls = transformers.ViTForImageClassification if classifier else transformers.ViTModel
    src = cls(cfg).eval()
    with torch.no_grad():  # random, non-trivial class token and positions
        emb = (src.vit if classifier else src).embeddings
        emb.cls_token.normal_()
        emb.position_embeddings.normal_(std=0.5)
    src.save_pretrained(tmp_path)
    model = vit3d.create_model(None, pretrained=tmp_path).eval()
    assert model.blocks[0].norm1.eps == eps and model.blocks[0].attn.num_heads == heads
    x = torch.randn(2, 3, image, image)
    with torch.no_grad():
        if classifier:
            assert _max_diff(model(x), src(pixel_values=x).logits) <= TOL
        else:
            ref = src(pixel_values=x).last_hidden_state
            assert _max_diff(model.forward_features(x), ref) <= TOL
            assert any(k.startswith("pooler.") for k, _, _ in model.load_report.dropped)


def test_hf_into_named_preset(tmp_path):
    """``create_model(name, pretrained=HF dir)``: the preset fixes the architecture, eps comes from the file."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(hidden_size=192, num_hidden_layers=1, num_attention_heads=3, intermediate_size=768,
                                 image_size=32, patch_size=16, num_labels=4)
    src = transformers.ViTForImageClassification(cfg).eval()
    src.save_pretrained(tmp_path)
    model = vit3d.create_model("vit_tiny_patch16_2d", pretrained=tmp_path, img_size=32, depth=1, num_classes=4).eval()
    assert model.blocks[0].norm1.eps == 1e-12
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert _max_diff(model(x), src(pixel_values=x).logits) <= TOL


def test_hf_pytorch_model_bin(tmp_path):
    """A directory holding config.json and pytorch_model.bin (legacy key names) loads like the safetensors one."""
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file

    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                 image_size=16, patch_size=4, num_labels=3)
    src = transformers.ViTForImageClassification(cfg).eval()
    src.save_pretrained(tmp_path / "st")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    torch.save(load_file(tmp_path / "st" / "model.safetensors"), bin_dir / "pytorch_model.bin")
    (bin_dir / "config.json").write_text((tmp_path / "st" / "config.json").read_text())
    ckpt = load_2d(bin_dir)
    assert ckpt.report.format == "hf" and ckpt.config["num_heads"] == 4
    model = vit3d.create_model(None, pretrained=bin_dir).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert _max_diff(model(x), src(pixel_values=x).logits) <= TOL


def test_hf_in_memory_state_dict_names(tmp_path):
    """transformers >= 5 names modules differently in memory (q_proj, o_proj, mlp.fc1); those load too."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                 image_size=16, patch_size=8, num_labels=3)
    src = transformers.ViTForImageClassification(cfg).eval()
    torch.save(src.state_dict(), tmp_path / "vit.pth")
    model = vit3d.create_model(None, pretrained=tmp_path / "vit.pth", num_heads=2, norm_eps=1e-12).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert _max_diff(model(x), src(pixel_values=x).logits) <= TOL


# ---------------------------------------------------------------------- MONAI
MONAI_CASES = [  # (hidden, layers, heads, image, patch, qkv_bias, classification, post_activation)
    (32, 1, 2, 32, 8, False, True, "Tanh"),
    (48, 2, 3, 24, 4, True, True, None),
    (64, 2, 1, 32, 16, False, False, None),
]


@pytest.mark.parametrize("hidden,layers,heads,image,patch,qkv_bias,classification,post", MONAI_CASES)
def test_monai_matches_monai(tmp_path, hidden, layers, heads, image, patch, qkv_bias, classification, post):
    nets = pytest.importorskip("monai.networks.nets")
    src = nets.ViT(in_channels=2, img_size=(image, image), patch_size=(patch, patch), hidden_size=hidden,
                   mlp_dim=hidden * 2, num_layers=layers, num_heads=heads, spatial_dims=2, qkv_bias=qkv_bias,
                   classification=classification, num_classes=5, post_activation=post).eval()
    if classification:
        with torch.no_grad():
            src.cls_token.normal_()
    torch.save(src.state_dict(), tmp_path / "monai_vit.pth")
    model = vit3d.create_model(None, pretrained=tmp_path / "monai_vit.pth", num_heads=heads).eval()
    assert model.load_report.format == "monai" and model.blocks[0].norm1.eps == 1e-5
    x = torch.randn(2, 2, image, image)
    with torch.no_grad():
        ref = src(x)[0]
        if not classification:
            assert _max_diff(model.forward_features(x), ref) <= TOL
        elif post == "Tanh":
            assert _max_diff(torch.tanh(model(x)), ref) <= TOL
            assert any("Tanh" in n for n in model.load_report.notes)
        else:
            assert _max_diff(model(x), ref) <= TOL


def test_monai_3d_checkpoint_loads_as_3d(tmp_path):
    """A MONAI 3D ViT is not 2D, but its layout is the same: it loads straight into a 3D model."""
    nets = pytest.importorskip("monai.networks.nets")
    src = nets.ViT(in_channels=1, img_size=(16, 16, 16), patch_size=(8, 8, 8), hidden_size=32, mlp_dim=64,
                   num_layers=1, num_heads=2, spatial_dims=3, classification=True, num_classes=3,
                   post_activation=None).eval()
    save_file(src.state_dict(), tmp_path / "monai3d.safetensors")
    model = vit3d.create_model(None, pretrained=tmp_path / "monai3d.safetensors", num_heads=2).eval()
    assert model.spatial_dims == 3
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert _max_diff(model(x), src(x)[0]) <= TOL


def test_monai_perceptron_is_refused_with_fix(tmp_path):
    nets = pytest.importorskip("monai.networks.nets")
    src = nets.ViT(in_channels=1, img_size=(16, 16), patch_size=(8, 8), hidden_size=32, mlp_dim=64, num_layers=1,
                   num_heads=2, spatial_dims=2, proj_type="perceptron")
    torch.save(src.state_dict(), tmp_path / "p.pth")
    with pytest.raises(ValueError, match="perceptron"):
        load_2d(tmp_path / "p.pth")


# ---------------------------------------------------------------------- torchvision layout
def _to_torchvision(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Canonical -> torchvision names (the inverse of the mapping under test, written independently)."""
    out = {"class_token": state["cls_token"], "conv_proj.weight": state["patch_embed.proj.weight"],
           "conv_proj.bias": state["patch_embed.proj.bias"], "encoder.pos_embedding": state["pos_embed"],
           "encoder.ln.weight": state["norm.weight"], "encoder.ln.bias": state["norm.bias"],
           "heads.head.weight": state["head.weight"], "heads.head.bias": state["head.bias"]}
    for i in range(depth):
        p, q = f"encoder.layers.encoder_layer_{i}.", f"blocks.{i}."
        for a, b in (("ln_1", "norm1"), ("ln_2", "norm2"), ("self_attention.out_proj", "attn.proj"),
                     ("mlp.0", "mlp.fc1"), ("mlp.3", "mlp.fc2")):
            out[f"{p}{a}.weight"], out[f"{p}{a}.bias"] = state[f"{q}{b}.weight"], state[f"{q}{b}.bias"]
        out[f"{p}self_attention.in_proj_weight"] = state[f"{q}attn.qkv.weight"]
        out[f"{p}self_attention.in_proj_bias"] = state[f"{q}attn.qkv.bias"]
    return out


def _torchvision_forward(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int, depth: int) -> torch.Tensor:
    """torchvision's VisionTransformer.forward, on its own state dict, using nn.MultiheadAttention."""
    dim = sd["conv_proj.weight"].shape[0]
    t = F.conv2d(x, sd["conv_proj.weight"], sd["conv_proj.bias"], stride=sd["conv_proj.weight"].shape[-1])
    t = t.flatten(2).transpose(1, 2)
    t = torch.cat([sd["class_token"].expand(x.shape[0], -1, -1), t], dim=1) + sd["encoder.pos_embedding"]
    for i in range(depth):
        p = f"encoder.layers.encoder_layer_{i}."
        mha = torch.nn.MultiheadAttention(dim, heads, batch_first=True)
        mha.load_state_dict({k[len(p) + 15:]: v for k, v in sd.items() if k.startswith(p + "self_attention.")})
        h = F.layer_norm(t, (dim,), sd[p + "ln_1.weight"], sd[p + "ln_1.bias"], eps=1e-6)
        t = t + mha(h, h, h, need_weights=False)[0]
        h = F.layer_norm(t, (dim,), sd[p + "ln_2.weight"], sd[p + "ln_2.bias"], eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, sd[p + "mlp.0.weight"], sd[p + "mlp.0.bias"])), sd[p + "mlp.3.weight"],
                     sd[p + "mlp.3.bias"])
        t = t + h
    t = F.layer_norm(t, (dim,), sd["encoder.ln.weight"], sd["encoder.ln.bias"], eps=1e-6)
    return F.linear(t[:, 0], sd["heads.head.weight"], sd["heads.head.bias"])


@pytest.mark.parametrize("dim,depth,heads,patch", [(32, 1, 2, 8), (48, 2, 3, 4)])
def test_torchvision_layout_matches_reference(tmp_path, dim, depth, heads, patch):
    ref = vit3d.VisionTransformer(32, patch, num_classes=6, embed_dim=dim, depth=depth, num_heads=heads)
    sd = _to_torchvision({k: v.detach() for k, v in ref.state_dict().items()}, depth)
    torch.save(sd, tmp_path / "tv.pth")
    assert detect_format(list(sd)) == "torchvision"
    model = vit3d.create_model(None, pretrained=tmp_path / "tv.pth", num_heads=heads).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert _max_diff(model(x), _torchvision_forward(sd, x, heads, depth)) <= TOL


def test_torchvision_matches_torchvision(tmp_path):
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed")
    try:
        from torchvision.models.vision_transformer import VisionTransformer as TVViT
    except Exception as err:  # noqa: BLE001 - a CPU-less build fails at import in many ways
        pytest.skip(f"torchvision does not import here: {err}")
    src = TVViT(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                num_classes=5).eval()
    with torch.no_grad():
        src.heads.head.weight.normal_()
    torch.save(src.state_dict(), tmp_path / "tv.pth")
    model = vit3d.create_model(None, pretrained=tmp_path / "tv.pth", num_heads=2).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert _max_diff(model(x), src(x)) <= TOL


# ---------------------------------------------------------------------- timm
@pytest.mark.parametrize("kwargs", [dict(), dict(qkv_bias=False, global_pool="avg", class_token=False)])
def test_timm_matches_timm(tmp_path, kwargs):
    try:
        import timm
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"timm does not import here: {err}")
    src = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                            num_classes=4, **kwargs).eval()
    save_file(src.state_dict(), tmp_path / "timm.safetensors")
    model = vit3d.create_model(None, pretrained=tmp_path / "timm.safetensors").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert _max_diff(model(x), src(x)) <= TOL


@pytest.mark.parametrize("suffix", [".pth", ".bin", ".safetensors"])
def test_timm_layout_round_trip(tmp_path, suffix):
    """A timm-named state dict in each container rebuilds a model with identical outputs (same code path as
    timm; the equality with timm itself is checked above where timm imports)."""
    src = vit3d.VisionTransformer(32, 8, num_classes=3, embed_dim=64, depth=2, num_heads=1, global_pool="avg",
                                  norm_eps=1e-5).eval()
    path = tmp_path / f"timm{suffix}"
    save_file(src.state_dict(), path) if suffix == ".safetensors" else torch.save(src.state_dict(), path)
    model = vit3d.create_model(None, pretrained=path, norm_eps=1e-5).eval()
    assert model.load_report.format == "timm" and model.fc_norm.__class__ is torch.nn.LayerNorm
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert _max_diff(model(x), src(x)) == 0.0


def test_timm_hub_config_gives_heads(tmp_path):
    src = vit3d.VisionTransformer(32, 8, num_classes=3, embed_dim=48, depth=1, num_heads=3).eval()
    save_file(src.state_dict(), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "vit_custom", "model_args": {"num_heads": 3}}))
    ckpt = load_2d(tmp_path / "model.safetensors")
    assert ckpt.config["num_heads"] == 3


# ---------------------------------------------------------------------- Google npz (vit_jax and big_vision)
def _to_jax(state: dict[str, torch.Tensor], heads: int, depth: int, stacked: bool = False,
            prefix: str = "") -> dict[str, np.ndarray]:
    """Canonical -> vit_jax (or big_vision when ``stacked``) arrays: the inverse mapping, written out."""
    d = state["patch_embed.proj.weight"].shape[0]
    hd = d // heads
    out = {"embedding/kernel": state["patch_embed.proj.weight"].permute(2, 3, 1, 0),
           "embedding/bias": state["patch_embed.proj.bias"],
           "Transformer/encoder_norm/scale": state["norm.weight"], "Transformer/encoder_norm/bias": state["norm.bias"],
           "head/kernel": state["head.weight"].T, "head/bias": state["head.bias"]}
    if "cls_token" in state:
        out["cls"] = state["cls_token"]
    names = ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0") if stacked else \
        ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
    out["pos_embedding" if stacked else "Transformer/posembed_input/pos_embedding"] = state["pos_embed"]
    blocks = []
    for i in range(depth):
        q, b = f"blocks.{i}.", {}
        n1, att, n2, mlp = names
        b[f"{n1}/scale"], b[f"{n1}/bias"] = state[q + "norm1.weight"], state[q + "norm1.bias"]
        b[f"{n2}/scale"], b[f"{n2}/bias"] = state[q + "norm2.weight"], state[q + "norm2.bias"]
        for j, n in enumerate(("query", "key", "value")):
            w = state[q + "attn.qkv.weight"][j * d:(j + 1) * d]
            b[f"{att}/{n}/kernel"] = w.T.reshape(d, heads, hd)
            b[f"{att}/{n}/bias"] = state[q + "attn.qkv.bias"][j * d:(j + 1) * d].reshape(heads, hd)
        b[f"{att}/out/kernel"] = state[q + "attn.proj.weight"].T.reshape(heads, hd, d)
        b[f"{att}/out/bias"] = state[q + "attn.proj.bias"]
        b[f"{mlp}/Dense_0/kernel"], b[f"{mlp}/Dense_0/bias"] = state[q + "mlp.fc1.weight"].T, state[q + "mlp.fc1.bias"]
        b[f"{mlp}/Dense_1/kernel"], b[f"{mlp}/Dense_1/bias"] = state[q + "mlp.fc2.weight"].T, state[q + "mlp.fc2.bias"]
        blocks.append(b)
    if stacked:
        for k in blocks[0]:
            out[f"Transformer/encoderblock/{k}"] = torch.stack([b[k] for b in blocks])
    else:
        for i, b in enumerate(blocks):
            out.update({f"Transformer/encoderblock_{i}/{k}": v for k, v in b.items()})
    return {prefix + k: v.detach().numpy().copy() for k, v in out.items()}


def _jax_forward(p: dict[str, np.ndarray], x: torch.Tensor, depth: int, names: tuple[str, ...],
                 pool: str) -> torch.Tensor:
    """The vit_jax / big_vision forward pass on the raw arrays (NHWC conv, einsum attention), with Flax's
    ``nn.gelu`` (``approximate=True``: the tanh form)."""
    t = {k: torch.from_numpy(v) for k, v in p.items()}
    kernel = t["embedding/kernel"]  # [ph, pw, C, D]
    ph = kernel.shape[0]
    xs = x.permute(0, 2, 3, 1)  # NHWC
    B, H, W, C = xs.shape
    patches = xs.reshape(B, H // ph, ph, W // ph, ph, C).permute(0, 1, 3, 2, 4, 5).reshape(B, -1, ph, ph, C)
    h = torch.einsum("bnijc,ijcd->bnd", patches, kernel) + t["embedding/bias"]
    pos = t.get("Transformer/posembed_input/pos_embedding", t.get("pos_embedding"))
    if "cls" in t and pos.shape[1] == h.shape[1] + 1:  # vit_jax: cls first, then positions for all
        h = torch.cat([t["cls"].expand(B, -1, -1), h], 1) + pos
    else:  # big_vision: positions on patches, then cls
        h = h + pos
        if "cls" in t:
            h = torch.cat([t["cls"].expand(B, -1, -1), h], 1)
    n1, att, n2, mlp = names

    def ln(z: torch.Tensor, k: str) -> torch.Tensor:
        return F.layer_norm(z, z.shape[-1:], blk[k + "/scale"], blk[k + "/bias"], eps=1e-6)

    for i in range(depth):
        blk = {k.split("/", 2)[2]: v for k, v in t.items() if k.startswith(f"Transformer/encoderblock_{i}/")}
        if not blk:
            blk = {k.split("/", 2)[2]: v[i] for k, v in t.items() if k.startswith("Transformer/encoderblock/")}
        y = ln(h, n1)
        q, k, v = (torch.einsum("bnd,dhk->bnhk", y, blk[f"{att}/{n}/kernel"]) + blk[f"{att}/{n}/bias"]
                   for n in ("query", "key", "value"))
        a = torch.einsum("bqhk,bshk->bhqs", q, k) / q.shape[-1] ** 0.5
        o = torch.einsum("bhqs,bshk->bqhk", a.softmax(-1), v)
        h = h + torch.einsum("bqhk,hkd->bqd", o, blk[f"{att}/out/kernel"]) + blk[f"{att}/out/bias"]
        y = ln(h, n2)
        y = F.gelu(y @ blk[f"{mlp}/Dense_0/kernel"] + blk[f"{mlp}/Dense_0/bias"], approximate="tanh")
        h = h + y @ blk[f"{mlp}/Dense_1/kernel"] + blk[f"{mlp}/Dense_1/bias"]
    blk = {"n/scale": t["Transformer/encoder_norm/scale"], "n/bias": t["Transformer/encoder_norm/bias"]}
    h = ln(h, "n")
    h = h[:, 0] if pool == "tok" else h.mean(1)
    return h @ t["head/kernel"] + t["head/bias"]


@pytest.mark.parametrize("dim,depth,heads,patch", [(32, 2, 2, 8), (48, 1, 3, 4)])
def test_vit_jax_npz(tmp_path, dim, depth, heads, patch):
    ref = vit3d.VisionTransformer(32, patch, num_classes=5, embed_dim=dim, depth=depth, num_heads=heads).eval()
    arrays = _to_jax(ref.state_dict(), heads, depth, prefix="opt/target/")
    arrays["opt/state/step"] = np.zeros(1)
    np.savez(tmp_path / "vit.npz", **arrays)
    model = vit3d.create_model(None, pretrained=tmp_path / "vit.npz").eval()  # heads from kernel shapes
    assert model.blocks[0].attn.num_heads == heads and model.act_layer == "gelu_tanh"
    assert any("tanh approximation" in n for n in model.load_report.notes)
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    x = torch.randn(2, 3, 32, 32)
    names = ("LayerNorm_0", "MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
    plain = {k[len("opt/target/"):]: v for k, v in arrays.items() if k.startswith("opt/target/")}
    with torch.no_grad():
        assert _max_diff(model(x), _jax_forward(plain, x, depth, names, "tok")) <= TOL


@pytest.mark.parametrize("pool", ["gap", "tok"])
def test_big_vision_npz_stacked(tmp_path, pool):
    kw = dict(class_token=False, global_pool="avg", fc_norm=False) if pool == "gap" else dict(no_embed_class=True)
    ref = vit3d.VisionTransformer(32, 8, num_classes=4, embed_dim=32, depth=2, num_heads=2, **kw).eval()
    arrays = _to_jax(ref.state_dict(), 2, 2, stacked=True, prefix="params/img/")
    np.savez(tmp_path / "bv.npz", **arrays)
    model = vit3d.create_model(None, pretrained=tmp_path / "bv.npz").eval()
    plain = {k[len("params/img/"):]: v for k, v in arrays.items()}
    names = ("LayerNorm_0", "MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert _max_diff(model(x), _jax_forward(plain, x, 2, names, pool)) <= TOL


# ---------------------------------------------------------------------- detection
def test_unknown_layout_lists_found_keys_and_known_formats(tmp_path):
    torch.save({"encoder.weight": torch.zeros(2), "decoder.bias": torch.zeros(2)}, tmp_path / "unet.pth")
    with pytest.raises(ValueError) as err:
        load_2d(tmp_path / "unet.pth")
    msg = str(err.value)
    assert "encoder.weight" in msg and all(f in msg for f in ("timm", "torchvision", "hf", "jax", "monai"))


def test_explicit_wrong_format_is_an_error_naming_the_keys(tmp_path):
    src = vit3d.VisionTransformer(16, 8, num_classes=2, embed_dim=64, depth=1, num_heads=1)
    torch.save(src.state_dict(), tmp_path / "t.pth")
    with pytest.raises(ValueError, match="conv_proj.weight.*blocks.0.attn"):
        load_2d(tmp_path / "t.pth", format="torchvision")
