"""Masked autoencoding around a :class:`VisionTransformer`, for volumes (random 3D patches) and clips (tubes).

- MAE: He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners", https://arxiv.org/abs/2111.06377
  (encoder on the visible patches only, a light decoder, loss on masked patches, normalised patch pixels).
- VideoMAE: Tong et al. 2022, https://arxiv.org/abs/2203.12602 (tube masking at 90 %, per-channel patch
  normalisation; the layout of HF ``VideoMAEForPreTraining``, whose weights load through
  :func:`vit3d.weights.videomae_pretraining.convert_videomae_pretraining`).

The encoder is the unchanged ViT (so it is saved and fine-tuned as one): its patch embedding and positions run on
the whole grid, then only the visible tokens (plus the class token, when there is one) go through the blocks with
their fused SDPA attention. The decoder sees the visible tokens first and one mask token per hidden patch after
them, each with its fixed position, and predicts the hidden patches only. Attention is permutation-equivariant, so
this order (VideoMAE's) gives what MAE's unshuffled order gives without the scatter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vit3d.errors import ConfigError
from vit3d.layers import check_choice, sincos_pos_embed, sinusoid_table
from vit3d.layers.patch_embed import patchify

from ._base import build_blocks
from .vit import VisionTransformer

__all__ = ["MaskedAutoencoder", "TokenMask", "mask_from_bool", "num_masked", "patch_targets",
           "random_mask", "tube_mask", "unpatchify"]


# ---------------------------------------------------------------------- masks
class TokenMask(NamedTuple):
    """Which patch tokens a sample hides, as a boolean map and as index lists (both ascending).

    Attributes:
        mask: ``(B, N)`` bool, True where the patch is hidden from the encoder (HF's ``bool_masked_pos``).
        ids_keep: ``(B, N - M)`` indices of the visible patches, ascending.
        ids_masked: ``(B, M)`` indices of the hidden patches, ascending.
    """

    mask: torch.Tensor
    ids_keep: torch.Tensor
    ids_masked: torch.Tensor


def num_masked(num_tokens: int, ratio: float) -> int:
    """Hidden patches per sample: ``round(ratio * num_tokens)``, at least one hidden and one visible.

    Raises:
        ConfigError: a ratio outside (0, 1), or one that rounds to hiding none or all of ``num_tokens`` patches.
    """
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"mask_ratio {ratio} must be in (0, 1), e.g. 0.75 for volumes or 0.9 for clips")
    m = int(round(ratio * num_tokens))
    if not 0 < m < num_tokens:
        raise ConfigError(f"mask_ratio {ratio} of {num_tokens} patches hides {m}; at least one patch must be hidden "
                         "and one visible: use smaller patches or a ratio nearer 0.5")
    return m


def mask_from_bool(mask: torch.Tensor) -> TokenMask:
    """A :class:`TokenMask` from a ``(B, N)`` boolean map (True = hidden) hiding the same number in every sample."""
    if mask.ndim != 2 or mask.dtype != torch.bool:
        raise ConfigError(f"mask must be a (B, N) bool tensor, got {mask.dtype} of shape {tuple(mask.shape)}")
    counts = mask.sum(dim=1)
    if (counts != counts[0]).any():
        raise ConfigError(f"every sample must hide the same number of patches, got counts {counts.tolist()}")
    m = int(counts[0])
    # A stable sort on the flag puts visible indices first, each group in ascending order.
    order = torch.sort(mask.to(torch.uint8), dim=1, stable=True).indices
    return TokenMask(mask, order[:, : mask.shape[1] - m], order[:, mask.shape[1] - m:])


def _scores(shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator)  # on the CPU: the same draws on every device


def random_mask(batch: int, grid: Sequence[int], ratio: float, *, generator: torch.Generator | None = None,
                device: torch.device | str | None = None) -> TokenMask:
    """Hide ``round(ratio * N)`` patches of each sample, chosen uniformly over the whole grid (MAE; 3D for volumes).

    Args:
        batch: samples.
        grid: token grid, e.g. ``(D', H', W')``; ``N = prod(grid)``.
        ratio: share of patches hidden.
        generator: CPU generator for reproducible masks.
        device: where the returned tensors live.
    """
    n = math.prod(grid)
    m = num_masked(n, ratio)
    hidden = _scores((batch, n), generator).argsort(dim=1)[:, :m]
    mask = torch.zeros(batch, n, dtype=torch.bool).scatter_(1, hidden, True)
    return mask_from_bool(mask.to(device))


def tube_mask(batch: int, grid: Sequence[int], ratio: float, *, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> TokenMask:
    """Hide whole tubes: the same ``round(ratio * prod(grid[1:]))`` in-plane positions at every step of axis 0.

    VideoMAE's tube masking for clips ``(T', H', W')``: a hidden position stays hidden in every frame, so the
    model cannot copy it from the neighbouring frame.
    """
    if len(grid) < 2:
        raise ConfigError(f"tube masking needs a grid of at least 2 axes (time first), got {tuple(grid)}")
    plane = math.prod(grid[1:])
    m = num_masked(plane, ratio)
    hidden = _scores((batch, plane), generator).argsort(dim=1)[:, :m]
    frame = torch.zeros(batch, plane, dtype=torch.bool).scatter_(1, hidden, True)
    mask = frame[:, None, :].expand(batch, grid[0], plane).reshape(batch, grid[0] * plane)
    return mask_from_bool(mask.to(device))


# ---------------------------------------------------------------------- targets
def patch_targets(x: torch.Tensor, patch_size: Sequence[int], *, norm_pix: bool = True,
                  pixel_mean: Sequence[float] | None = None, pixel_std: Sequence[float] | None = None,
                  eps: float = 1e-6) -> torch.Tensor:
    """Reconstruction targets ``(B, N, C * prod(patch))`` of inputs ``(B, C, *spatial)``, ordered like
    :func:`vit3d.layers.patch_embed.patchify` (channel, then the patch axes).

    Args:
        x: the model's input.
        patch_size: patch size per spatial axis.
        norm_pix: normalise every patch per channel to zero mean and unit (unbiased) std, ``(v - mean) /
            (std + eps)``, as VideoMAE does (MAE normalises over all channels together; per channel keeps
            MRI sequences or RGB channels of different brightness on the same footing).
        pixel_mean: per-channel mean to undo first (the input's normalisation), as VideoMAE does for RGB.
        pixel_std: per-channel std to undo first.
        eps: added to the patch std.
    """
    x = x.float()
    if (pixel_mean is None) != (pixel_std is None):
        raise ConfigError("give pixel_mean and pixel_std together (the normalisation to undo) or neither")
    if pixel_mean is not None and pixel_std is not None:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        x = x * torch.as_tensor(pixel_std, dtype=x.dtype, device=x.device).view(shape) \
            + torch.as_tensor(pixel_mean, dtype=x.dtype, device=x.device).view(shape)
    patches = patchify(x, patch_size)
    if not norm_pix:
        return patches
    B, N, _ = patches.shape
    per_channel = patches.view(B, N, x.shape[1], -1)
    if per_channel.shape[-1] < 2:
        raise ConfigError(f"norm_pix needs patches of at least 2 values per channel, got patch_size "
                          f"{tuple(patch_size)}")
    mean = per_channel.mean(dim=-1, keepdim=True)
    std = per_channel.var(dim=-1, unbiased=True, keepdim=True).sqrt()
    return ((per_channel - mean) / (std + eps)).view(B, N, -1)


def unpatchify(patches: torch.Tensor, grid: Sequence[int], patch_size: Sequence[int], in_chans: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(B, N, C * prod(patch))`` -> ``(B, C, *spatial)``."""
    B, n = patches.shape[0], len(grid)
    x = patches.reshape(B, *grid, in_chans, *patch_size)
    # (B, g0..gn-1, C, p0..pn-1) -> (B, C, g0, p0, g1, p1, ...)
    order = [0, n + 1] + [v for i in range(n) for v in (1 + i, n + 2 + i)]
    x = x.permute(*order)
    return x.reshape(B, in_chans, *[g * p for g, p in zip(grid, patch_size, strict=True)])


# ---------------------------------------------------------------------- the autoencoder
class MaskedAutoencoder(nn.Module):
    """A ViT encoder that sees only the visible patches, and a light decoder that predicts the hidden ones.

    Works with every :class:`VisionTransformer` configuration (class token or not; learned, sin-cos, separable
    or no positions; any patch or tubelet size; 1, 2 or 3 spatial dims). The encoder's pooling norm and head are
    not used (fine-tuning trains them).

    Args:
        encoder: the ViT to pretrain; saved alone afterwards (``vit3d.weights.save_model(mae.encoder, path)``).
        decoder_embed_dim: decoder width.
        decoder_depth: decoder blocks.
        decoder_num_heads: decoder attention heads.
        decoder_mlp_ratio: decoder MLP width over ``decoder_embed_dim``.
        decoder_pos_embed: fixed decoder positions: ``'sincos'`` (per axis, :func:`sincos_pos_embed`) or
            ``'sincos_seq'`` (VideoMAE's table over the flat token index, :func:`sinusoid_table`).
        decoder_norm_eps: epsilon of the decoder's final LayerNorm; the decoder blocks use the encoder's eps,
            activation and qkv bias.
        mask_type: ``'random'`` (patches anywhere; volumes) or ``'tube'`` (whole tubes along axis 0; clips).
        mask_ratio: share of patches hidden (0.75 in MAE, 0.9 in VideoMAE).
        norm_pix_loss: predict per-patch, per-channel normalised pixels (see :func:`patch_targets`).
        pixel_mean: per-channel input normalisation undone before the targets (VideoMAE undoes ImageNet's).
        pixel_std: see ``pixel_mean``.
    """

    def __init__(
        self,
        encoder: VisionTransformer,
        *,
        decoder_embed_dim: int = 256,
        decoder_depth: int = 4,
        decoder_num_heads: int = 8,
        decoder_mlp_ratio: float = 4.0,
        decoder_pos_embed: Literal["sincos", "sincos_seq"] = "sincos",
        decoder_norm_eps: float | None = None,
        mask_type: Literal["random", "tube"] = "random",
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        pixel_mean: Sequence[float] | None = None,
        pixel_std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(encoder, VisionTransformer):
            raise ConfigError(f"MaskedAutoencoder wraps a vit3d VisionTransformer, got {type(encoder).__name__}")
        check_choice("decoder_pos_embed", decoder_pos_embed, ("sincos", "sincos_seq"))
        if decoder_embed_dim % decoder_num_heads:
            raise ConfigError(f"decoder_embed_dim {decoder_embed_dim} is not divisible by decoder_num_heads "
                             f"{decoder_num_heads}; pick a head count that divides it")
        if decoder_depth < 1:
            raise ConfigError(f"decoder_depth must be at least 1, got {decoder_depth}")
        if (pixel_mean is None) != (pixel_std is None) or (
                pixel_mean is not None and not len(pixel_mean) == len(pixel_std) == encoder.in_chans):
            raise ConfigError(f"pixel_mean and pixel_std must both be given with {encoder.in_chans} values "
                             "(one per input channel), or both left out")
        self.encoder = encoder
        self.set_masking(mask_type, mask_ratio)
        self.norm_pix_loss = norm_pix_loss
        self.pixel_mean = None if pixel_mean is None else tuple(float(v) for v in pixel_mean)
        self.pixel_std = None if pixel_std is None else tuple(float(v) for v in pixel_std)
        self.decoder_pos_type = decoder_pos_embed
        eps = encoder.blocks[0].norm1.eps
        block = encoder.blocks[0]
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_embed_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_blocks = build_blocks(embed_dim=decoder_embed_dim, depth=decoder_depth,
                                           num_heads=decoder_num_heads, mlp_ratio=decoder_mlp_ratio,
                                           qkv_bias=block.attn.qkv.bias is not None, proj_drop_rate=0.0,
                                           attn_drop_rate=0.0, drop_path_rate=0.0, norm_eps=eps,
                                           act_layer=encoder.act_layer)
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=eps if decoder_norm_eps is None else decoder_norm_eps)
        patch_dim = encoder.in_chans * math.prod(encoder.patch_size)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_dim)
        self.register_buffer("decoder_pos_embed", self._decoder_table(encoder.grid_size), persistent=False)
        self._init_decoder()

    def _init_decoder(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        for m in [self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)  # MAE's decoder init
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _decoder_table(self, grid: tuple[int, ...]) -> torch.Tensor:
        dim = self.mask_token.shape[-1]
        if self.decoder_pos_type == "sincos_seq":
            return sinusoid_table(math.prod(grid), dim)[None]
        return sincos_pos_embed(grid, dim)[None]

    # ------------------------------------------------------------------ masks and targets
    def set_masking(self, mask_type: Literal["random", "tube"], mask_ratio: float) -> None:
        """Set the masks :meth:`random_mask` draws (e.g. to continue a loaded model with other masks), checked
        against the encoder's token grid now rather than at the first step."""
        check_choice("mask_type", mask_type, ("random", "tube"))
        if mask_type == "tube" and self.encoder.spatial_dims < 2:
            raise ConfigError("mask_type='tube' needs 2 or more spatial dims; use 'random'")
        grid = self.encoder.grid_size
        num_masked(math.prod(grid[1:]) if mask_type == "tube" else math.prod(grid), mask_ratio)
        self.mask_type, self.mask_ratio = mask_type, float(mask_ratio)

    def grid_for(self, x: torch.Tensor) -> tuple[int, ...]:
        """Token grid of input ``x`` (validated by the encoder's patch embedding)."""
        return self.encoder.patch_embed.check_input(x)

    def random_mask(self, x: torch.Tensor, generator: torch.Generator | None = None) -> TokenMask:
        """The configured mask (``mask_type``, ``mask_ratio``) for a batch ``x``, drawn from ``generator``."""
        fn = tube_mask if self.mask_type == "tube" else random_mask
        return fn(x.shape[0], self.grid_for(x), self.mask_ratio, generator=generator, device=x.device)

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """Targets ``(B, N, C * prod(patch))`` of every patch of ``x`` (see :func:`patch_targets`)."""
        return patch_targets(x, self.encoder.patch_size, norm_pix=self.norm_pix_loss, pixel_mean=self.pixel_mean,
                             pixel_std=self.pixel_std)

    # ------------------------------------------------------------------ forward
    def forward_encoder(self, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Encode the visible patches: ``(B, C, *spatial)`` and ``(B, K)`` indices -> ``(B, prefix + K, D)``.

        Positions are added on the whole grid first, so each kept token carries its own position whatever the
        encoder's position type (the ViT's own ``_pos_embed``: one place decides how every type is added). The
        encoder's random ``patch_drop_rate`` is not applied: the mask takes its place.
        """
        enc = self.encoder
        grid = enc.patch_embed.check_input(x)
        tokens = enc._pos_embed(enc.patch_embed.project(x), grid)
        p = enc.num_prefix_tokens
        visible = tokens[:, p:].gather(1, ids_keep[..., None].expand(-1, -1, tokens.shape[-1]))
        h = torch.cat([tokens[:, :p], visible], dim=1)
        return enc.norm(enc.forward_blocks(h))

    def forward_decoder(self, latent: torch.Tensor, mask: TokenMask) -> torch.Tensor:
        """Predict the hidden patches: encoder tokens ``(B, prefix + K, D)`` -> ``(B, M, C * prod(patch))`` in
        the order of ``mask.ids_masked``."""
        p = self.encoder.num_prefix_tokens
        h = self.decoder_embed(latent)
        B, _, dim = h.shape
        table = self.decoder_pos_embed
        if table.shape[1] != mask.mask.shape[1]:
            raise ConfigError(f"the mask covers {mask.mask.shape[1]} patches but the decoder's grid has "
                             f"{table.shape[1]}; inputs of another size need a mask drawn for their grid")
        pos = table.to(h.dtype).expand(B, -1, -1)
        pos_keep = pos.gather(1, mask.ids_keep[..., None].expand(-1, -1, dim))
        pos_masked = pos.gather(1, mask.ids_masked[..., None].expand(-1, -1, dim))
        # Prefix tokens (the class token) take part without a position, as in MAE's decoder.
        h = torch.cat([h[:, :p], h[:, p:] + pos_keep, self.mask_token.to(h.dtype) + pos_masked], dim=1)
        h = self.decoder_blocks(h)
        return self.decoder_pred(self.decoder_norm(h[:, -mask.ids_masked.shape[1]:]))

    def predict(self, x: torch.Tensor, mask: TokenMask) -> torch.Tensor:
        """Predictions ``(B, M, C * prod(patch))`` for the hidden patches of ``x`` (in ``mask.ids_masked`` order)."""
        if mask.mask.shape[0] != x.shape[0]:
            raise ConfigError(f"mask is for {mask.mask.shape[0]} samples but the batch has {x.shape[0]}")
        return self.forward_decoder(self.forward_encoder(x, mask.ids_keep), mask)

    def loss(self, x: torch.Tensor, pred: torch.Tensor, mask: TokenMask) -> torch.Tensor:
        """Mean squared error between ``pred`` and the targets of the hidden patches only."""
        with torch.no_grad():
            target = self.targets(x)
            target = target.gather(1, mask.ids_masked[..., None].expand(-1, -1, target.shape[-1]))
        return F.mse_loss(pred.float(), target)

    def forward(self, x: torch.Tensor, mask: TokenMask) -> torch.Tensor:
        """Reconstruction loss (a scalar) of ``x`` ``(B, C, *spatial)`` with the patches in ``mask`` hidden."""
        return self.loss(x, self.predict(x, mask), mask)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mask: TokenMask,
                    pred: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pictures for people: ``(masked input, reconstruction, original)``, each shaped like ``x``.

        All three are in the targets' pixel space (the input, with ``pixel_mean``/``pixel_std`` undone when
        given). The masked input has every hidden patch set to the sample's minimum (drawn dark). The
        reconstruction keeps the visible patches and puts the predicted ones in the hidden places; with
        ``norm_pix_loss`` each prediction is mapped back to pixels with the true patch's mean and std (as MAE's
        figures do).
        """
        grid = self.grid_for(x)
        pred = self.predict(x, mask) if pred is None else pred
        patch = self.encoder.patch_size
        raw = patch_targets(x, patch, norm_pix=False, pixel_mean=self.pixel_mean, pixel_std=self.pixel_std)
        B, _, P = raw.shape
        C = x.shape[1]
        idx = mask.ids_masked[..., None].expand(-1, -1, P)
        pixels = pred.float()
        if self.norm_pix_loss:
            per_channel = raw.gather(1, idx).view(B, -1, C, P // C)
            mean = per_channel.mean(dim=-1, keepdim=True)
            std = per_channel.var(dim=-1, unbiased=True, keepdim=True).sqrt()
            pixels = (pixels.view(B, -1, C, P // C) * (std + 1e-6) + mean).view(B, -1, P)
        recon = raw.scatter(1, idx, pixels)
        floor = raw.flatten(1).amin(dim=1)[:, None, None].expand(B, mask.ids_masked.shape[1], P)
        hidden = raw.scatter(1, idx, floor)
        return tuple(unpatchify(t, grid, patch, C) for t in (hidden, recon, raw))  # type: ignore[return-value]
