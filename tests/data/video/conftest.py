"""The generated video corpus, written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import corpus


@pytest.fixture(scope="session")
def video_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, corpus.Item]:
    pytest.importorskip("imageio_ffmpeg", reason="the corpus is written with imageio-ffmpeg's FFmpeg binary")
    return corpus.build(Path(tmp_path_factory.mktemp("video_corpus")))
