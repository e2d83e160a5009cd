"""Atomic file output: write to a temp file in the destination folder, then rename.

A crash or Ctrl-C mid-write leaves at worst a hidden temp file, never a half-written
output under the final name. Work folders are named after the process that made them, so the next
run sweeps the ones a killed process left (``owned_temp_dir``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeopt.errors import InputError, OutputError

_CHUNK = 1 << 20


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temp path beside ``final``; rename it over ``final`` only on success."""
    final = Path(final)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual file mode
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # flush to disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(final: Path, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(final: Path, text: str) -> None:
    write_bytes_atomic(final, text.encode("utf-8"))


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and prove we can write into it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output path {path} exists and is not a folder", "give -o a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".edgeopt-write-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(
            f"cannot write to output folder {path}: {exc.strerror or exc}",
            "choose a folder you can write to with -o",
        ) from None
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def gzip_size(paths: list[Path], level: int = 6) -> int:
    """Bytes of the files gzip-compressed back to back (what an OTA update ships)."""
    total = 0
    for path in paths:
        compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits=31: gzip container
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                total += len(compressor.compress(chunk))
        total += len(compressor.flush())
    return total


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def read_json(path: Path, what: str, hint: str) -> Any:
    """A JSON file's contents; every way it can be unreadable is one InputError (exit 2) with ``hint``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}", hint) from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a {what} file", hint) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what} {path}: {exc}", hint) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", hint) from None


# -- work folders a killed run leaves behind --------------------------------------------------------------------
# A SIGKILL or a power cut runs none of our clean-up, and a run's work folder holds every intermediate model (in
# OUT) or every unpacked calibration array (in the system temp folder). Such folders are named after the process
# that made them, so the next run that makes one beside them removes those whose process is gone.
KEPT_MARKER = ".kept"  # a folder kept on purpose (`--keep-failed`) is never swept


def _host_tag() -> str:
    import socket

    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine still runs (someone else's, or one we cannot tell: yes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process (PermissionError), or nothing we can tell: leave it
    return True


def sweep_orphans(prefix: str, folder: Path | None = None) -> None:
    """Remove the folders ``owned_temp_dir(prefix, folder)`` made in processes of this machine that no longer run
    (unless kept on purpose). Folders of other machines (a shared output folder) and of live processes are left
    alone."""
    import shutil

    base = Path(folder) if folder is not None else Path(tempfile.gettempdir())
    try:
        entries = list(base.glob(prefix + "*"))
    except OSError:
        return
    host = _host_tag()
    for entry in entries:
        owner = entry.name[len(prefix):].split("-", 1)[0]
        pid, _, tag = owner.partition(".")
        if not (pid.isdigit() and tag == host and entry.is_dir() and not entry.is_symlink()):
            continue
        if process_alive(int(pid)) or (entry / KEPT_MARKER).exists():
            continue
        shutil.rmtree(entry, ignore_errors=True)


def owned_temp_dir(prefix: str, folder: Path | None = None) -> Path:
    """A new private folder (mkdtemp) named after this process and machine, in ``folder`` (default: the system
    temp folder), after sweeping the ones killed processes left there."""
    sweep_orphans(prefix, folder)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}.{_host_tag()}-", dir=folder))


@contextlib.contextmanager
def temporary_folder(prefix: str, folder: Path | None = None) -> Iterator[Path]:
    """``owned_temp_dir``, removed when the block ends (as ``tempfile.TemporaryDirectory``; a killed process's
    is swept by the next one that makes a folder with the same prefix)."""
    import shutil

    path = owned_temp_dir(prefix, folder)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
