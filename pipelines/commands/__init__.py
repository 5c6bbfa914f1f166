"""Subcommands of ``vit3d`` that are not LightningCLI runs; each module exposes ``main(argv) -> int``."""
