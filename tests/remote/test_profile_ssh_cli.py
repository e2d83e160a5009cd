"""edgeopt profile --ssh through the CLI, against the real sshd of the fixture."""

from __future__ import annotations

import json
import sys

from conftest import REPO
from .conftest import free_port

DIGITS = REPO / "models" / "digits" / "digits_cnn.onnx"


def test_profile_over_ssh_and_one_failing_device(cli, sshd):
    dead = f"{sshd.user}@127.0.0.1:{free_port()}"
    result = cli("profile", DIGITS, "-t", "rpi4b", "--ssh", sshd.alias, "--ssh", dead, "--ssh-config", sshd.config,
                 "--remote-python", sys.executable, "--runs", "5", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    (measurement,) = report["measurements"][sshd.alias]
    assert measurement["runs"] == 5 and measurement["latency_ms"]["p50"] > 0
    assert measurement["ssh"]["host"] == sshd.alias
    assert any(dead in w for w in report["warnings"])  # the other device's failure is reported, not fatal
    assert "rpi4b" in report["estimates"]


def test_every_device_failing_exits_3(cli, sshd):
    dead = f"{sshd.user}@127.0.0.1:{free_port()}"
    result = cli("profile", DIGITS, "--ssh", dead, "--ssh-config", sshd.config, "--runs", "2")
    assert result.code == 3 and "every device failed" in result.stderr
