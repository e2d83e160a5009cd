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


# -- the host's figures on first use -------------------------------------------------------------------

AUTO_CALIBRATE_ENV = "EDGEOPT_AUTO_CALIBRATE"  # "0": leave an uncalibrated host without figures
AUTO_SECONDS = 0.3  # per microbenchmark: about 2 s in all, against 1.5 s each for `targets calibrate`


def host_calibration_dir() -> Path:
    """Where automatic host calibrations are cached (XDG cache folder), one folder per CPU."""
    import os

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgeopt" / "host-calibration"


def machine_key() -> str:
    """What the host's figures depend on: CPU model, its flags, core count, architecture and the
    onnxruntime version (its kernels). A change of any gives another cache entry."""
    import hashlib
    import os
    import platform

    import onnxruntime

    from edgeopt.targets import host_cpu_features

    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.lower().startswith(("model name", "cpu part", "hardware"))), "")
    except OSError:
        pass
    facts = "|".join([platform.machine(), model or platform.processor(), str(os.cpu_count()),
                      ",".join(host_cpu_features()), onnxruntime.__version__])
    return hashlib.sha256(facts.encode()).hexdigest()[:16]


def host_for_estimates(target: TargetProfile, events: Events | None = None) -> TargetProfile:
    """``target``, unless it is a host profile without measured peaks: then this machine's, measured once
    per CPU (about two seconds) and cached, so a fresh machine gets latency estimates without a manual
    step. Says so once when it measures; a failed measurement leaves the profile as it was."""
    import os
    import time

    from edgeopt.fsutil import write_text_atomic
    from edgeopt.runtime.microbench import calibrated_profile, run_microbenchmarks
    from edgeopt.targets import _parse, target_to_toml

    if (target.name != "host" or target.peak_ops_per_s.fp32 is not None
            or os.environ.get(AUTO_CALIBRATE_ENV, "1") == "0"):
        return target
    events = events or Events()
    path = host_calibration_dir() / machine_key() / "host.toml"
    if path.is_file():
        try:
            return _parse(path)
        except InputError:
            pass  # a damaged cache entry is measured again
    started = time.monotonic()
    try:
        result = run_microbenchmarks(None, budget_s=AUTO_SECONDS)
    except Exception as exc:  # never fatal: the estimate is then unavailable, with its reason, as before
        events.note(f"host: could not measure this machine's peaks ({type(exc).__name__}); no latency estimate")
        return target
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    profile = calibrated_profile(target, result, when).model_copy(update={"origin": str(path)})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, target_to_toml(profile, f"Measured automatically by edgeopt on {when} (first use on "
                                                        "this CPU); `edgeopt targets calibrate host` measures longer."))
    except OSError:
        pass  # an unwritable cache only costs the measurement next time
    events.note(f"host: measured this machine's peaks in {time.monotonic() - started:.1f} s for the estimates "
                f"(cached in {path.parent}; `edgeopt targets calibrate host` measures longer)")
    return profile
