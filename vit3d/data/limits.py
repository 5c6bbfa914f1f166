"""Checks made on an input file before any of its voxels are read: what it is, and what its header declares.

A hostile or broken file must cost a run nothing: a header that declares 2048^3 voxels, a gzip that inflates
a thousandfold, a named pipe that blocks whoever opens it, a file that ends early. So, before a reader
allocates anything:

1. :func:`check_path` stats the path (``os.stat`` never blocks, ``open`` on a FIFO does): not found, a FIFO,
   device or socket, a folder where a file is expected, permission denied, an empty file;
2. :func:`check_header` reads only the header (NIfTI through nibabel, which inflates just the first bytes of a
   ``.nii.gz``; NRRD and MetaImage text headers; DICOM with pydicom, pixel data deferred) and compares the
   bytes it declares with the file's size (an uncompressed file must hold them all; a compressed one may not
   claim more than ``max_compression_ratio`` times its size once it is large) and with ``max_voxels``;
3. a file whose content is not the format its name says (a text file, a PNG, a zip) is named as such.

Readers then inflate no more than the header declared (nibabel reads exactly that many bytes).
"""

from __future__ import annotations

import gzip
import math
import os
import re
import stat
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from vit3d.errors import ConfigError

from .common import MissingFileError, SampleError, SampleTooLargeError

__all__ = ["DEFAULT_MAX_VOXELS", "HeaderInfo", "VolumeLimits", "check_geometry", "check_header", "check_path",
           "describe_content", "format_of", "inflated_size"]

# 2^30 voxels are 4 GiB as float32; preprocessing holds two to four such copies, which fits a 24 GB machine.
DEFAULT_MAX_VOXELS = 2**30


@dataclass(frozen=True)
class VolumeLimits:
    """Limits an input volume is held to before it is read.

    Args:
        max_voxels: most voxels (times channels) a volume may declare; 2^30 (4 GiB as float32) by default.
        max_compression_ratio: most a compressed file may inflate (declared bytes / file bytes) once it
            declares more than ``ratio_checked_above`` bytes. Scans compress 2-10x; deflate cannot exceed
            about 1032x, which only near-constant data (a decompression bomb) reaches.
        ratio_checked_above: declared size in bytes from which the ratio is checked (label masks, mostly
            zeros, compress hundreds of times but are small).
        spacing_range: ``(low, high)`` voxel size in mm a volume's geometry must stay within.
    """

    max_voxels: int = DEFAULT_MAX_VOXELS
    max_compression_ratio: float = 100.0
    ratio_checked_above: int = 2**27
    spacing_range: tuple[float, float] = (1e-3, 100.0)

    def __post_init__(self) -> None:
        if self.max_voxels < 1 or self.max_compression_ratio <= 1:
            raise ConfigError(f"max_voxels={self.max_voxels} must be >= 1 and max_compression_ratio="
                             f"{self.max_compression_ratio} > 1")
        low, high = self.spacing_range
        if not 0 < low < high:
            raise ConfigError(f"spacing_range {self.spacing_range} must be (low, high) in mm with 0 < low < high")


