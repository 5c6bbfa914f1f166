"""``make demo`` until the training pipeline lands: one training step of a small 3D ViT on random data."""

from __future__ import annotations

import time

import torch

import vit3d


def main() -> None:
    torch.manual_seed(0)
    model = vit3d.create_model("vit_small_patch16_3d", img_size=(16, 112, 112), num_classes=10).train()
    x, y = torch.randn(4, 3, 16, 112, 112), torch.randint(0, 10, (4,))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    t0 = time.perf_counter()
    logits = model(x)
    torch.nn.functional.cross_entropy(logits, y).backward()
    opt.step()
    dt = time.perf_counter() - t0
    print(f"vit_small_patch16_3d: input {tuple(x.shape)} -> logits {tuple(logits.shape)}; "
          f"one training step {dt:.2f} s ({x.shape[0] / dt:.1f} samples/s)")


if __name__ == "__main__":
    main()
