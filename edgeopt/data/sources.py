"""Arrays read on demand: a ``Dataset``'s inputs are sources of rows (axis 0), not arrays in memory.

A source knows its shape and dtype without reading its data and reads rows when asked:
``read(start, stop)`` and ``take(index)`` return fresh arrays (or read-only views of memory the source
already holds), so a pass over a calibration set of any size has one chunk alive at a time
(``row_chunks``). ``np.asarray(source)`` reads it whole, for callers that really want that.

- ``MemorySource``: an array a Python caller handed over (``Dataset.from_arrays``);
- ``FileRows``: raw C-order rows at an offset of a file (an .npy file, an uncompressed .npz member, a
  compressed member unpacked into a ``Scratch`` folder), read with seek + readinto into a fresh buffer.
  Not mmap: the pages a memory map touches count in the process's RSS and stay there;
- ``ConcatSource`` (a folder of files), ``RowsSource`` (a subset: take, split, the first N),
  ``CastSource`` (the model's dtype, converted per read) and ``images.ImageSource`` (decoded per read).

Files are opened per read (a folder of thousands of .npy files never holds thousands of descriptors) and
checked against the identity they had when loaded, so a file rewritten during a run is refused instead
of silently feeding data the content hash never saw.
"""

from __future__ import annotations

import os
import shutil
import weakref
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeopt.errors import InputError
from edgeopt.fsutil import owned_temp_dir

# Rows per pass (hashing, value checks, statistics) are sized to this many bytes: the pass's memory.
SCAN_BYTES = 16 * 2**20


class ArraySource:
    """Rows along axis 0 of an array that need not be in memory (see the module doc)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def row_nbytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array source")
        return self.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (0 <= start <= stop <= len)."""
        raise NotImplementedError

    def take(self, index: np.ndarray) -> np.ndarray:
        """The rows at ``index`` (non-negative, in range), in that order."""
        raise NotImplementedError

    def read_all(self) -> np.ndarray:
        return self.read(0, self.shape[0])

    def reshape(self, *shape) -> ArraySource:
        raise NotImplementedError(f"{type(self).__name__} cannot be reshaped")

    def __getitem__(self, key) -> np.ndarray:
        """Rows by int, slice or integer sequence; a tuple indexes the rows read by its first item."""
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            row = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= row < len(self):
                raise IndexError(f"index {int(key)} is out of range for {len(self)} rows")
            rows = self.read(row, row + 1)[0]
        elif isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            rows = self.read(start, max(start, stop)) if step == 1 else self.take(np.arange(start, stop, step))
        else:
            index = np.asarray(key)
            if index.ndim != 1 or (index.size and index.dtype.kind not in "iu"):
                raise IndexError("array sources take ints, slices or flat integer sequences")
            index = np.where(index < 0, index + len(self), index).astype(np.intp)
            if index.size and (index.min() < 0 or index.max() >= len(self)):
                raise IndexError(f"index out of range for {len(self)} rows")
            rows = self.take(index)
        return rows[rest] if rest else rows

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self.read_all()
        if dtype is not None:
            return whole.astype(dtype, copy=bool(copy))
        return whole.copy() if copy else whole  # a memory source's read_all is its own (read-only) array

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype.name})"