@dataclass(frozen=True)
class HeaderInfo:
    """What a header declares: the format, the array shape (with channels), the bytes per value, where the
    voxels start and whether they are compressed."""

    format: str
    shape: tuple[int, ...]
    itemsize: int
    offset: int
    compressed: bool
    affine: Any = None

    @property
    def voxels(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.voxels * self.itemsize


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# ---------------------------------------------------------------------------------------------- the path


def check_path(path: str | os.PathLike, *, folder_ok: bool = False) -> os.stat_result:
    """Stat ``path`` and refuse what cannot be read as an image file, without opening it.

    Args:
        path: the file (or, with ``folder_ok``, a DICOM series folder).
        folder_ok: accept a folder.

    Raises:
        MissingFileError: nothing at ``path``.
        SampleError: a FIFO, character or block device, or socket; a folder (unless ``folder_ok``);
            permission denied; an empty file.
    """
    path = str(path)
    try:
        st = os.stat(path)  # follows symlinks; never blocks, even on a FIFO
    except FileNotFoundError:
        if os.path.islink(path):
            raise MissingFileError(path, f"broken symbolic link to {os.readlink(path)}",
                                   fix="point the link at an existing file") from None
        raise MissingFileError(path, "file not found", fix="check the path (relative paths are resolved against "
                                     "the CSV's folder or root=)") from None
    except PermissionError:
        raise SampleError(path, "permission denied (a folder on the path cannot be entered)",
                          fix="grant read access (chmod) or copy the file somewhere readable") from None
    mode = st.st_mode
    kinds = {stat.S_ISFIFO: "a named pipe (FIFO)", stat.S_ISCHR: "a character device",
             stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}
    for test, kind in kinds.items():
        if test(mode):
            raise SampleError(path, f"{kind}, not a regular file: it is refused without being opened (reading it "
                                    "could block or never end)", fix="point the row at the image file itself")
    if stat.S_ISDIR(mode):
        if not folder_ok:
            raise SampleError(path, "a folder where an image file is expected",
                              fix="point the row at a file (a folder is read only as a DICOM series)")
        if not os.access(path, os.R_OK | os.X_OK):
            raise SampleError(path, "permission denied: the folder cannot be listed",
                              fix="grant read access (chmod u+rx) or copy it somewhere readable")
        return st
    if not os.access(path, os.R_OK):
        raise SampleError(path, "permission denied", fix="grant read access (chmod u+r) or copy the file somewhere "
                                                         "readable")
    if st.st_size == 0:
        raise SampleError(path, "empty file (0 bytes)", fix="the file was not written completely; copy it again")
    return st


# ---------------------------------------------------------------------------------------------- content

_MAGIC = [  # (offset, bytes, format)
    (0, b"\x1f\x8b", "gzip"), (344, b"n+1\x00", "nifti"), (344, b"n+2\x00", "nifti"), (4, b"n+2\x00", "nifti"),
    (128, b"DICM", "dicom"), (0, b"NRRD", "nrrd"), (0, b"\x89PNG", "png"), (0, b"\xff\xd8\xff", "jpeg"),
    (0, b"PK\x03\x04", "zip"), (0, b"%PDF", "pdf"), (0, b"\x93NUMPY", "npy"), (0, b"BZh", "bzip2"),
    (0, b"\xfd7zXZ", "xz"), (0, b"\x28\xb5\x2f\xfd", "zstd"),
]


def _head(path: str, n: int = 1024) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def format_of(path: str | os.PathLike) -> str:
    """The format the first bytes of ``path`` show: ``gzip``, ``nifti``, ``dicom``, ``nrrd``, ``metaimage``,
    ``text``, another known binary format's name, or ``unknown``."""
    head = _head(str(path))
    if len(head) >= 348 and int.from_bytes(head[:4], "little") in (348, 540):
        for offset, magic, name in _MAGIC:
            if name == "nifti" and head[offset:offset + len(magic)] == magic:
                return "nifti"
    for offset, magic, name in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return name
    if re.match(rb"\s*(ObjectType|NDims|DimSize)\s*=", head):  # MetaImage: text header, binary data after it
        return "metaimage"
    return "text" if _as_text(head) is not None else "unknown"


def _as_text(head: bytes) -> str | None:
    if not head or b"\x00" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start >= len(head) - 3:  # a character cut by the read
            return head[: err.start].decode("utf-8")
        return None


def describe_content(path: str | os.PathLike) -> str:
    """What ``path`` holds, for an error message: ``a text file (starts 'id,label')``, ``a PNG image``, ..."""
    kind = format_of(path)
    if kind == "text":
        first = _as_text(_head(str(path), 64)) or ""
        first = first.strip().splitlines()[0][:40] if first.strip() else ""
        return f"a text file (it starts {first!r})"
    names = {"png": "a PNG image", "jpeg": "a JPEG image", "zip": "a zip archive (an .npz or .zip?)",
             "pdf": "a PDF document", "npy": "a NumPy .npy array", "bzip2": "bzip2-compressed data",
             "xz": "xz-compressed data", "zstd": "zstd-compressed data", "gzip": "gzip-compressed data",
             "nifti": "a NIfTI image", "dicom": "a DICOM file", "nrrd": "an NRRD image",
             "metaimage": "a MetaImage header"}
    if kind in names:
        return names[kind]
    return f"not a known image format (it starts with bytes {_head(str(path), 8).hex(' ')})"


def _expected_format(path: str) -> str | None:
    name = path.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".dcm", ".dicom")):
        return "dicom"
    if name.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    if name.endswith((".mha", ".mhd")):
        return "metaimage"
    return None


