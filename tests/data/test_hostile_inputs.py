"""A generated corpus of broken and hostile inputs: each is refused with its own message, before anything large is
allocated, without hanging, and the refusal names the file."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from vit3d.data import FailedSample, VolumeDataset, collate
from vit3d.data.common import MissingFileError, SampleError, SampleTooLargeError, read_table
from vit3d.data.io import VolumeReader, read_volume
from vit3d.data.limits import VolumeLimits
from vit3d.errors import InputError, MissingInputError, ResourceLimitError

from . import corpus
from .helpers import write_dicom_series, write_nifti

NAN_AFFINE = np.array([[np.nan, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
SINGULAR = np.array([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
ZERO = np.zeros((4, 4))
HUGE_VOXELS = np.diag([1e6, 1.0, 1.0, 1.0])

def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# name -> (writer of the input under a folder, expected exception type, regex on the one-line message)
CASES: dict[str, tuple[Callable[[Path], Path], type, str]] = {
    "huge_header": (lambda d: corpus.write_huge_header(d / "huge.nii.gz"), SampleTooLargeError,
                    r"the header declares 2048x2048x2048 = 8,589,934,592 voxels \(32.0 GiB as float32\), more "
                    r"than max_voxels=1,073,741,824 \(.*huge.nii.gz\); "
                    r"crop or downsample the file, or raise max_voxels"),
    "gzip_bomb": (lambda d: corpus.write_gzip_bomb(d / "bomb.nii.gz"), SampleTooLargeError,
                  r"the header declares 1.0 GiB of voxels in a \S+ KiB compressed file: 1,0\d\d times its "
                  r"size, more than max_compression_ratio=100 \(a decompression bomb, or near-constant data\) "
                  r"\(.*bomb.nii.gz\); if the file is genuine, raise max_compression_ratio"),
    "nrrd_huge": (lambda d: corpus.write_nrrd_header(d / "huge.nrrd", (4096, 4096, 4096)), SampleTooLargeError,
                  r"the header declares 4096x4096x4096 = 68,719,476,736 voxels"),
    "mha_truncated": (lambda d: corpus.write_mha_header(d / "cut.mha", (16, 16, 16), bytes(100)), SampleError,
                      r"truncated: the header declares 16x16x16x1 voxels of 4 byte\(s\), 16,384 bytes from offset "
                      r"\d+, but the file holds \d+ bytes \(.*cut.mha\); the file was not copied completely"),
    "nii_truncated": (lambda d: corpus.write_nifti_bytes(d / "cut.nii", (16, 16, 16), np.float32, data=bytes(100)),
                      SampleError, r"truncated: the header declares 16x16x16 voxels of 4 byte\(s\), 16,384 bytes "
                                   r"from offset 352, but the file holds 452 bytes"),
    "gz_truncated": (lambda d: corpus.write_truncated_gzip(d / "cut.nii.gz"), SampleError,
                     r"truncated: the compressed data ends early or is corrupt \(.*cut.nii.gz\)"),
    "missing": (lambda d: d / "nothing.nii.gz", MissingInputError,
                r"file not found \(.*nothing.nii.gz\); check the path"),
    "broken_link": (lambda d: (d / "link.nii.gz").symlink_to(d / "gone.nii.gz") or d / "link.nii.gz",
                    MissingInputError, r"broken symbolic link to .*gone.nii.gz"),
    "fifo": (lambda d: corpus.write_fifo(d / "pipe.nii.gz"), SampleError,
             r"a named pipe \(FIFO\), not a regular file: it is refused without being opened"),
    "device": (lambda d: Path("/dev/null"), SampleError, r"a character device, not a regular file: .* \(/dev/null\)"),
    "zero_bytes": (lambda d: _write(d / "empty.nii.gz", b""), SampleError,
                   r"empty file \(0 bytes\) \(.*empty.nii.gz\)"),
    "empty_folder": (lambda d: (d / "folder.nii.gz").mkdir() or d / "folder.nii.gz", SampleError,
                     r"a folder without DICOM image slices \(.*folder.nii.gz\)"),
    "text": (lambda d: corpus.write_text(d / "notes.nii.gz"), SampleError,
             r"not a NIFTI file: it is a text file \(it starts 'hello, this is not an image'\)"),
    "png": (lambda d: _write(d / "photo.nii", corpus.PNG), SampleError,
            r"not a NIFTI file: it is a PNG image \(.*photo.nii\)"),
    "not_an_image": (lambda d: _write(d / "data.npz", b"PK\x03\x04" + bytes(40)),
                     SampleError, r"not an image: it is a zip archive"),
    "nan_affine": (lambda d: corpus.write_nifti_bytes(d / "nan.nii.gz", (4, 4, 4), affine=NAN_AFFINE), SampleError,
                   r"bad geometry: the affine \(voxel-to-world matrix\) holds NaN or infinite values"),
    "singular_affine": (lambda d: corpus.write_nifti_bytes(d / "flat.nii.gz", (4, 4, 4), affine=SINGULAR),
                        SampleError, r"bad geometry: the affine is singular \(determinant 0, voxel sizes"),
    "zero_affine": (lambda d: corpus.write_nifti_bytes(d / "zero.nii.gz", (4, 4, 4), affine=ZERO), SampleError,
                    r"bad geometry: the affine is all zeros"),
    "huge_voxels": (lambda d: corpus.write_nifti_bytes(d / "km.nii.gz", (4, 4, 4), affine=HUGE_VOXELS),
                    SampleError, r"bad geometry: voxel sizes \(1e\+06, 1, 1\) mm outside spacing_range "
                                 r"\[0.001, 100\] mm \(.*km.nii.gz\); fix the header's voxel size"),
    "dicom_gap": (lambda d: corpus.write_series_with_gap(d / "gap"), SampleError,
                  r"1 missing slice\(s\) between slice_002.dcm \(\S+ mm\) and slice_004.dcm \(\S+ mm\), where "
                  r"slices are 2 mm apart"),
    "dicom_duplicate": (lambda d: corpus.write_series_with_duplicate(d / "dup"), SampleError,
                        r"1 duplicate slice position\(s\): slice_002.dcm and slice_002_copy.dcm are both at"),
    "dicom_irregular": (lambda d: corpus.write_irregular_series(d / "irregular"), SampleError,
                        r"irregular slice spacing: 2.7 mm between slice_004.dcm and slice_005.dcm, where most "
                        r"slices are 2 mm apart"),
    "dicom_mixed": (lambda d: corpus.write_mixed_series(d / "mixed")[0], SampleError,
                    r"the folder holds 2 DICOM series: [\d.]+ \(6 files\), [\d.]+ \(6 files\) \(.*mixed\); put "
                    r"each series in its own folder, or choose one with dicom_series=<uid>"),
    "dicom_truncated": (lambda d: corpus.write_series_with_truncated_slice(d / "cut"), SampleError,
                        r"slice slice_004.dcm is truncated: 100 of 160 pixel bytes"),
    "dicom_fifo": (lambda d: write_dicom_series(d / "piped", corpus.series_volume()) and
                   corpus.write_fifo(d / "piped" / "extra.dcm").parent, SampleError,
                   r"extra.dcm is not a regular file \(a FIFO, device or socket\)"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_broken_input_has_its_own_message(name: str, tmp_path: Path) -> None:
    make, error, pattern = CASES[name]
    path = make(tmp_path)
    with pytest.raises(error) as info:
        read_volume(path)
    assert isinstance(info.value, InputError) and str(info.value.file) == str(path)
    message = str(info.value)
    assert "\n" not in message and re.search(pattern, message), message


def test_socket_is_refused_at_once() -> None:
    folder = tempfile.mkdtemp(dir="/tmp")  # AF_UNIX paths must stay under 108 bytes
    path = os.path.join(folder, "s.nii.gz")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        with pytest.raises(SampleError, match=r"a socket, not a regular file"):
            read_volume(path)


def test_limits_are_configurable(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "v.nii.gz", np.ones((8, 8, 8), np.float32))
    with pytest.raises(ResourceLimitError, match=r"8x8x8 = 512 voxels .* more than max_voxels=100"):
        read_volume(path, reader=VolumeReader(limits=VolumeLimits(max_voxels=100)))
    assert tuple(read_volume(path, reader=VolumeReader(limits=VolumeLimits(max_voxels=512))).shape) == (1, 8, 8, 8)
    km = corpus.write_nifti_bytes(tmp_path / "km.nii.gz", (4, 4, 4), affine=HUGE_VOXELS)
    wide = VolumeReader(limits=VolumeLimits(spacing_range=(1e-3, 1e7)))
    assert tuple(read_volume(km, reader=wide).shape) == (1, 4, 4, 4)
    with pytest.raises(ValueError, match=r"spacing_range \(1.0, 0.5\) must be \(low, high\)"):
        VolumeLimits(spacing_range=(1.0, 0.5))


def test_chosen_series_of_a_mixed_folder_is_read(tmp_path: Path) -> None:
    folder, uid = corpus.write_mixed_series(tmp_path / "mixed")
    img = read_volume(folder, reader=VolumeReader(dicom_series=uid))
    expected = corpus.series_volume(seed=2).transpose(2, 1, 0).astype(np.float32)  # (x, y, z) = (cols, rows, slices)
    np.testing.assert_array_equal(img[0].numpy(), expected)
    with pytest.raises(SampleError, match=r"series 1.2.3 is not in the folder, which holds"):
        read_volume(folder, reader=VolumeReader(dicom_series="1.2.3"))


def test_refused_in_a_child_without_allocating_or_privileges(tmp_path: Path) -> None:
    """A child process reads a 16 GiB header, a 1 GiB gzip bomb and an unreadable file: each is refused, and the
    child's peak RSS stays near the interpreter's own (nothing of the declared gigabytes is allocated). Root reads
    every file, so as root the child runs without the capabilities that allow it (setpriv)."""
    huge = corpus.write_huge_header(tmp_path / "huge.nii.gz")
    bomb = corpus.write_gzip_bomb(tmp_path / "bomb.nii.gz")
    assert bomb.stat().st_size < 2**21
    secret = write_nifti(tmp_path / "secret.nii.gz", np.ones((4, 4, 4), np.float32))
    secret.chmod(0o000)
    code = ("import json, resource, sys\nfrom vit3d.data.io import read_volume\nout = []\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n        read_volume(p)\n"
            "    except Exception as e:\n        out.append(f'{type(e).__name__}: {e}')\n"
            "print(json.dumps({'errors': out, 'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))")
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv to drop CAP_DAC_OVERRIDE")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    res = subprocess.run([*prefix, sys.executable, "-c", code, str(huge), str(bomb), str(secret)],
                         capture_output=True, text=True, timeout=600)
    result = json.loads(res.stdout.strip().splitlines()[-1])
    huge_err, bomb_err, secret_err = result["errors"]
    assert huge_err.startswith("SampleTooLargeError: the header declares 2048x2048x2048"), huge_err
    assert bomb_err.startswith("SampleTooLargeError: the header declares 1.0 GiB of voxels"), bomb_err
    assert re.match(r"SampleError: permission denied \(.*secret.nii.gz\); grant read access", secret_err)
    assert result["rss_mb"] < 1024, result  # the bomb alone would need 1 GiB, the header 16 GiB


# ---------------------------------------------------------------------------------------------- datasets


def test_values_are_checked_after_preprocessing(tmp_path: Path) -> None:
    extreme = np.full((8, 8, 8), 1e38, dtype=np.float32)  # finite in float32, but their sum is not
    extreme[:4], extreme[4:6] = 1.0, -1e38
    path = write_nifti(tmp_path / "extreme.nii.gz", extreme)
    assert torch.isfinite(read_volume(path)).all()  # the raw file is finite: only preprocessing overflows
    mri = VolumeDataset([{"image": str(path), "label": "a"}], preset="mri")
    with pytest.raises(SampleError, match=r"preprocessing \(preset 'mri'\) produced \d+ NaN and \d+ infinite "
                                          r"voxels, from extreme values in the file \(.*extreme.nii.gz\); clip"):
        mri[0]
    big = write_nifti(tmp_path / "big.nii.gz", np.full((8, 8, 8), 1e30, dtype=np.float32))
    raw = VolumeDataset([{"image": str(big), "label": "a"}], preset=None)
    with pytest.raises(SampleError, match=r"values up to 1e\+30 after preprocessing \(preset None\), beyond "
                                          r"\+-1e\+06 where a model's activations overflow"):
        raw[0]
    report = raw.validate()
    assert report.rows == [0] and "values up to 1e+30 after preprocessing" in report[0].reason


@pytest.fixture()
def mixed_table(tmp_path: Path) -> Path:
    good = np.full((8, 8, 8), 40.0, dtype=np.float32)
    for i in range(4):
        write_nifti(tmp_path / f"good{i}.nii.gz", good + i)
    corpus.write_huge_header(tmp_path / "huge.nii.gz")
    corpus.write_fifo(tmp_path / "pipe.nii.gz")
    corpus.write_nifti_bytes(tmp_path / "nan.nii.gz", (4, 4, 4), affine=NAN_AFFINE)
    table = tmp_path / "t.csv"
    table.write_bytes("\ufeffimage,label,split\n".encode() +  # a byte-order mark, as Excel writes it
                      b"good0.nii.gz,a,train\ngood1.nii.gz,b,train\nhuge.nii.gz,a,train\npipe.nii.gz,b,train\n"
                      b"good2.nii.gz,,train\n"
                      b"good3.nii.gz,zebra,val\nnan.nii.gz,a,val\ngood0.nii.gz,b,val\n")
    return table


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_validate_reports_every_row_with_its_reason(mixed_table: Path, cache: str) -> None:
    train = VolumeDataset(mixed_table, split="train", img_size=(8, 8, 8), cache=cache)
    assert train.classes == ["a", "b"]
    report = train.validate(num_workers=2)
    assert [(b.row, Path(b.file).name) for b in report] == [(2, "huge.nii.gz"), (3, "pipe.nii.gz"),
                                                            (4, "good2.nii.gz")]
    reasons = [b.reason for b in report]
    assert reasons[0].startswith("the header declares 2048x2048x2048") and reasons[1].startswith("a named pipe")
    assert reasons[2] == "empty label in row 4 of a labelled split; fill in the 'label' column or remove the row"
    val = VolumeDataset(mixed_table, split="val", img_size=(8, 8, 8)).validate()
    assert [b.row for b in val] == [5, 6] and val[0].reason.startswith("unknown label 'zebra': the classes (from "
                                                                       "the training split) are ['a', 'b']")
    assert "bad geometry" in val[1].reason


def test_skip_gives_failed_samples_and_keeps_going(mixed_table: Path, caplog: pytest.LogCaptureFixture) -> None:
    ds = VolumeDataset(mixed_table, split="train", img_size=(8, 8, 8), on_error="skip", train=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    with caplog.at_level(logging.WARNING, logger="vit3d.data"):
        batches = [b for _ in range(2) for b in loader]  # two epochs
    ids = [Path(i).name for b in batches for i in b.get("id", [])]
    failed = [f for b in batches for f in b["failed"]]
    assert ids == ["good0.nii.gz", "good1.nii.gz"] * 2 and all(isinstance(f, FailedSample) for f in failed)
    assert sorted(Path(f.id).name for f in failed) == sorted(["huge.nii.gz", "pipe.nii.gz", "good2.nii.gz"] * 2)
    assert len(caplog.records) == 3  # once per bad row, not once per epoch


# ---------------------------------------------------------------------------------------------- tables


def test_csv_with_a_byte_order_mark(tmp_path: Path) -> None:
    table = tmp_path / "bom.csv"
    table.write_bytes(b"\xef\xbb\xbfimage,label\na.nii.gz,x\n")
    assert read_table(table, path_keys=["image"]) == [{"image": str(tmp_path / "a.nii.gz"), "label": "x"}]


@pytest.mark.parametrize("name, content, pattern", [
    ("latin1", "image,label\ncaf\xe9.nii.gz,b\xe9nin\n".encode("latin-1"),
     r"the table is not UTF-8 text: byte 0xe9 on line 2 cannot be decoded \(.*latin1.csv\); save it as UTF-8 "
     r"\(Excel: 'CSV UTF-8'; or iconv -f latin1 -t utf-8 in.csv > out.csv\)"),
    ("empty", b"", r"the table is empty \(no header line\) \(.*empty.csv\); write a header line"),
    ("dupes", b"image,label,label\na,b,c\n", r"the table has duplicate columns \['label'\]"),
    ("ragged", b"image,label\na.nii.gz,x,extra\n", r"line 2 has 3 fields but the header has 2"),
    ("binary", b"image\x00label\n", r"the table holds NUL bytes: it is a binary file, not a CSV"),
    ("nocolumn", b"path,label\na.nii.gz,x\n", r"column 'image' is missing \(row 0 has \['label', 'path'\]\) "
                                              r"\(.*nocolumn.csv\); name the image column"),
])
def test_bad_csvs(tmp_path: Path, name: str, content: bytes, pattern: str) -> None:
    table = tmp_path / f"{name}.csv"
    table.write_bytes(content)
    with pytest.raises(InputError) as info:
        VolumeDataset(table)
    assert re.search(pattern, str(info.value)) and info.value.file == str(table), str(info.value)


def test_missing_table(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError.__mro__[2]) as info:  # MissingInputError, a FileNotFoundError too
        VolumeDataset(tmp_path / "nope.csv")
    assert isinstance(info.value, FileNotFoundError) and "dataset table not found" in str(info.value)


# ---------------------------------------------------------------------------------------------- single files


def test_single_dicom_file_declared_size(tmp_path: Path) -> None:
    import pydicom

    series = write_dicom_series(tmp_path / "s", corpus.series_volume(slices=1))
    path = next(series.iterdir())
    raw = path.read_bytes()
    cut = _write(tmp_path / "cut.dcm", raw[:-30])
    with pytest.raises(SampleError, match=r"truncated: the header declares 1x8x10x1 voxels of 2 byte\(s\), 160 bytes"):
        read_volume(cut, on_2d="slice")
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 1000
    ds.save_as(tmp_path / "huge.dcm")
    with pytest.raises(SampleTooLargeError, match=r"the header declares 1000x65535x65535x1 = 4,294,836,225,000 "
                                                  r"voxels"):
        read_volume(tmp_path / "huge.dcm")


def test_inflation_is_bounded(tmp_path: Path) -> None:
    """A gzip without a header to read first is inflated in constant memory and stopped at a byte cap."""
    from vit3d.data.limits import inflated_size

    bomb = corpus.write_gzip_bomb(tmp_path / "bomb.nii.gz")
    assert inflated_size(bomb, cap=2**24) == 2**24 + 1  # stopped after 16 MiB of its 1 GiB
    cut = corpus.write_truncated_gzip(tmp_path / "cut.nii.gz")
    with pytest.raises(SampleError, match=r"truncated or corrupt gzip data after [\d,]+ inflated bytes"):
        inflated_size(cut, cap=2**30)
    blob = _write(tmp_path / "blob.gz", bomb.read_bytes())  # no suffix that names a format: the cap applies
    with pytest.raises(SampleTooLargeError,
                       match=r"the gzip data inflates to more than 512.0 MiB \(max_voxels=67,108,864 at 8 "):
        read_volume(blob, reader=VolumeReader(limits=VolumeLimits(max_voxels=2**26)))
