"""Small helpers the pipeline tests share: YAML configs on disk and CSV rows back."""

from __future__ import annotations

import csv
from pathlib import Path

import yaml


def write_yaml(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
