"""A small transport over the system OpenSSH client.

We run the ``ssh`` binary itself (never a Python SSH library), so everything the user's
``~/.ssh/config`` says about a host alias -- User, Port, IdentityFile, ProxyJump, ... --
applies unchanged. Every call:

* is an argument list for ``subprocess`` (never ``shell=True``);
* uses ``BatchMode=yes`` (never prompts for a password or passphrase),
  ``ConnectTimeout`` and ``ServerAliveInterval/CountMax``;
* checks host keys strictly (``StrictHostKeyChecking=yes``) unless the caller opts in to
  ``accept-new``;
* runs in its own process group, killed as a whole on timeout;
* shares one connection per host and option set (``ControlMaster=auto``, ``ControlPersist``
  30 s, sockets in a private 0700 folder): a profile makes 3-5 calls and ``convert --ssh``
  dozens, and each would otherwise pay a full handshake. The socket name hashes every option
  edgeopt passes (config file, known_hosts, identity, host-key policy), the destination and the
  alias's effective configuration as ``ssh -G`` prints it, so a call never rides on a connection
  that was checked under other trust settings (another alias of the same host, say).

The remote side runs the command string through the user's login shell, so remote
commands are always built with :func:`remote_command` from a list of arguments, each
quoted with :func:`shlex.quote`. Uploads stream bytes over ssh's stdin (``cat``), so the
device needs neither scp nor sftp.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgeopt.errors import InputError, RemoteError

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_UPLOAD_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class SshTarget:
    """What to hand to ``ssh``: a destination (alias, ``host`` or ``user@host``) and an optional port."""

    destination: str
    port: int | None = None


def parse_host(host: str) -> SshTarget:
    """Parse ``alias``, ``user@host``, ``user@host:port``, ``[v6addr]:port`` or ``ssh://user@host:port``.

    A bare IPv6 address (several colons, no brackets) is taken as having no port.
    """
    text = host.strip()
    if not text or text.startswith("-") or any(c.isspace() or ord(c) < 32 for c in text):
        raise InputError(f"invalid SSH host {host!r}", "use an ~/.ssh/config alias, user@host or user@host:port")
    if text.startswith("ssh://"):
        text = text[len("ssh://"):].rstrip("/")
    user, at, hostport = text.rpartition("@")
    prefix = f"{user}@" if at else ""
    port: int | None = None
    bracketed = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", hostport)
    if bracketed:
        hostname, port_text = bracketed.group(1), bracketed.group(2)
    elif hostport.count(":") == 1:
        hostname, port_text = hostport.split(":")
    else:
        hostname, port_text = hostport, None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise InputError(f"invalid SSH port in {host!r}", "the port must be a number from 1 to 65535")
        port = int(port_text)
    if not hostname:
        raise InputError(f"invalid SSH host {host!r}: no host name", "use user@host or user@host:port")
    return SshTarget(prefix + hostname, port)


def remote_command(argv: list[str]) -> str:
    """One command line for the remote login shell, every argument quoted."""
    if not argv:
        raise ValueError("empty remote command")
    return " ".join(shlex.quote(str(a)) for a in argv)


def sh_command(script: str, *args: str) -> str:
    """Run ``script`` with POSIX ``sh -c`` on the remote side, whatever the login shell; args are $1, $2..."""
    return remote_command(["sh", "-c", script, "sh", *args])


@dataclass
class SshResult:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def error_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")


class SshTimeout(RemoteError):
    """The local ssh process ran past its timeout and was killed."""


class SshConnectionError(RemoteError):
    """ssh itself failed (exit 255): refused, unreachable, host key, login, dropped connection."""


@dataclass
class SshClient:
    """Run commands on, and upload bytes to, one host through the system ``ssh``.

    ``config_file`` (``-F``), ``known_hosts_file`` (``UserKnownHostsFile``) and ``identity_file``
    (``-i``) are optional overrides; ``extra_options`` are more ``-o Key=Value`` strings.
    """

    host: str
    config_file: Path | str | None = None
    known_hosts_file: Path | str | None = None
    identity_file: Path | str | None = None
    accept_new_host_key: bool = False
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    server_alive_interval_s: int = 5
    server_alive_count_max: int = 3
    extra_options: list[str] = field(default_factory=list)
    ssh_binary: str = "ssh"
    multiplex: bool = True

    def __post_init__(self) -> None:
        self.target = parse_host(self.host)
        self._effective_config: str | None = None

    # -- command lines -------------------------------------------------------------------------

    def _option_args(self) -> list[str]:
        args = self._base_args()
        control_dir = _control_dir() if self.multiplex else None
        if control_dir is not None:
            # the socket is shared only by calls under the same client configuration: edgeopt's options and
            # everything ~/.ssh/config gives the alias (two aliases of one host may trust different keys)
            policy = hashlib.sha256("\0".join([*args, self.target.destination, self.effective_config()])
                                    .encode()).hexdigest()[:12]
            args += ["-o", "ControlMaster=auto", "-o", f"ControlPath={control_dir}/{policy}-%C",
                     "-o", "ControlPersist=30"]
        return args

    def effective_config(self) -> str:
        """What ``ssh -G`` prints for the destination under edgeopt's options: the alias's effective client
        configuration (user, hostname, port, known-hosts files, host-key alias, strict checking, identities,
        proxies). Read once per client; empty where ssh cannot print it (the alias then keys alone)."""
        if self._effective_config is None:
            try:
                done = subprocess.run([self.ssh_binary, "-G", *self._base_args(), "--", self.target.destination],
                                      capture_output=True, text=True, timeout=10)
                self._effective_config = done.stdout if done.returncode == 0 else ""
            except (OSError, subprocess.TimeoutExpired):
                self._effective_config = ""
        return self._effective_config

    def _base_args(self) -> list[str]:
        args: list[str] = []
        if self.config_file is not None:
            args += ["-F", str(self.config_file)]
        if self.identity_file is not None:
            args += ["-i", str(self.identity_file)]
        if self.target.port is not None:
            args += ["-p", str(self.target.port)]
        options = [
            "BatchMode=yes",
            f"ConnectTimeout={max(1, int(round(self.connect_timeout_s)))}",
            f"ServerAliveInterval={self.server_alive_interval_s}",
            f"ServerAliveCountMax={self.server_alive_count_max}",
            f"StrictHostKeyChecking={'accept-new' if self.accept_new_host_key else 'yes'}",
        ]
        if self.known_hosts_file is not None:
            options.append(f"UserKnownHostsFile={self.known_hosts_file}")
        options += list(self.extra_options)
        for option in options:
            args += ["-o", option]
        return args

    def ssh_argv(self, command: str) -> list[str]:
        """The full local argument list; ``--`` ends options so the destination is never read as one."""
        return [self.ssh_binary, *self._option_args(), "-T", "--", self.target.destination, command]

    # -- running -------------------------------------------------------------------------------

    def run(self, command: str, *, timeout_s: float, input_bytes: bytes | None = None,
            input_file: Path | None = None, what: str = "the remote command") -> SshResult:
        """Run one remote command string (build it with :func:`remote_command`).

        Standard input is ``input_bytes``, or the file ``input_file`` streamed (large models are
        never read into memory whole), or nothing. Connection-level failures (ssh exit 255) raise
        :class:`RemoteError`; any other exit status is returned for the caller to interpret. On
        timeout the local ssh process group is killed and :class:`SshTimeout` raised.
        """
        argv = self.ssh_argv(command)
        stdin_file = open(input_file, "rb") if input_file is not None else None  # noqa: SIM115 (closed below)
        try:
            stdin = stdin_file if stdin_file is not None else (
                subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL)
            process = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       start_new_session=True)
        except FileNotFoundError:
            if stdin_file is not None:
                stdin_file.close()
            raise RemoteError(f"the OpenSSH client '{self.ssh_binary}' was not found",
                              "install it, e.g. apt-get install openssh-client") from None
        try:
            stdout, stderr = process.communicate(input=input_bytes if stdin_file is None else None, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise SshTimeout(f"{what} on {self.host} did not finish within {timeout_s:.0f} s",
                             "the device or the connection is too slow; raise the timeout or check the network") from None
        except BaseException:
            _kill_group(process)
            raise
        finally:
            if stdin_file is not None:
                stdin_file.close()
        result = SshResult(process.returncode, stdout, stderr)
        if result.returncode == 255:
            raise self.connection_error(result.error_text, what)
        return result

    def check(self, command: str, *, timeout_s: float, input_bytes: bytes | None = None,
              input_file: Path | None = None, what: str = "the remote command") -> SshResult:
        """Like :meth:`run`, but a non-zero remote exit status is a :class:`RemoteError` too."""
        result = self.run(command, timeout_s=timeout_s, input_bytes=input_bytes, input_file=input_file, what=what)
        if result.returncode != 0:
            last = _last_line(result.error_text) or _last_line(result.text) or "no output"
            raise RemoteError(f"{what} failed on {self.host} (exit {result.returncode}): {last}",
                              "rerun with --debug, or try the same command with plain ssh")
        return result

    def connect_check(self, *, timeout_s: float | None = None) -> None:
        """Open a connection and run ``true``: fails fast with a clear message when the host is unusable."""
        self.check(remote_command(["true"]), timeout_s=timeout_s or self.connect_timeout_s + 10,
                   what="connecting")

    def upload(self, data: bytes | Path, remote_path: str, *, timeout_s: float = DEFAULT_UPLOAD_TIMEOUT_S,
               mode: str = "600") -> None:
        """Write ``data`` (bytes, or a local file streamed) to ``remote_path`` atomically: stream to a
        temp name, check the size, ``mv``.

        A dropped connection ends ``cat`` early with EOF; the size check keeps a truncated file
        from ever reaching ``remote_path``.
        """
        script = (
            't="$1.part.$$"; '
            'trap \'rm -f "$t"\' EXIT; '
            'cat > "$t" || exit 1; '
            'n=$(wc -c < "$t"); '
            'if [ $n -ne "$2" ]; then echo "upload truncated: got $n of $2 bytes" >&2; exit 1; fi; '
            'chmod "$3" "$t" && mv -f "$t" "$1"'
        )
        if isinstance(data, Path):
            size = data.stat().st_size
            self.check(sh_command(script, remote_path, str(size), mode), timeout_s=timeout_s,
                       input_file=data, what=f"uploading {data.name} ({size} bytes)")
            return
        self.check(sh_command(script, remote_path, str(len(data)), mode), timeout_s=timeout_s,
                   input_bytes=data, what=f"uploading {len(data)} bytes")

    # -- errors --------------------------------------------------------------------------------

    def resolved(self) -> tuple[str, int]:
        """(hostname, port) as ssh would use them (``ssh -G``), for hints; falls back to the parsed host."""
        fallback = (self.target.destination.rpartition("@")[2], self.target.port or 22)
        values: dict[str, str] = {}
        for line in self.effective_config().splitlines():
            key, _, value = line.partition(" ")
            values.setdefault(key.lower(), value.strip())
        try:
            return values.get("hostname", fallback[0]), int(values.get("port", fallback[1]))
        except ValueError:
            return fallback

    def connection_error(self, stderr: str, what: str) -> RemoteError:
        """Turn ssh's exit-255 stderr into one clear line and a hint (an ``SshConnectionError``)."""
        error = self._connection_error(stderr, what)
        return SshConnectionError(error.message, error.hint)

    def _connection_error(self, stderr: str, what: str) -> RemoteError:
        text = stderr.replace("\r", "")
        lowered = text.lower()
        if "remote host identification has changed" in lowered:
            hostname, port = self.resolved()
            return RemoteError(
                f"the host key of {self.host} has CHANGED since it was recorded in known_hosts",
                f"this may be an attack, or the device was reinstalled; verify the new fingerprint, then "
                f"remove the old key with 'ssh-keygen -R {_keyscan_name(hostname, port)}' and add the new one "
                f"with 'ssh-keyscan -p {port} {hostname} >> ~/.ssh/known_hosts'")
        if "host key verification failed" in lowered or "no matching host key" in lowered or \
                "host key is known" in lowered:
            hostname, port = self.resolved()
            return RemoteError(
                f"the host key of {self.host} is not in known_hosts (strict host key checking)",
                f"verify the device's fingerprint, then add its key: "
                f"ssh-keyscan -p {port} {hostname} >> ~/.ssh/known_hosts "
                f"(or accept it on first use with accept_new_host_key)")
        if "permission denied" in lowered:
            return RemoteError(f"SSH login to {self.host} was refused (permission denied)",
                               "check the user name and that your key is in the device's ~/.ssh/authorized_keys; "
                               "edgeopt never prompts for passwords (BatchMode)")
        if "connection refused" in lowered:
            return RemoteError(f"the connection to {self.host} was refused",
                               "is sshd running on the device, and is the port right (user@host:port)?")
        if "could not resolve hostname" in lowered or "name or service not known" in lowered:
            return RemoteError(f"the host name in {self.host!r} could not be resolved",
                               "check the spelling, or add a Host entry to ~/.ssh/config")
        if "timed out" in lowered:
            return RemoteError(f"the connection to {self.host} timed out",
                               "is the device on, and reachable from this machine (network, VPN, firewall)?")
        if "no route to host" in lowered or "network is unreachable" in lowered:
            return RemoteError(f"{self.host} is unreachable ({_last_line(text)})",
                               "check the network between this machine and the device")
        # A session riding on a shared connection whose link died exits 255 with the multiplexer's
        # words ("read from master failed", "mux_client_...") or with nothing at all.
        if any(text in lowered for text in ("connection closed", "closed by remote host", "connection reset",
                                           "broken pipe", "timeout, server", "read from master failed",
                                           "mux_client")) or (self.multiplex and not text.strip()):
            return RemoteError(f"the connection to {self.host} dropped during {what}",
                               "check the device and the network, then retry")
        return RemoteError(f"ssh to {self.host} failed during {what}: {_last_line(text) or 'exit 255'}",
                           "try the same host with plain 'ssh' to see the full error")


def _control_dir() -> str | None:
    """A folder only this user can enter, for the connection sockets; None (no sharing) if that
    cannot be had: someone else owns it, or it is open to others."""
    path = Path(tempfile.gettempdir()) / f"edgeopt-ssh-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        status = path.lstat()
    except OSError:
        return None
    if not path.is_dir() or path.is_symlink() or status.st_uid != os.getuid() or status.st_mode & 0o077:
        return None
    return str(path)


def _keyscan_name(hostname: str, port: int) -> str:
    return hostname if port == 22 else f"[{hostname}]:{port}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the local ssh and anything it started (ProxyJump/ProxyCommand helpers)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        pass
