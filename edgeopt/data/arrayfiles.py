""".npy files and .npz archives opened without loading them: headers read, rows located, nothing unpickled.

``open_npy`` and ``open_npz`` return ``FileRows`` sources (data.sources) after reading only headers.
An object dtype is refused from its header, so a pickle is never even read. An uncompressed .npz member
(``np.savez``) is read in place, at its offset in the archive. A compressed one (``np.savez_compressed``)
cannot be read from the middle, so it is unpacked once, streaming, into the dataset's ``Scratch``
folder under a number (a member's name is untrusted and never becomes a path). An array saved in
Fortran order is rewritten there in C order, one pass, so that its samples are whole rows.

The refusals say what numpy said when these files were loaded whole (``np.load``): same lines, same
causes, found from headers and sizes before any data is read.
"""

from __future__ import annotations

import os
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from edgeopt.data.sources import SCAN_BYTES, CrcCheck, FileIdentity, FileRows, Scratch
from edgeopt.errors import InputError

_NPY_MAGIC = b"\x93NUMPY"
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # a zip member's local file header (zipfile's layout)
_COPY_BYTES = 2**20


def pickle_refused(path: Path) -> InputError:
    return InputError(
        f"{path.name} holds pickled (object) arrays, which are refused: loading them could run arbitrary code",
        "save plain numeric arrays (np.savez(path, **{input_name: array}) with a numeric dtype)",
    )


def corrupt(path: Path, kind: str, exc: BaseException | str) -> InputError:
    return InputError(f"{path.name} is not a readable {kind} file ({exc})",
                      f"re-save it with numpy ({'np.savez' if kind == '.npz' else 'np.save'})")


def sniff(path: Path, kind: str) -> bytes:
    """Refuse files that are neither .npy nor zip before looking further; return the first bytes."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(6)
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror or exc})", "check the path and its permissions") from None
    if head.startswith((_NPY_MAGIC, b"PK")):
        return head
    if head[:1] == b"\x80" or head[:1] in (b"(", b"]", b"}"):  # pickle protocol 2+ / protocol 0-1 openers
        raise pickle_refused(path)
    raise InputError(f"{path.name} is not a numpy {kind} file",
                     f"save it with numpy ({'np.savez' if kind == '.npz' else 'np.save'})")


def _header(handle, path: Path, kind: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from an .npy header at ``handle``'s position; pickles refused."""
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version in ((2, 0), (3, 0)):  # 3.0 differs only in utf-8 field names: a dtype refused anyway
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"we only support format version (1,0), (2,0), and (3,0), not {version}")
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as exc:
        raise corrupt(path, kind, exc) from None
    if dtype.hasobject:
        raise pickle_refused(path)
    return tuple(int(d) for d in shape), bool(fortran), dtype


def _needed(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def _short_member(path: Path, needed: int, available: int, itemsize: int) -> InputError:
    """numpy's refusal of a member shorter than its header says: it read such members in chunks of
    BUFFER_SIZE and named the chunk that came up short."""
    chunk = np.lib.format.BUFFER_SIZE // min(np.lib.format.BUFFER_SIZE, itemsize) * itemsize
    done = available // chunk * chunk
    return corrupt(path, ".npz", f"EOF: reading array data, expected {min(chunk, needed - done)} bytes "
                                 f"got {available - done}")


def open_npy(path: Path, scratch: Scratch) -> FileRows:
    """An .npy file as rows; refusals as ``np.load`` gave them."""
    head = sniff(path, ".npy")
    if head.startswith(b"PK"):
        raise InputError(f"{path.name} is an .npz archive, not an .npy array", "rename it to .npz")
    with open(path, "rb") as handle:
        shape, fortran, dtype = _header(handle, path, ".npy")
        offset, identity = handle.tell(), FileIdentity.of(os.fstat(handle.fileno()))
    needed = _needed(shape, dtype)
    if dtype.itemsize and identity.size - offset < needed:
        count = int(np.prod(shape, dtype=np.int64))
        raise corrupt(path, ".npy", f"Failed to read all data for array. Expected {shape} = {count} elements, "
                                    f"could only read {(identity.size - offset) // dtype.itemsize} elements. "
                                    "(file seems not fully written?)")
    rows = FileRows(path, offset, shape, dtype, label=path.name, identity=identity)
    return _c_order(rows, shape, scratch) if fortran and len(shape) > 1 else rows


def open_npz(path: Path, scratch: Scratch) -> dict[str, FileRows]:
    """The arrays of an .npz archive by key (member name without .npy), as numpy named them."""
    head = sniff(path, ".npz")
    if head.startswith(_NPY_MAGIC):
        raise InputError(f"{path.name} is a single .npy array, not an .npz archive",
                         "rename it to .npy, or save an .npz keyed by input name with np.savez")
    try:
        with open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
            identity = FileIdentity.of(os.fstat(handle.fileno()))
            names = list(dict.fromkeys(archive.namelist()))  # a repeated name reads its last entry, as numpy did
            return {name.removesuffix(".npy"):
                    _member(archive, handle, archive.getinfo(name), path, identity, scratch) for name in names}
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError) as exc:
        raise corrupt(path, ".npz", exc) from None


