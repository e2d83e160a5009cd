#!/usr/bin/env python3
"""An emulated Raspberry Pi 4 to check an SSH deployment pipeline without the hardware.

An arm64 Debian userland (debootstrap) run under qemu user-mode emulation, with its own sshd on a loopback
port, a venv holding the aarch64 numpy and onnxruntime wheels from PyPI (no edgeopt: the device side is
the runner edgeopt uploads), and a Raspberry Pi 4's /proc/cpuinfo bind-mounted (Cortex-A72, no dot-product
instructions; qemu emulates that core too), so device facts and the ISA-dependent int8 recipe see an ARM
board. What runs there is the real aarch64 runtime with its own kernels; its timings mean nothing.

    python tools/emulated_board.py build          # once, a few minutes; cached under ~/.cache/edgeopt/
    python tools/emulated_board.py start --port 2222 --authorized-key ~/.ssh/id_ed25519.pub
        # prints an ~/.ssh/config entry and a known_hosts line; Ctrl-C stops the board
    edgeopt profile model.onnx -t rpi4b --ssh emulated-pi --remote-python /opt/edgeopt-venv/bin/python

Needs root (chroot and bind mounts in a private mount namespace), Debian's qemu-user-static, debootstrap
and binfmt-support (qemu-aarch64 registered with the F flag, which `build` does when it can), and the
Debian mirror and PyPI. The userland is rebuilt when RECIPE changes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

RECIPE = {
    "version": 1,
    "suite": "bookworm",
    "mirror": "http://deb.debian.org/debian",
    "packages": ["openssh-server", "python3", "python3-venv", "ca-certificates"],
    "pip": ["numpy==2.4.6", "onnxruntime==1.32.0"],
}
VENV = "/opt/edgeopt-venv"
PYTHON = f"{VENV}/bin/python"
QEMU_CPU = "cortex-a72"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
# /proc/cpuinfo of a Raspberry Pi 4 Model B under 64-bit Raspberry Pi OS: four Cortex-A72 cores (part 0xd08)
# without the dot-product (asimddp) feature
PI4_CPUINFO = "".join(
    f"processor\t: {core}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
    "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n" for core in range(4)
) + "Hardware\t: BCM2835\nRevision\t: c03114\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"

# In a private mount namespace (gone with the process): the host's /proc, /sys and /dev inside the userland,
# the board's cpuinfo over /proc/cpuinfo, then the command chrooted with a clean environment.
_ENTER = ('root="$1"; cpuinfo="$2"; shift 2; '
          'mount --bind /proc "$root/proc" && mount --bind "$cpuinfo" "$root/proc/cpuinfo" && '
          'mount --bind /sys "$root/sys" && mount --bind /dev "$root/dev" && exec chroot "$root" "$@"')


class BoardError(RuntimeError):
    """The board cannot be built or started here; the message says what is missing."""


def cache_root() -> Path:
    """$EDGEOPT_BOARD_CACHE, else edgeopt/emulated-board in the user's cache folder."""
    if os.environ.get("EDGEOPT_BOARD_CACHE"):
        return Path(os.environ["EDGEOPT_BOARD_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgeopt" / "emulated-board"


def board_dir() -> Path:
    digest = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / f"{RECIPE['suite']}-arm64-{digest}"


def missing_prerequisites() -> list[str]:
    """What this machine lacks to build or start the board (empty when it can)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (chroot and bind mounts)")
    for tool, package in (("qemu-aarch64-static", "qemu-user-static"), ("debootstrap", "debootstrap"),
                          ("unshare", "util-linux"), ("chroot", "coreutils"), ("ssh-keygen", "openssh-client")):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (apt-get install {package})")
    if not missing and not _binfmt_ready():
        missing.append("qemu-aarch64 registered in binfmt_misc with the F flag (apt-get install binfmt-support; "
                       "update-binfmts --enable qemu-aarch64)")
    return missing


def _binfmt_ready() -> bool:
    entry = BINFMT / "qemu-aarch64"
    with contextlib.suppress(OSError):
        if not entry.exists():
            _register_binfmt()
        text = entry.read_text()
        return text.startswith("enabled") and any(
            line.startswith("flags:") and "F" in line.split(":", 1)[1] for line in text.splitlines())
    return False


def _register_binfmt() -> None:
    """Mount binfmt_misc and register qemu-aarch64 (a container often has neither); best effort."""
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], capture_output=True)
    if shutil.which("update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True)


def _enter_argv(root: Path, cpuinfo: Path, argv: list[str], env: dict[str, str]) -> list[str]:
    """``argv`` run inside the userland (see _ENTER); ``env`` is its whole environment."""
    environment = [f"{key}={value}" for key, value in {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
                                                       "QEMU_CPU": QEMU_CPU, **env}.items()]
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _ENTER, "board", str(root), str(cpuinfo),
            "/usr/bin/env", "-i", *environment, *argv]


def _cpuinfo_file(root: Path) -> Path:
    path = root.parent / f"{root.name}.cpuinfo"
    if not path.exists() or path.read_text() != PI4_CPUINFO:
        path.write_text(PI4_CPUINFO)
    return path


def build(log=print) -> Path:
    """The board's userland, built once per RECIPE (a few minutes: debootstrap's second stage and pip run
    under emulation) and reused afterwards; older recipes' userlands are removed."""
    missing = missing_prerequisites()
    if missing:
        raise BoardError("cannot build the emulated board here: missing " + "; ".join(missing))
    target = board_dir()
    if (target / "edgeopt-board.json").is_file():
        return target
    cache_root().mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(cache_root() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same userland
        if (target / "edgeopt-board.json").is_file():
            return target
        for old in cache_root().iterdir():
            if old.is_dir() and old != target:
                shutil.rmtree(old, ignore_errors=True)
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        started = time.monotonic()
        log(f"building the emulated board in {target} (debootstrap {RECIPE['suite']} arm64; a few minutes)")
        _run(["debootstrap", "--arch=arm64", "--variant=minbase", "--include=" + ",".join(RECIPE["packages"]),
              RECIPE["suite"], str(partial), RECIPE["mirror"]], "debootstrap", partial)
        env = {}
        host_ca = Path(os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
                       or "/etc/ssl/certs/ca-certificates.crt")
        if host_ca.is_file():  # this machine's trust store (a proxy's CA, say) reaches PyPI from inside too
            shutil.copyfile(host_ca, partial / "etc/ssl/certs/edgeopt-host-ca.crt")
            env["PIP_CERT"] = "/etc/ssl/certs/edgeopt-host-ca.crt"
        log("installing " + " ".join(RECIPE["pip"]) + " into the board's venv")
        cpuinfo = _cpuinfo_file(partial)
        _run(_enter_argv(partial, cpuinfo, ["python3", "-m", "venv", VENV], env), "creating the venv", partial)
        _run(_enter_argv(partial, cpuinfo, [f"{VENV}/bin/pip", "install", "--disable-pip-version-check", "-q",
                                            *RECIPE["pip"]], env), "pip install", partial)
        key = partial / "etc/ssh/edgeopt_host_ed25519_key"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgeopt-emulated-board", "-f", str(key)],
             "ssh-keygen", partial)
        (partial / "run/sshd").mkdir(parents=True, exist_ok=True)
        (partial / "edgeopt-board.json").write_text(json.dumps(RECIPE, indent=2) + "\n")
        partial.rename(target)
        cpuinfo.unlink(missing_ok=True)
        log(f"built in {time.monotonic() - started:.0f} s")
    return target


def _run(argv: list[str], what: str, partial: Path) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
        raise BoardError(f"{what} failed (exit {done.returncode}): {' | '.join(tail)}; the partial userland is "
                         f"in {partial}")


@dataclass
class Board:
    """A started board: sshd on 127.0.0.1:``port`` for root, with ``host_key`` (``type base64``)."""

    port: int
    root: Path
    host_key: str
    process: subprocess.Popen
    python: str = PYTHON

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_key}"

    def ssh_config(self, alias: str, identity: str | Path, known_hosts: str | Path) -> str:
        return (f"Host {alias}\n    HostName 127.0.0.1\n    Port {self.port}\n    User root\n"
                f"    IdentityFile {identity}\n    IdentitiesOnly yes\n    UserKnownHostsFile {known_hosts}\n"
                "    GlobalKnownHostsFile /dev/null\n    LogLevel ERROR\n")

    def stop(self) -> None:
        """Stop sshd and remove what this start wrote (its config, authorized keys and log)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for path in (self.root / f"etc/ssh/edgeopt_sshd_{self.port}.conf",
                     self.root / f"etc/ssh/edgeopt_authorized_keys_{self.port}",
                     self.root.parent / f"{self.root.name}.sshd-{self.port}.log"):
            path.unlink(missing_ok=True)


def start(port: int, authorized_keys: str, root: Path | None = None, timeout_s: float = 60.0) -> Board:
    """sshd of a built board (``build()``) on 127.0.0.1:``port``, letting in root with ``authorized_keys``."""
    root = root or build()
    if port < 1024 and port != 22:
        raise BoardError(f"port {port}: choose a free port above 1023")
    (root / f"etc/ssh/edgeopt_authorized_keys_{port}").write_text(authorized_keys.strip() + "\n")
    (root / f"etc/ssh/edgeopt_sshd_{port}.conf").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey /etc/ssh/edgeopt_host_ed25519_key\n"
        f"AuthorizedKeysFile /etc/ssh/edgeopt_authorized_keys_{port}\nPidFile none\n"
        "PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        # every process of a session runs on the emulated core the cpuinfo names
        f"SetEnv QEMU_CPU={QEMU_CPU}\nLogLevel ERROR\n")
    log = open(root.parent / f"{root.name}.sshd-{port}.log", "wb")  # noqa: SIM115 (the board's lifetime)
    sshd = ["/usr/sbin/sshd", "-D", "-e", "-f", f"/etc/ssh/edgeopt_sshd_{port}.conf"]
    argv = _enter_argv(root, _cpuinfo_file(root), sshd, {})
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            log.close()
            text = Path(log.name).read_text(errors="replace").strip()
            raise BoardError(f"the board's sshd exited at start: {text[-500:] or 'no output'}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        if time.monotonic() > deadline:
            process.kill()
            raise BoardError(f"the board's sshd did not listen on port {port} within {timeout_s:.0f} s")
        time.sleep(0.2)
    host_key = " ".join((root / "etc/ssh/edgeopt_host_ed25519_key.pub").read_text().split()[:2])
    return Board(port, root, host_key, process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build (or find) the cached userland")
    commands.add_parser("path", help="print the userland's folder")
    starting = commands.add_parser("start", help="start its sshd until Ctrl-C")
    starting.add_argument("--port", type=int, default=2222)
    starting.add_argument("--authorized-key", type=Path, required=True, help="public key file let in as root")
    starting.add_argument("--alias", default="emulated-pi")
    args = parser.parse_args(argv)
    try:
        if args.command == "path":
            print(board_dir())
            return 0
        root = build(log=lambda message: print(message, file=sys.stderr))
        if args.command == "build":
            print(root)
            return 0
        if not args.authorized_key.is_file():
            print(f"error: {args.authorized_key}: no such public key file", file=sys.stderr)
            return 2
        board = start(args.port, args.authorized_key.read_text(), root)
    except BoardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    identity = str(args.authorized_key).removesuffix(".pub")
    print(f"# ~/.ssh/config\n{board.ssh_config(args.alias, identity, '~/.ssh/known_hosts')}")
    print(f"# ~/.ssh/known_hosts\n{board.known_hosts_line()}\n")
    print(f"# then: edgeopt profile MODEL -t rpi4b --ssh {args.alias} --remote-python {board.python}")
    try:
        board.process.wait()
    except KeyboardInterrupt:
        board.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
