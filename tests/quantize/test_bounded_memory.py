"""Issue 22: the quantize search holds one batch of inputs at a time, whatever the number of samples.

A data reader that counts the samples it handed out and that are still alive (``weakref.finalize`` on
each array it yields) refuses to read a batch while an earlier one is alive: more than one batch of
samples at once. The whole search runs on it, for calibration and evaluation alike: the calibration
pass, the techniques' statistics, the up-front range check, every candidate's fidelity, the SQNR
ranking and reverts of mixed precision, the per-node profiles, latency timing and speed trials.
"""

from __future__ import annotations

import gc
import traceback
import weakref
from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pytest

from edgeopt.errors import InputError
from edgeopt.stages.quantize.search import QuantizeOptions, search
from edgeopt.targets import load_target
from tests.quantize.models import depthwise_cnn_model, detector_head_model

BATCH = 2  # samples per batch, for calibration and evaluation alike


class Ledger:
    """The samples handed out by the readers that share it and not yet freed, and every read that found
    more than one batch of them alive."""

    def __init__(self) -> None:
        self.alive = 0
        self.violations: list[str] = []

    def freed(self, samples: int) -> None:
        self.alive -= samples

    def admit(self, samples: int) -> None:
        if self.alive + samples > BATCH:
            gc.collect()  # only when something seems alive: reference cycles count once collected
        if self.alive + samples > BATCH:
            # Recorded as well as raised: the search turns many errors into rejected candidates.
            where = "".join(traceback.format_stack(limit=14)[:-2])
            self.violations.append(f"{self.alive} sample(s) alive while {samples} more were read, from:\n{where}")
            raise AssertionError(self.violations[-1])
        self.alive += samples


class BoundedReader:
    """Fresh arrays on every walk (like a file read batch by batch), counted in ``ledger`` until freed.
    ``labels``: yield (feeds, labels) pairs, the labels a function of the inputs."""

    def __init__(self, ledger: Ledger, make, batches: int, seed: int, labels=None) -> None:
        self.ledger, self.make, self.batches, self.seed, self.labels = ledger, make, batches, seed, labels
        self.reads = 0

    def __iter__(self) -> Iterator:
        for index in range(self.batches):
            # (no local holds the batch: this frame stays suspended while the caller uses it)
            yield self._read(index)

    def _read(self, index: int):
        self.ledger.admit(BATCH)
        self.reads += 1
        array = self.make(np.random.default_rng([self.seed, index]))
        weakref.finalize(array, self.ledger.freed, BATCH)
        feeds = {"x": array}
        return feeds if self.labels is None else (feeds, self.labels(array))


def _anchors(rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((BATCH, 96, 16)).astype(np.float32)


def _images(rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal((BATCH, 3, 24, 24)).astype(np.float32)


def test_a_search_with_every_pass_holds_one_batch_of_samples_at_a_time():
    ledger = Ledger()
    calibration = BoundedReader(ledger, _anchors, batches=8, seed=1)
    evaluation = BoundedReader(ledger, _anchors, batches=10, seed=2)
    # The detection metric's default floor needs the concat kept float (the boxes swamp the scores):
    # mixed precision ranks and reverts groups; on the host the candidates are timed and profiled.
    # (floor 0.95: with 7-bit weights, the AVX2 default, this small head keeps ~0.97 of its boxes)
    options = QuantizeOptions(mode="static", measure_latency=True, speed_fallback=True, latency_budget_s=1.0,
                              metrics={"detections": "detection@0.95"})
    model, outcome = search(detector_head_model(), target=load_target("host"), options=options,
                            calibration=calibration, evaluation=evaluation)
    assert ledger.violations == []
    assert model is not None and outcome.metrics[0]["metric"] == "detection"
    chosen = next(c for c in outcome.candidates if c.name == outcome.chosen)
    assert chosen.mixed_precision_ranking and "concat" in chosen.float_nodes  # sensitivity and reverts ran
    assert chosen.fidelity.samples == 10 * BATCH
    assert outcome.speed_fallback_profiled_on == "host" and outcome.float_latency is not None
    assert not any(w.startswith("speed fallback skipped") for w in outcome.warnings)  # the profiles ran
    assert evaluation.reads > 4 * evaluation.batches  # read again for every trial, not kept
    gc.collect()
    assert ledger.alive == 0


def test_labels_that_come_with_each_batch_reach_the_accuracy_and_the_techniques_stream_too():
    ledger = Ledger()
    model = depthwise_cnn_model()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    # Labels the float model gets right for about half the samples: its accuracy is a number to check.
    labels = (lambda x: np.where(x[:, 0, 0, 0] > 0, session.run(None, {"x": x})[0].argmax(1), 10))
    calibration = BoundedReader(ledger, _images, batches=6, seed=3)
    evaluation = BoundedReader(ledger, _images, batches=8, seed=4, labels=labels)
    # (auto: this model is too small for int8 to be smaller; candidates are judged, then refused for size)
    options = QuantizeOptions(mode="auto", measure_latency=False, metrics={"*": "cosine"})
    _model, outcome = search(model, target=load_target("host"), options=options, calibration=calibration,
                             evaluation=evaluation)
    assert ledger.violations == []
    assert {r["technique"] for r in outcome.prepare["techniques"]} >= {"cross-layer equalization",
                                                                       "bias correction"}
    expected = [labels(_images(np.random.default_rng([4, i]))) for i in range(8)]
    right = sum(int(np.sum(t < 10)) for t in expected)
    judged = [c.fidelity for c in outcome.candidates if c.fidelity is not None]
    assert judged and all(f.accuracy_reference == right / (8 * BATCH) for f in judged)


class ChangingReader(BoundedReader):
    """Reads as ``BoundedReader`` on its first walk; later walks fail (``"raises"``) or end early."""

    def __init__(self, *args, change: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.change, self.walks = change, 0

    def __iter__(self) -> Iterator:
        self.walks += 1
        for index in range(self.batches if self.walks == 1 or self.change == "raises" else self.batches - 1):
            if self.walks > 1 and self.change == "raises":
                raise InputError("eval/0003.npy changed after it was read", "do not change data during a run")
            yield self._read(index)


@pytest.mark.parametrize("change, message", [("raises", "changed after it was read"),
                                             ("shrinks", "gave 6 batches on its first pass, then 5")])
def test_evaluation_data_that_changes_mid_search_stops_it_rather_than_rejecting_candidates(change, message):
    """Streamed, the evaluation is read again while each candidate runs: an error of the data is the user's
    (exit 2), not a reason to reject the candidate as if onnxruntime could not run it."""
    ledger = Ledger()
    evaluation = ChangingReader(ledger, _anchors, batches=6, seed=2, change=change)
    with pytest.raises(InputError, match=message):
        search(detector_head_model(), target=load_target("host"),
               options=QuantizeOptions(mode="auto", measure_latency=False, techniques=False),
               calibration=BoundedReader(ledger, _anchors, batches=4, seed=1), evaluation=evaluation)
    assert ledger.violations == []
