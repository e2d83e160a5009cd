"""Streams: models called in order, each call's recurrent state fed from the previous call's output.

A streaming model (voice activity, keyword spotting, an RNN run chunk by chunk) is declared with
state pairs, ``{output: input}`` (``state_pairs = { stateN = "state" }`` in edgeopt.toml, or
``--state-pair stateN=state``). Calibration, fidelity and measurement then run its samples as a
stream, in order, batch 1: the first call takes the state the data (or its fill) gives, every
later call takes what the model itself returned, so int8 errors accumulate as they do in use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from edgeopt.data.specs import InputSpec, format_shape
from edgeopt.errors import InputError

Feeds = dict[str, np.ndarray]


def check_state_pairs(pairs: Mapping[str, str], inputs: Sequence[InputSpec], outputs: Sequence[str],
                      output_shapes: Mapping[str, Sequence[int] | None] | None = None) -> None:
    """Every pair names a real output and input; where shapes are known they agree."""
    input_names = {s.name: s for s in inputs}
    for output, name in pairs.items():
        if output not in outputs:
            raise InputError(f"state pair {output}={name}: the model has no output {output!r}",
                             f"its outputs are: {', '.join(outputs)}")
        if name not in input_names:
            raise InputError(f"state pair {output}={name}: the model has no input {name!r}",
                             f"its inputs are: {', '.join(input_names)}")
        shape = (output_shapes or {}).get(output)
        spec = input_names[name]
        if shape is not None and spec.is_concrete and tuple(shape) != tuple(spec.shape):
            raise InputError(f"state pair {output}={name}: output {output!r} is {format_shape(tuple(shape))} but "
                             f"input {name!r} is {format_shape(spec.shape)}",
                             "pair each state output with the input of the same shape")


def run_stream(run: Callable[[Feeds], Mapping[str, np.ndarray]], feeds: Iterable[Feeds],
               pairs: Mapping[str, str]) -> Iterator[tuple[Feeds, Mapping[str, np.ndarray]]]:
    """Each feed as it was really fed (state carried from the previous call) and its outputs."""
    state: Feeds = {}
    for feed in feeds:
        fed = {**feed, **state}
        outputs = run(fed)
        state = {name: np.asarray(outputs[output]).astype(feed[name].dtype, copy=False)
                 for output, name in pairs.items() if name in feed}
        del feed
        yield fed, outputs
        del fed, outputs  # the next feed is read with none of this one held (one batch alive at a time)