def row_chunks(source: ArraySource | np.ndarray, budget: int | None = None) -> Iterator[np.ndarray]:
    """``source`` in consecutive row chunks of about ``budget`` bytes (default ``SCAN_BYTES``). The
    generator keeps no reference to a chunk once it is handed out, so a consumer that drops it holds
    one chunk at a time."""
    if not isinstance(source, ArraySource):
        source = MemorySource(np.asarray(source))
    if source.ndim == 0:
        yield source.read_all()
        return
    rows = max(1, (budget or SCAN_BYTES) // max(1, source.row_nbytes))
    for start in range(0, source.shape[0], rows):
        yield source.read(start, min(start + rows, source.shape[0]))


def frozen(array: np.ndarray) -> np.ndarray:
    """``array`` C-contiguous and read-only: made so in place when it already is contiguous (the caller
    hands it over; a content hash of it stays true)."""
    array = np.ascontiguousarray(array)
    array.flags.writeable = False
    return array


class MemorySource(ArraySource):
    """An in-memory array: reads are read-only views (rows) or copies (take)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.shape, self.dtype = tuple(int(d) for d in array.shape), array.dtype

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]

    def take(self, index: np.ndarray) -> np.ndarray:
        return frozen(self.array[index])

    def read_all(self) -> np.ndarray:
        return self.array

    def reshape(self, *shape) -> MemorySource:
        return MemorySource(self.array.reshape(*shape))


# -- files ------------------------------------------------------------------------------------------


class Scratch:
    """A private temporary folder for files made while reading data (unpacked .npz members, arrays
    rewritten in C order). It is created on first use and removed by ``close``, when nothing uses it
    any more, or at exit. Files in it are named by number, never after anything read from the data."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self._count = 0
        self._remove: weakref.finalize | None = None

    def new_file(self, suffix: str = ".bin") -> Path:
        if self.path is None:
            self.path = owned_temp_dir("edgeopt-data-")  # a killed run's is swept by the next
            self._remove = weakref.finalize(self, shutil.rmtree, str(self.path), True)
        if self.closed:
            raise ValueError("this dataset was closed")
        self._count += 1
        return self.path / f"{self._count}{suffix}"

    @property
    def closed(self) -> bool:
        return self._remove is not None and not self._remove.alive

    def close(self) -> None:
        if self._remove is not None:
            self._remove()


@dataclass(frozen=True)
class FileIdentity:
    """What a file was when it was loaded; reads refuse a file that has changed since."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, stat: os.stat_result) -> FileIdentity:
        return cls(stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def open_unchanged(path: Path, identity: FileIdentity | None, label: str):
    """``path`` opened for reading, refused when it is no longer the file that was loaded."""
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise InputError(f"cannot read {label} any more ({exc.strerror or exc})",
                         "keep the data files in place until the run ends") from None
    if identity is not None and FileIdentity.of(os.fstat(handle.fileno())) != identity:
        handle.close()
        raise InputError(f"{label} changed on disk after it was read",
                         "keep the data files unchanged until the run ends, then run again")
    return handle


def read_into(handle, out: np.ndarray, label: str) -> None:
    """Fill the C-contiguous ``out`` from ``handle``'s position, refusing a short file."""
    view = memoryview(out.reshape(-1).view(np.uint8))
    done = 0
    while done < len(view):
        got = handle.readinto(view[done:])
        if not got:
            raise InputError(f"{label} ended early: it is shorter than its header says",
                             "re-save it with numpy (np.save / np.savez)")
        done += got


class CrcCheck:
    """The CRC-32 of an uncompressed .npz member, checked as the first full pass in order reads it
    (numpy checked it when it read the member whole; here that pass costs nothing extra)."""

    def __init__(self, expected: int, head: bytes, data_start: int, data_stop: int, tail: Callable[[], bytes],
                 fail: Callable[[], InputError]) -> None:
        self.expected, self.crc = expected, zlib.crc32(head)
        self.cursor, self.stop = data_start, data_stop
        self.tail, self.fail = tail, fail
        self.done = False

    def feed(self, position: int, data: np.ndarray) -> None:
        if self.done or position != self.cursor:
            return
        self.crc = zlib.crc32(memoryview(data.reshape(-1).view(np.uint8)), self.crc)
        self.cursor += data.nbytes
        if self.cursor >= self.stop:
            self.done = True
            if zlib.crc32(self.tail(), self.crc) != self.expected:
                raise self.fail()


class FileRows(ArraySource):
    """C-order rows of ``dtype`` at ``offset`` in ``path`` (the .npy header already read)."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype, *, label: str,
                 identity: FileIdentity | None, scratch: Scratch | None = None, crc: CrcCheck | None = None) -> None:
        self.path, self.offset, self.label = path, offset, label
        self.shape, self.dtype = tuple(int(d) for d in shape), np.dtype(dtype)
        self.identity, self.scratch, self.crc = identity, scratch, crc

    def _open(self):
        if self.scratch is not None and self.scratch.closed:
            raise ValueError("this dataset was closed")
        return open_unchanged(self.path, self.identity, self.label)

    def read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, *self.shape[1:]), self.dtype)
        if out.nbytes:
            position = self.offset + start * self.row_nbytes
            with self._open() as handle:
                handle.seek(position)
                read_into(handle, out, self.label)
            if self.crc is not None:
                self.crc.feed(position, out)
        return out

    def take(self, index: np.ndarray) -> np.ndarray:
        out = np.empty((len(index), *self.shape[1:]), self.dtype)
        if not out.nbytes:
            return out
        # one seek per run of consecutive rows: a sorted subset reads like a slice
        breaks = np.flatnonzero(np.diff(index) != 1) + 1
        with self._open() as handle:
            for first, last in zip(np.concatenate(([0], breaks)), np.concatenate((breaks, [len(index)]))):
                handle.seek(self.offset + int(index[first]) * self.row_nbytes)
                read_into(handle, out[first:last], self.label)
        return out

    def read_all(self) -> np.ndarray:
        if self.shape:
            return self.read(0, self.shape[0])
        out = np.empty((), self.dtype)
        with self._open() as handle:
            handle.seek(self.offset)
            read_into(handle, out, self.label)
        return out

    def reshape(self, *shape) -> FileRows:
        """The same bytes seen with another shape (C order: any shape of the same size has whole rows)."""
        shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], tuple) else tuple(shape)
        if int(np.prod(shape, dtype=np.int64)) != self.size:
            raise ValueError(f"cannot reshape {self.shape} to {shape}")
        return FileRows(self.path, self.offset, shape, self.dtype, label=self.label, identity=self.identity,
                        scratch=self.scratch, crc=self.crc if shape[:1] == self.shape[:1] else None)


# -- composites -------------------------------------------------------------------------------------


class ConcatSource(ArraySource):
    """Sources joined along axis 0 (a folder of files in file-name order), promoted like np.concatenate."""

    def __init__(self, parts: list[ArraySource]) -> None:
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])
        self.shape = (int(self.starts[-1]), *parts[0].shape[1:])
        self.dtype = np.result_type(*[p.dtype for p in parts])

    def read(self, start: int, stop: int) -> np.ndarray:
        pieces = []
        for number, part in enumerate(self.parts):
            low, high = max(start, int(self.starts[number])), min(stop, int(self.starts[number + 1]))
            if low < high:
                pieces.append(part.read(low - int(self.starts[number]), high - int(self.starts[number])))
        if not pieces:
            return np.empty((0, *self.shape[1:]), self.dtype)
        return (pieces[0] if len(pieces) == 1 else np.concatenate(pieces)).astype(self.dtype, copy=False)

    def take(self, index: np.ndarray) -> np.ndarray:
        out = np.empty((len(index), *self.shape[1:]), self.dtype)
        owner = np.searchsorted(self.starts, index, side="right") - 1
        for number in np.unique(owner):
            where = np.flatnonzero(owner == number)
            out[where] = self.parts[number].take(index[where] - self.starts[number])
        return out


class RowsSource(ArraySource):
    """Some rows of ``base``: a subset in a given order (take, split), or a ``range`` of step 1."""

    def __init__(self, base: ArraySource, index: np.ndarray | range) -> None:
        self.base, self.index = base, index
        self.shape, self.dtype = (len(index), *base.shape[1:]), base.dtype

    def read(self, start: int, stop: int) -> np.ndarray:
        if isinstance(self.index, range):  # step 1: still one read
            return self.base.read(self.index.start + start, self.index.start + stop)
        return self.base.take(self.index[start:stop])

    def take(self, index: np.ndarray) -> np.ndarray:
        rows = np.asarray(self.index)[index] if not isinstance(self.index, range) \
            else np.asarray(index) + self.index.start
        return self.base.take(rows)


class CastSource(ArraySource):
    """``base`` converted to ``dtype`` per read, by ``convert`` (values.convert: the checked cast)."""

    def __init__(self, base: ArraySource, dtype: np.dtype, convert: Callable[[np.ndarray, np.dtype], np.ndarray]):
        self.base, self.convert = base, convert
        self.shape, self.dtype = base.shape, np.dtype(dtype)

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.convert(self.base.read(start, stop), self.dtype)

    def take(self, index: np.ndarray) -> np.ndarray:
        return self.convert(self.base.take(index), self.dtype)
