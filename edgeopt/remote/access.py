"""The ``--ssh`` device of a convert run, as the stages use it (``stages.common.context.DeviceAccess``):
side-by-side latency, per-node kernel times and measurements, each with the run's sample inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeopt.config.settings import DeviceConfig
from edgeopt.events import Events
from edgeopt.fsutil import temporary_folder


class SshDevice:
    def __init__(self, settings: DeviceConfig) -> None:
        self.settings = settings
        self.name = settings.ssh
        self.target = settings.target
        self._facts: dict[str, Any] | None = None

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"python": self.settings.python, "accept_new_host_key": self.settings.accept_new_host_key,
                                   "cache_dir": self.settings.cache_dir}
        if self.settings.ssh_config:
            options["config_file"] = self.settings.ssh_config
        return options

    def facts(self) -> dict[str, Any]:
        """The device's facts and runtime (``device``, ``runtime``), read once."""
        if self._facts is None:
            from edgeopt.remote.device import facts_over_ssh

            options = {k: v for k, v in self._options().items() if k != "cache_dir"}
            self._facts = facts_over_ssh(self.name, **options)
        return self._facts

    def latency(self, models: dict[str, bytes | Path], feeds: dict[str, np.ndarray], events: Events) -> dict[str, Any]:
        """Float vs int8 candidates measured side by side on the device (quantize's latency rule)."""
        from edgeopt.remote.device import compare_latency_over_ssh

        return compare_latency_over_ssh(self.name, models, feeds, reference="float",
                                        runs=max(5, min(self.settings.runs, 30)), threads=self.settings.threads,
                                        events=events, **self._options())

    def node_costs(self, model: bytes | Path, label: str, feeds: dict[str, np.ndarray], events: Events
                   ) -> dict[str, float]:
        """Per-node kernel times of a quantization candidate on the device (the speed fallback's ranking)."""
        from edgeopt.remote.device import profile_over_ssh
        from edgeopt.stages.quantize.speed_fallback import node_costs

        with temporary_folder("edgeopt-device-costs-") as tmp:
            path = model if isinstance(model, Path) else Path(tmp) / f"{label}.onnx"
            if not isinstance(model, Path):
                path.write_bytes(model)
            run = profile_over_ssh(self.name, path, runs=5, warmup=3, threads=self.settings.threads, profile_ops=True,
                                   inputs=_inputs_file(Path(tmp), feeds), events=events, **self._options())
        return node_costs(run.measurement, model)

    def measure(self, path: Path, feeds: dict[str, np.ndarray], events: Events) -> Any:
        """The runner's measurement of ``path`` on the device (a ``RemoteRun``)."""
        from edgeopt.remote.device import profile_over_ssh

        with temporary_folder("edgeopt-device-inputs-") as tmp:
            return profile_over_ssh(self.name, path, runs=self.settings.runs, threads=self.settings.threads,
                                    inputs=_inputs_file(Path(tmp), feeds), events=events, **self._options())


def _inputs_file(folder: Path, feeds: dict[str, np.ndarray]) -> Path:
    """One sample at the run's resolved shapes, as the runner's .npz: the device never guesses symbolic dims
    or integer values (0-d inputs stay 0-d)."""
    path = folder / "inputs.npz"
    np.savez(path, **{name: np.array(value, copy=True) for name, value in feeds.items()})
    return path
