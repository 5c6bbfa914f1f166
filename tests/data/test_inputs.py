"""discover_inputs: files, folders, DICOM series (with and without suffixes), globs and CSVs, nothing dropped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.data.helpers import write_dicom_series, write_nifti
from vit3d.data.inputs import VIDEO_SUFFIXES, VOLUME_SUFFIXES, discover_inputs, is_dicom_file
from vit3d.errors import InputError, MissingInputError


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """site/a.nii.gz, site/a_mask.nii.gz, site/notes.txt, site/p1/series (.dcm), site/p2/deep/series (no suffix)."""
    vol = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    site = tmp_path / "site"
    site.mkdir()
    write_nifti(site / "a.nii.gz", vol.astype(np.float32))
    write_nifti(site / "a_mask.nii.gz", (vol > 10).astype(np.uint8))
    (site / "notes.txt").write_text("not an image")
    (site / "scan.xyz").write_text("unknown format")
    write_dicom_series(site / "p1" / "ct", vol)
    bare = write_dicom_series(site / "p2" / "deep" / "ct", vol)
    for f in bare.iterdir():  # DICOM files as many PACS exports write them: no suffix at all
        f.rename(f.with_suffix(""))
    first = next(iter(sorted((site / "p1" / "ct").iterdir())))
    (site / "DICOMDIR").write_bytes(first.read_bytes())  # an index file with the DICM preamble, not a series
    return site


def test_a_folder_of_series_gives_one_input_per_series(tree: Path) -> None:
    found = discover_inputs(tree)
    assert found == [str(tree / "a.nii.gz"), str(tree / "p1" / "ct"), str(tree / "p2" / "deep" / "ct")]
    reasons = {Path(b.path).name: b.reason for b in found.ignored}
    assert set(reasons) == {"DICOMDIR", "a_mask.nii.gz", "notes.txt", "scan.xyz"}  # every other file is reported
    assert "mask" in reasons["a_mask.nii.gz"] and "known suffixes" in reasons["scan.xyz"]


def test_dicom_is_recognised_by_its_preamble(tree: Path) -> None:
    bare = sorted((tree / "p2" / "deep" / "ct").iterdir())
    assert bare and all(f.suffix == "" and is_dicom_file(f) for f in bare)
    assert not is_dicom_file(tree / "notes.txt") and not is_dicom_file(tree / "missing")
    # the series folder itself, and a glob over its files, are the one series
    assert discover_inputs(tree / "p2" / "deep" / "ct") == [str(tree / "p2" / "deep" / "ct")]
    assert discover_inputs(str(tree / "p1" / "ct" / "*.dcm")) == [str(tree / "p1" / "ct")]


def test_series_read_as_volumes(tree: Path) -> None:
    """Each discovered series folder reads as one 3D volume (not one 2D image per slice)."""
    from vit3d.data.io import read_volume

    for item in discover_inputs(tree)[1:]:
        assert tuple(read_volume(item).shape) == (1, 5, 4, 3)


def test_globs_csvs_and_lists(tree: Path, tmp_path: Path) -> None:
    assert discover_inputs(str(tree / "**" / "*.nii.gz")) == [str(tree / "a.nii.gz")]
    table = tmp_path / "inputs.csv"
    table.write_text("image,label\nsite/a.nii.gz,x\nsite/p1/ct,y\n")
    assert discover_inputs(table) == [str(tree / "a.nii.gz"), str(tree / "p1" / "ct")]
    both = discover_inputs([table, tree / "p2"])
    assert both == [str(tree / "a.nii.gz"), str(tree / "p1" / "ct"), str(tree / "p2" / "deep" / "ct")]


def test_clips(tmp_path: Path) -> None:
    for name in ("a.mp4", "b.M4V", "c.ts", "d.nii.gz"):
        (tmp_path / name).write_bytes(b"0")
    found = discover_inputs(tmp_path, "clip")
    assert [Path(f).name for f in found] == ["a.mp4", "b.M4V", "c.ts"]
    assert [Path(b.path).name for b in found.ignored] == ["d.nii.gz"]
    assert ".ts" in VIDEO_SUFFIXES and ".nii.gz" in VOLUME_SUFFIXES


def test_errors_name_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="no such file"):
        discover_inputs(tmp_path / "nope")
    with pytest.raises(MissingInputError, match="matches nothing"):
        discover_inputs(str(tmp_path / "*.nii.gz"))
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(InputError, match=r"no volume inputs found \(seen: .*readme.txt"):
        discover_inputs(tmp_path)
    bad = tmp_path / "t.csv"
    bad.write_text("file,label\na,b\n")
    with pytest.raises(InputError, match="no 'image or path' column"):
        discover_inputs(bad)
    with pytest.raises(ValueError, match="kind"):
        discover_inputs(tmp_path, "image")  # type: ignore[arg-type]
