"""A real OpenSSH server on 127.0.0.1 for the remote tests; the device is this machine.

CI: `.ci/run` must `apt-get install -y openssh-server openssh-client` (sshd, ssh, ssh-keygen);
without /usr/sbin/sshd these tests are skipped locally and fail under CI.

Everything lives in a temp folder: the server's host key, the authorized client key, the
client's ssh_config and known_hosts. The user's own ~/.ssh is never read or written (the
client config sets IdentityFile, IdentitiesOnly, UserKnownHostsFile and GlobalKnownHostsFile).
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")
ALIAS = "edgeopt-test-device"


@dataclass
class SshServer:
    port: int
    user: str
    dir: Path
    config: Path  # client ssh_config with a Host entry for ALIAS
    known_hosts: Path
    identity: Path
    host_public_key: str
    alias: str = ALIAS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeopt-tests", "-f", str(path)],
                   check=True, capture_output=True)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> SshServer:
    if not SSHD.exists():
        message = "/usr/sbin/sshd is missing: apt-get install -y openssh-server (see tests/remote/conftest.py)"
        if os.environ.get("CI"):  # .ci/run installs it: a skip there would hide a broken install step
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("sshd")
    host_key, client_key = root / "host_ed25519", root / "client_ed25519"
    _keygen(host_key)
    _keygen(client_key)
    authorized = root / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    user = getpass.getuser()
    port = free_port()
    config = root / "sshd_config"
    config.write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
AuthorizedKeysFile {authorized}
PidFile {root / 'sshd.pid'}
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers {user}
LogLevel ERROR
""")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = open(root / "sshd.log", "wb")
    server = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    host_public = host_key.with_suffix(".pub").read_text().split()
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_public[0]} {host_public[1]}\n")
    client_config = root / "ssh_config"
    client_config.write_text(f"""\
Host {ALIAS}
    HostName 127.0.0.1
    Port {port}
    User {user}
    IdentityFile {client_key}
    IdentitiesOnly yes
    UserKnownHostsFile {known_hosts}
    GlobalKnownHostsFile /dev/null
    LogLevel ERROR
""")
    deadline = time.monotonic() + 15
    while True:
        if server.poll() is not None:
            log.close()
            pytest.fail(f"sshd exited at start: {(root / 'sshd.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                pytest.fail("sshd did not start listening within 15 s")
            time.sleep(0.05)
    yield SshServer(port, user, root, client_config, known_hosts, client_key, f"{host_public[0]} {host_public[1]}")
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


BOARD_ALIAS = "edgeopt-test-pi"


@dataclass
class ArmBoard:
    """The emulated Raspberry Pi 4 of tools/emulated_board.py, reachable as ``alias`` through ``config``."""

    alias: str
    config: Path
    python: str
    port: int


@pytest.fixture(scope="session")
def arm_board(sshd, tmp_path_factory) -> ArmBoard:
    """An aarch64 Debian userland under qemu user-mode emulation with its own sshd, onnxruntime and a Pi 4's
    /proc/cpuinfo (tools/emulated_board.py; built once and cached, a few minutes). Timings there mean nothing:
    tests check the path and the numbers that do not depend on speed."""
    import sys

    tools = str(Path(__file__).resolve().parents[2] / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    import emulated_board

    def unavailable(message: str):
        if os.environ.get("CI"):  # .ci/run installs qemu-user-static and debootstrap: a skip would hide that
            pytest.fail(message)
        pytest.skip(message)

    missing = emulated_board.missing_prerequisites()
    if missing:
        unavailable("the emulated board needs " + "; ".join(missing))
    try:
        root = emulated_board.build(log=lambda message: print(message, file=sys.stderr))
        board = emulated_board.start(free_port(), sshd.identity.with_suffix(".pub").read_text(), root)
    except emulated_board.BoardError as exc:
        unavailable(str(exc))
    folder = tmp_path_factory.mktemp("arm-board")
    known_hosts = folder / "known_hosts"
    known_hosts.write_text(board.known_hosts_line() + "\n")
    config = folder / "ssh_config"
    config.write_text(board.ssh_config(BOARD_ALIAS, sshd.identity, known_hosts) +
                      sshd.config.read_text())  # the loopback x86 device too, for fleets mixing both
    yield ArmBoard(BOARD_ALIAS, config, board.python, board.port)
    board.stop()