def _member(archive: zipfile.ZipFile, handle, info: zipfile.ZipInfo, path: Path, identity: FileIdentity,
            scratch: Scratch) -> FileRows:
    key = info.filename.removesuffix(".npy")
    with archive.open(info) as member:  # validates the local header against the directory
        if member.read(len(_NPY_MAGIC)) != _NPY_MAGIC:
            raise InputError(f"{path.name}: member {key!r} is not a numpy array",
                             "save the archive with np.savez / np.savez_compressed")
        member.seek(0)
        shape, fortran, dtype = _header(member, path, ".npz")
        header_length = member.tell()
        needed = _needed(shape, dtype)
        available = info.file_size - header_length
        if dtype.itemsize and available < needed:
            raise _short_member(path, needed, available, dtype.itemsize)
        if info.compress_type == zipfile.ZIP_STORED:
            rows = _stored(handle, info, path, identity, shape, dtype, header_length, needed)
        else:
            rows = _unpacked(member, path, scratch, shape, dtype, needed)
    return _c_order(rows, shape, scratch) if fortran and len(shape) > 1 else rows


def _stored(handle, info: zipfile.ZipInfo, path: Path, identity: FileIdentity, shape: tuple[int, ...],
            dtype: np.dtype, header_length: int, needed: int) -> FileRows:
    """An uncompressed member's rows, in place: its data starts after the local header's name and extra."""
    handle.seek(info.header_offset)
    local = _LOCAL_HEADER.unpack(handle.read(_LOCAL_HEADER.size))
    start = info.header_offset + _LOCAL_HEADER.size + local[10] + local[11]
    handle.seek(start)
    head = handle.read(header_length)
    data_start = start + header_length
    member_stop = start + info.file_size

    def tail() -> bytes:  # bytes after the array inside the member (none from numpy), for the CRC
        with open(path, "rb") as again:
            again.seek(data_start + needed)
            return again.read(member_stop - data_start - needed)

    crc = CrcCheck(info.CRC, head, data_start, data_start + needed, tail,
                   lambda: corrupt(path, ".npz", f"Bad CRC-32 for file {info.filename!r}"))
    return FileRows(path, data_start, shape, dtype, label=path.name, identity=identity, crc=crc)


def _unpacked(member, path: Path, scratch: Scratch, shape: tuple[int, ...], dtype: np.dtype,
              needed: int) -> FileRows:
    """A compressed member's array data copied, streaming, to a scratch file (read to its end, so that
    zipfile checks its CRC)."""
    target = scratch.new_file(".raw")
    _check_room(target, needed, path)
    left = needed
    try:
        with open(target, "wb") as out:
            while True:
                block = member.read(_COPY_BYTES)
                if not block:
                    break
                kept = block[:max(left, 0)]  # bytes past the array (none from numpy) are read, not kept
                out.write(kept)
                left -= len(kept)
    except OSError as exc:
        raise InputError(f"cannot unpack {path.name} into a temporary folder ({exc.strerror or exc})",
                         "free space where TMPDIR points, or save the data uncompressed with np.savez") from None
    return FileRows(target, 0, shape, dtype, label=path.name, identity=FileIdentity.of(os.stat(target)),
                    scratch=scratch)


def _check_room(target: Path, needed: int, path: Path) -> None:
    """Refuse before writing when the temporary folder cannot hold ``needed`` bytes (a header may promise
    far more than the archive's size)."""
    free = shutil.disk_usage(target.parent).free
    if needed > free:
        raise InputError(f"reading {path.name} needs {needed} bytes of temporary space but {target.parent.parent} "
                         f"has {free} free", "point TMPDIR at a folder with room, or save the data uncompressed "
                                             "(np.savez) and C-contiguous")


def _c_order(rows: FileRows, shape: tuple[int, ...], scratch: Scratch) -> FileRows:
    """A Fortran-order array (``rows`` holds its bytes: its transpose, in C order) rewritten in C order in
    two streaming passes: chunks of the transpose's rows (element j of every sample) are spread to the
    samples they belong to, giving each sample in reversed axis order; then each sample is transposed."""
    samples, per_sample, itemsize = shape[0], int(np.prod(shape[1:], dtype=np.int64)), rows.dtype.itemsize
    reversed_sample = shape[1:][::-1]
    # read in order from the start, so that a stored member's CRC is checked on the way
    flat = FileRows(rows.path, rows.offset, (per_sample, samples), rows.dtype, label=rows.label,
                    identity=rows.identity, scratch=rows.scratch, crc=rows.crc)
    spread, target = scratch.new_file(".raw"), scratch.new_file(".raw")
    _check_room(target, 2 * per_sample * samples * itemsize, Path(rows.label))
    step = max(1, SCAN_BYTES // max(1, samples * itemsize))
    try:
        with open(spread, "wb") as out:
            out.truncate(per_sample * samples * itemsize)
            for first in range(0, per_sample, step):
                piece = np.ascontiguousarray(flat.read(first, min(first + step, per_sample)).T)  # samples x step
                for sample in range(samples):
                    out.seek((sample * per_sample + first) * itemsize)
                    out.write(piece[sample].data)
                del piece
        by_sample = FileRows(spread, 0, (samples, *reversed_sample), rows.dtype, label=rows.label,
                             identity=None, scratch=scratch)
        axes = (0, *range(len(shape) - 1, 0, -1))
        with open(target, "wb") as out:
            chunk_rows = max(1, SCAN_BYTES // max(1, per_sample * itemsize))
            for first in range(0, samples, chunk_rows):
                out.write(np.ascontiguousarray(by_sample.read(first, min(first + chunk_rows, samples))
                                               .transpose(axes)).tobytes())
        spread.unlink()
    except OSError as exc:
        raise InputError(f"cannot rewrite {rows.label} in C order in a temporary folder ({exc.strerror or exc})",
                         "free space where TMPDIR points, or save the array C-contiguous") from None
    return FileRows(target, 0, shape, rows.dtype, label=rows.label, identity=FileIdentity.of(os.stat(target)),
                    scratch=scratch)
