"""Profiling on real devices over SSH (the system OpenSSH client; no Python SSH library)."""

from edgeopt.remote.device import RemoteRun, measure_over_ssh, profile_over_ssh
from edgeopt.remote.ssh import (
           SshClient,
           SshResult,
           SshTarget,
           parse_host,
           remote_command,
)

__all__ = ["RemoteRun", "SshClient", "SshResult", "SshTarget", "measure_over_ssh", "parse_host",
           "profile_over_ssh", "remote_command"]
