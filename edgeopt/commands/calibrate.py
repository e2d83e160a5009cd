"""`edgeopt targets calibrate`: measure a CPU target's peaks here or on a device over SSH and write the
calibrated profile (each figure with its source) to the user's targets folder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgeopt.errors import InputError
from edgeopt.events import Events
from edgeopt.runtime.microbench import MicrobenchResult
from edgeopt.targets import TargetProfile


@dataclass
class Calibration:
    profile: TargetProfile
    path: Path
    result: MicrobenchResult
    where: str | None  # the SSH host, None for this machine


def calibrate_target(name: str, *, ssh: str | None = None, ssh_options: dict[str, Any] | None = None,
                     threads: int | None = None, seconds: float = 1.5, save_as: str | None = None,
                     output_dir: Path | None = None, targets_dir: Path | None = None,
                     events: Events | None = None) -> Calibration:
    """Microbenchmarks here (only ``host``) or on ``ssh`` (any CPU target), then the calibrated profile
    written atomically as ``<save_as or name>.toml``."""
    from edgeopt.fsutil import ensure_writable_dir, write_text_atomic
    from edgeopt.runtime.microbench import (
        calibrated_profile,
        microbench_bundle,
        result_from_payload,
        run_microbenchmarks,
    )
    from edgeopt.targets import load_target, target_to_toml, user_targets_dir

    if name != "host" and not ssh:
        raise InputError(f"only 'host' can be calibrated on this machine (asked for {name!r})",
                         f"to calibrate {name} on the device itself: edgeopt targets calibrate {name} --ssh HOST")
    if save_as is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", save_as):
        raise InputError(f"--save-as {save_as!r} is not a valid target name", "use letters, digits, '-', '_', '.'")
    base = load_target(name, targets_dir)
    if ssh and base.kind != "cpu":
        raise InputError(f"{name} is a {base.kind} target; the microbenchmarks measure the device's CPU",
                         "calibrate the board's CPU target instead (e.g. the one named by its host_cpu)")
    folder = ensure_writable_dir(output_dir or user_targets_dir())
    events = events or Events()
    progress = events.note
    device = None
    if ssh:
        from edgeopt.remote.device import microbench_over_ssh

        progress("building the microbenchmark models")
        bundle = microbench_bundle(threads, seconds)
        progress(f"measuring on {ssh} (about {6 * seconds:.0f} s)")
        payload = microbench_over_ssh(ssh, bundle, **(ssh_options or {}))
        result = result_from_payload(payload)
        facts = payload.get("device", {})
        device = facts.get("board") or facts.get("cpu_model") or facts.get("machine")
    else:
        result = run_microbenchmarks(threads, budget_s=seconds, events=events)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    profile = calibrated_profile(base, result, when, ssh, device)
    if save_as:
        profile = profile.model_copy(update={"name": save_as})
    path = folder / f"{profile.name}.toml"
    command = f"edgeopt targets calibrate {name}" + (f" --ssh {ssh}" if ssh else "")
    write_text_atomic(path, target_to_toml(profile, f"Calibrated by edgeopt on {when}" + (f" on {ssh}" if ssh else "")
                                           + f"; rerun `{command}` after hardware changes."))
    return Calibration(profile, path, result, ssh)
