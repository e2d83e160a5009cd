"""A real PostgreSQL server for the shared-study tests: Debian's postgresql package (`.ci/run` installs it),
a fresh cluster in a temporary folder, started and stopped by the fixture (trust authentication on 127.0.0.1).

Without the server binaries these tests are skipped locally and fail under CI."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("optuna")


@dataclass
class Postgres:
    url: str
    folder: Path


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    binaries = _binaries()
    if binaries is None:
        message = "PostgreSQL server binaries not found (apt-get install postgresql)"
        if os.environ.get("CI"):  # .ci/run installs it: a skip there would hide a broken install step
            pytest.fail(message)
        pytest.skip(message)
    # the server refuses to run as root: as root, run it as Debian's postgres user, in a folder it can reach
    # (pytest's temporary folders are private to root)
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="edgeopt-postgres-"))
    data = folder / "data"
    if as_user:
        shutil.chown(folder, "postgres")
    initdb = subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "edgeopt",
                             "--no-sync"], capture_output=True, text=True)
    if initdb.returncode != 0:
        pytest.fail(f"initdb failed: {initdb.stderr.strip()[-1500:]}")
    port = _free_port()
    server = subprocess.Popen([*as_user, str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-k", str(folder),
                               "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                              stdout=subprocess.DEVNULL, stderr=open(folder / "server.log", "wb"))
    try:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(f"host=127.0.0.1 port={port} user=edgeopt dbname=postgres", autocommit=True) \
                        as connection:
                    connection.execute("CREATE DATABASE tune")
                break
            except psycopg.OperationalError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"PostgreSQL did not start: {(folder / 'server.log').read_text()[-2000:]}")
                time.sleep(0.3)
        yield Postgres(f"postgresql://edgeopt@127.0.0.1:{port}/tune", folder)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(folder, ignore_errors=True)