# ---------------------------------------------------------------------------------------------- headers


def _nifti_header(path: str, compressed: bool) -> HeaderInfo:
    import nibabel as nib

    if compressed:
        try:
            with gzip.open(path, "rb") as f:
                head = f.read(544)  # bounded: only the header is inflated
        except (OSError, EOFError, zlib.error) as exc:
            raise SampleError(path, f"corrupt gzip data ({exc})", fix="the file is damaged; copy it again") from None
        if len(head) < 348:
            raise SampleError(path, f"truncated: the gzip data ends after {len(head)} bytes, inside the NIfTI header",
                              fix="the file was not copied completely; copy it again")
        if head[344:348] not in (b"n+1\x00", b"ni1\x00") and head[4:8] not in (b"n+2\x00", b"ni2\x00"):
            raise SampleError(path, "not a NIfTI image: the gzip data holds no NIfTI header",
                              fix="point the row at the image file, or give the file its right extension")
    try:
        img = nib.load(path)  # reads the header only (a .nii.gz inflates just its first bytes)
    except Exception as exc:  # noqa: BLE001 - nibabel raises several types for a bad header; all are this file's
        if compressed and isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile, OSError)):
            raise SampleError(path, f"truncated or corrupt gzip data before the NIfTI header ends ({exc})",
                              fix="the file was not copied completely; copy it again") from None
        raise SampleError(path, f"not a readable NIfTI header ({type(exc).__name__}: {exc})",
                          fix="check that the file is a NIfTI-1/2 image") from None
    shape = tuple(int(s) for s in img.header.get_data_shape())
    if any(s < 0 for s in shape):
        raise SampleError(path, f"the header declares a negative size {shape}", fix="the header is corrupt")
    dtype = img.header.get_data_dtype()
    # nibabel's own choice (sform, else qform): MONAI's reader replaces an sform that disagrees with pixdim
    # (a NaN one, too) by the qform, which would hide a broken header.
    return HeaderInfo("nifti", shape, int(dtype.itemsize), int(img.dataobj.offset), compressed, img.affine)


_ITEMSIZE = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "signed char": 1, "unsigned char": 1, "short": 2,
             "ushort": 2, "int16": 2, "uint16": 2, "short int": 2, "unsigned short": 2, "int": 4, "uint": 4,
             "int32": 4, "uint32": 4, "signed int": 4, "unsigned int": 4, "float": 4, "long": 8, "ulong": 8,
             "int64": 8, "uint64": 8, "long long": 8, "double": 8, "long long int": 8,
             "unsigned long long": 8, "unsigned long long int": 8}


def _text_header(path: str, fmt: str) -> HeaderInfo:
    """NRRD (``key: value``) or MetaImage (``Key = Value``) header, which both end where the data begins."""
    head = _head(path, 1 << 16)
    fields: dict[str, str] = {}
    offset = None
    sep = ":" if fmt == "nrrd" else "="
    pos = 0
    for line in head.split(b"\n"):
        end = pos + len(line) + 1
        text = line.decode("latin-1").strip()
        if fmt == "nrrd" and pos > 0 and text == "":
            offset = end
            break
        if sep in text and not text.startswith("#"):
            key, value = text.split(sep, 1)
            fields[key.strip().lower()] = value.strip()
        if fmt == "metaimage" and text.lower().startswith("elementdatafile"):
            offset = end
            break
        pos = end
    try:
        if fmt == "nrrd":
            shape = tuple(int(v) for v in fields["sizes"].split())
            itemsize = _ITEMSIZE[fields["type"].lower()]
            compressed = fields.get("encoding", "raw").lower() not in ("raw",)
            detached = "data file" in fields or "datafile" in fields
        else:
            shape = tuple(int(v) for v in fields["dimsize"].split())
            shape += (int(fields.get("elementnumberofchannels", 1)),)
            itemsize = {"met_char": 1, "met_uchar": 1, "met_short": 2, "met_ushort": 2, "met_int": 4,
                        "met_uint": 4, "met_float": 4, "met_long": 8, "met_ulong": 8, "met_long_long": 8,
                        "met_ulong_long": 8, "met_double": 8}[fields["elementtype"].lower()]
            compressed = fields.get("compresseddata", "false").lower() == "true"
            detached = fields.get("elementdatafile", "LOCAL").upper() != "LOCAL"
    except (KeyError, ValueError) as exc:
        name = "NRRD" if fmt == "nrrd" else "MetaImage"
        raise SampleError(path, f"not a readable {name} header (field {exc} missing or malformed)",
                          fix="check that the file is a complete image header") from None
    if any(s < 0 for s in shape):
        raise SampleError(path, f"the header declares a negative size {shape}", fix="the header is corrupt")
    return HeaderInfo(fmt, shape, itemsize, -1 if detached or offset is None else offset, compressed)


