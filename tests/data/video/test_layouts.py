"""Folder layouts: split folders, flat class folders with a seeded stratified validation split, UCF101 and HMDB51
split files; every file of a folder is used or reported."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from vit3d.data.video import VIDEO_SUFFIXES, read_video_folder
from vit3d.errors import ConfigError, InputError, MissingInputError

from .corpus import Item


def _tree(root: Path, files: dict[str, Path | str]) -> Path:
    for rel, src in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, Path):
            shutil.copy(src, root / rel)
        else:
            (root / rel).write_text(src)
    return root


def test_extension_table() -> None:
    for ext in (".mp4", ".ts", ".m4v", ".mpg", ".mpeg", ".mts", ".m2ts", ".3gp", ".ogv", ".flv", ".wmv", ".webm",
                ".mkv", ".avi", ".mov"):
        assert ext in VIDEO_SUFFIXES


def test_flat_class_folders_with_stratified_seeded_val_split(video_corpus: dict[str, Item], tmp_path: Path) -> None:
    v = video_corpus["h264_mp4"].path
    files = {f"{c}/{c}_{i}.mp4": v for c in ("a", "b", "c") for i in range(10)}
    files |= {"a/extra.ts": video_corpus["h264_ts"].path, "a/notes.txt": "x", "README.md": "x", "b/x.xyz": "x"}
    root = _tree(tmp_path / "flat", files)
    t = read_video_folder(root, val_fraction=0.2, seed=3)
    assert t.layout == "class folders" and t.classes == ["a", "b", "c"]
    counts = Counter((r["label"], r["split"]) for r in t.rows)
    assert counts[("a", "val")] == 2 and counts[("b", "val")] == 2 and counts[("c", "val")] == 2
    assert counts[("a", "train")] == 9  # the .ts file is a video
    assert {Path(f).name for f, _ in t.ignored} == {"notes.txt", "README.md", "x.xyz"}
    # every file is a row or reported
    assert len(t.rows) + len(t.ignored) == sum(1 for p in root.rglob("*") if p.is_file())
    same = read_video_folder(root, val_fraction=0.2, seed=3)
    assert [r["split"] for r in same.rows] == [r["split"] for r in t.rows]
    other = read_video_folder(root, val_fraction=0.2, seed=4)
    assert [r["split"] for r in other.rows] != [r["split"] for r in t.rows]
    three = read_video_folder(root, val_fraction=0.2, test_fraction=0.1, seed=0)
    assert Counter(r["split"] for r in three.rows) == {"train": 22, "val": 6, "test": 3}


def test_split_folders(video_corpus: dict[str, Item], tmp_path: Path) -> None:
    v = video_corpus["h264_mp4"].path
    root = _tree(tmp_path / "sf", {"train/a/1.mp4": v, "train/b/2.mkv": v, "val/a/3.mp4": v, "test/b/4.mp4": v,
                                   "test/c/5.mp4": v, "other/x.mp4": v, "train/a/thumbs.db": "x"})
    t = read_video_folder(root)
    assert t.layout == "split folders" and t.classes == ["a", "b"]  # classes from the training split
    assert sorted((r["split"], r["label"]) for r in t.rows) == [("test", "b"), ("test", "c"), ("train", "a"),
                                                                 ("train", "b"), ("val", "a")]
    assert sorted(Path(f).name for f, _ in t.ignored) == ["thumbs.db", "x.mp4"]
    with pytest.raises(ConfigError, match="already has a validation split"):
        read_video_folder(root, val_fraction=0.1)


def test_ucf101_split_files(video_corpus: dict[str, Item], tmp_path: Path) -> None:
    v = video_corpus["h264_mp4"].path
    root = _tree(tmp_path / "ucf", {f"{c}/v_{c}_g0{g}_c01.avi": v for c in ("Archery", "Bowling") for g in (1, 2, 3)})
    (root / "Bowling" / "v_Bowling_g09_c01.avi").write_bytes(Path(v).read_bytes())  # in no list
    lists = _tree(tmp_path / "ucfTrainTestlist", {
        "classInd.txt": "1 Bowling\n2 Archery\n",
        "trainlist01.txt": "Archery/v_Archery_g02_c01.avi 2\nArchery/v_Archery_g03_c01.avi 2\n"
                           "Bowling/v_Bowling_g02_c01.avi 1\nBowling/v_Bowling_g03_c01.avi 1\n",
        "testlist01.txt": "Archery/v_Archery_g01_c01.avi\nBowling/v_Bowling_g01_c01.avi\nBowling/missing.avi\n"})
    t = read_video_folder(root, split_files=lists, fold=1)
    assert t.layout == "ucf101 split files" and t.classes == ["Bowling", "Archery"]  # classInd order
    assert Counter(r["split"] for r in t.rows) == {"train": 4, "test": 3}
    assert [Path(f).name for f, _ in t.ignored] == ["v_Bowling_g09_c01.avi"]
    assert "not listed in the fold-1 split files" in t.ignored[0][1]
    with pytest.raises(MissingInputError, match="no split files for fold 2"):
        read_video_folder(root, split_files=lists, fold=2)


def test_hmdb51_split_files(video_corpus: dict[str, Item], tmp_path: Path) -> None:
    v = video_corpus["h264_mp4"].path
    root = _tree(tmp_path / "hmdb", {f"{c}/{c}{i}.avi": v for c in ("jump", "run") for i in range(3)})
    lists = _tree(tmp_path / "splits", {"jump_test_split1.txt": "jump0.avi 1\njump1.avi 2\njump2.avi 0\n",
                                        "run_test_split1.txt": "run0.avi 1\nrun1.avi 1\nrun2.avi 2\n"})
    t = read_video_folder(root, split_files=lists, fold=1, val_fraction=0.3)
    assert t.layout == "hmdb51 split files" and t.classes == ["jump", "run"]
    assert Counter(r["split"] for r in t.rows) == {"train": 2, "val": 1, "test": 2}
    assert [(Path(f).name, why) for f, why in t.ignored] == [
        ("jump2.avi", "marked 0 (unused) in the fold-1 split files")]


def test_empty_and_missing(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="does not exist"):
        read_video_folder(tmp_path / "nope")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("x")
    with pytest.raises(InputError, match=r"no videos .* found .* \(1 other files\)"):
        read_video_folder(tmp_path)