def _dicom_header(path: str) -> HeaderInfo:
    import pydicom

    try:
        ds = pydicom.dcmread(path, defer_size=1024)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for a damaged file
        raise SampleError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})",
                          fix="check that the file is a complete DICOM image") from None
    if "PixelData" not in ds:
        raise SampleError(path, "a DICOM file without pixel data (e.g. a report or a DICOMDIR)",
                          fix="point the row at an image series")
    shape = (int(getattr(ds, "NumberOfFrames", 1) or 1), int(ds.Rows), int(ds.Columns),
             int(getattr(ds, "SamplesPerPixel", 1) or 1))
    itemsize = max(1, int(getattr(ds, "BitsAllocated", 16)) // 8)
    compressed = ds.file_meta.TransferSyntaxUID.is_compressed if hasattr(ds, "file_meta") else False
    raw = ds.get_item("PixelData")
    offset = int(getattr(raw, "value_tell", -1) or -1)
    return HeaderInfo("dicom", shape, itemsize, offset if not compressed else -1, compressed)


def check_header(path: str | os.PathLike, limits: VolumeLimits, *, file_size: int | None = None) -> HeaderInfo | None:
    """Read what ``path``'s header declares and refuse it before its voxels are read.

    Returns:
        The header, or None for a format without a header this function knows (the reader decides).

    Raises:
        SampleTooLargeError: more voxels than ``limits.max_voxels``, or a compression ratio beyond
            ``limits.max_compression_ratio``.
        SampleError: content that is not the format the name says (a text file, another format), a header
            that cannot be read, or fewer bytes in the file than the header declares (truncated).
    """
    path = str(path)
    size = os.stat(path).st_size if file_size is None else file_size
    expected = _expected_format(path)
    found = format_of(path)
    compressed = False
    if expected == "nifti" and found == "gzip":
        compressed = True
    elif expected is not None and found != expected:
        raise SampleError(path, f"not a {expected.upper() if expected != 'metaimage' else 'MetaImage'} file: it "
                                f"is {describe_content(path)}",
                          fix="point the row at the image file, or give the file its right extension")
    elif expected is None:
        if found in ("nifti", "dicom", "nrrd", "metaimage"):
            expected = found
        elif found == "gzip":  # no header to read before inflating: inflate with a cap, in constant memory
            cap = limits.max_voxels * 8
            if inflated_size(path, cap) > cap:
                raise SampleTooLargeError(path, f"the gzip data inflates to more than {_size(cap)} (max_voxels="
                                                f"{limits.max_voxels:,} at 8 bytes each)",
                                          fix="crop or downsample the file, or raise max_voxels")
            return None
        elif found == "unknown":
            return None  # e.g. a format SimpleITK knows; its reader decides
        else:
            raise SampleError(path, f"not an image: it is {describe_content(path)}",
                              fix="point the row at a NIfTI, NRRD, MHA or DICOM image")
    if expected == "nifti":
        info = _nifti_header(path, compressed)
    elif expected == "dicom":
        info = _dicom_header(path)
    else:
        info = _text_header(path, expected)
    check_declared(path, info, size, limits)
    if info.affine is not None:
        check_geometry(path, info.affine, limits)
    return info


def check_declared(path: str, info: HeaderInfo, file_size: int, limits: VolumeLimits) -> None:
    """Compare the declared voxels and bytes of ``info`` with ``limits`` and the file's size."""
    shape = "x".join(str(s) for s in info.shape)
    if info.voxels > limits.max_voxels:
        raise SampleTooLargeError(path, f"the header declares {shape} = {info.voxels:,} voxels "
                                        f"({_size(info.voxels * 4)} as float32), more than max_voxels="
                                        f"{limits.max_voxels:,}",
                                  fix="crop or downsample the file, or raise max_voxels if the machine has the "
                                      "memory")
    if info.compressed:
        ratio = info.nbytes / max(file_size, 1)
        if info.nbytes > limits.ratio_checked_above and ratio > limits.max_compression_ratio:
            raise SampleTooLargeError(path, f"the header declares {_size(info.nbytes)} of voxels in a "
                                            f"{_size(file_size)} compressed file: {ratio:,.0f} times its size, "
                                            f"more than max_compression_ratio={limits.max_compression_ratio:g} "
                                            "(a decompression bomb, or near-constant data)",
                                      fix="if the file is genuine, raise max_compression_ratio")
    elif info.offset >= 0 and info.offset + info.nbytes > file_size:
        raise SampleError(path, f"truncated: the header declares {shape} voxels of {info.itemsize} byte(s), "
                                f"{info.nbytes:,} bytes from offset {info.offset}, but the file holds "
                                f"{file_size:,} bytes",
                          fix="the file was not copied completely; copy it again")


def check_geometry(path: str, affine: Any, limits: VolumeLimits) -> None:
    """Refuse a voxel-to-world affine that is not finite, is singular, or has voxel sizes out of range.

    Raises:
        SampleError: naming ``path``, the matrix's problem and the voxel sizes.
    """
    if hasattr(affine, "detach"):  # a torch tensor (MONAI MetaTensor): to numpy without the __array__ protocol
        affine = affine.detach().cpu().numpy()
    a = np.array(affine, dtype=np.float64)
    fix = "repair the header's geometry (e.g. nibabel: img.set_sform(affine); or SimpleITK SetSpacing)"
    if not np.isfinite(a).all():
        raise SampleError(path, "bad geometry: the affine (voxel-to-world matrix) holds NaN or infinite values",
                          fix=fix)
    m = a[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    shown = "(" + ", ".join(f"{v:.4g}" for v in spacing) + ") mm"
    if not m.any():
        raise SampleError(path, "bad geometry: the affine is all zeros (voxels without size or direction)", fix=fix)
    if spacing.min() == 0 or abs(np.linalg.det(m)) <= 1e-6 * float(np.prod(spacing)):
        raise SampleError(path, f"bad geometry: the affine is singular (determinant {np.linalg.det(m):.3g}, voxel "
                                f"sizes {shown}): its axes do not span 3D space", fix=fix)
    low, high = limits.spacing_range
    if spacing.min() < low or spacing.max() > high:
        raise SampleError(path, f"bad geometry: voxel sizes {shown} outside spacing_range [{low:g}, {high:g}] mm",
                          fix="fix the header's voxel size (e.g. metres or microns written as mm), or widen "
                              "spacing_range")


def inflated_size(path: str | os.PathLike, cap: int, chunk: int = 1 << 20) -> int:
    """Bytes a gzip file inflates to, streamed in ``chunk``-sized pieces and stopped past ``cap``.

    Memory stays at one chunk whatever the file holds; returns ``cap + 1`` as soon as more than ``cap`` bytes
    came out.

    Raises:
        SampleError: the gzip stream is corrupt or ends early (truncated).
    """
    total = 0
    try:
        with gzip.open(str(path), "rb") as f:
            while True:
                block = f.read(chunk)
                if not block:
                    return total
                total += len(block)
                if total > cap:
                    return cap + 1
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise SampleError(str(path), f"truncated or corrupt gzip data after {total:,} inflated bytes ({exc})",
                          fix="the file was not copied completely; copy it again") from None


def check_inflated(path: str | os.PathLike, info: HeaderInfo) -> None:
    """Stream-inflate a compressed NIfTI (bounded by what its header declares) and refuse it when it ends early
    or holds more than declared. Reads the whole file once, in constant memory."""
    need = info.offset + info.nbytes
    got = inflated_size(path, cap=need + (1 << 20))
    if got < need:
        raise SampleError(str(path), f"truncated: the header declares {info.nbytes:,} bytes of voxels from offset "
                                     f"{info.offset}, but the gzip stream inflates to {got:,} bytes",
                          fix="the file was not copied completely; copy it again")
