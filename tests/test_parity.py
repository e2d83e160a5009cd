"""Parity checks on the produced float graphs."""

from __future__ import annotations

import numpy as np

from edgeopt.stages.common.parity import Tolerance, compare_output, parity_check


def test_error_in_small_scale_channels_is_not_forgiven():
    rng = np.random.default_rng(0)
    reference = np.concatenate([rng.uniform(0, 1000, (2, 50, 4)), rng.uniform(0, 1, (2, 50, 20))], -1)
    inverted = reference.copy()
    inverted[..., 4:] = 1 - inverted[..., 4:]  # within atol + rtol * max|ref| = 1.0001 everywhere
    assert not compare_output("detections", reference, inverted, Tolerance()).passed
    assert compare_output("detections", reference, reference + 1e-6, Tolerance()).passed


def test_integer_and_nan_outputs():
    assert compare_output("ids", np.array([1, 2]), np.array([1, 2]), Tolerance()).passed
    assert not compare_output("ids", np.array([1, 2]), np.array([1, 3]), Tolerance()).passed
    nan = np.array([1.0, np.nan])
    assert compare_output("y", nan, nan.copy(), Tolerance()).passed
    assert not compare_output("y", nan, np.array([1.0, 0.0]), Tolerance()).passed


def test_a_shape_mismatch_is_named_not_reported_as_an_infinite_difference():
    check = parity_check("candidate", "source", [([np.zeros((24, 1, 8))], [np.zeros((1, 192))])], ["probs"],
                         Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.9999), [1])
    (output,) = check.outputs
    assert not check.passed and output.mismatch == "shape [1, 192] where the source gives [24, 1, 8]"
    count = parity_check("candidate", "source", [([np.zeros(2), np.zeros(2)], [np.zeros(2)])], ["a", "b"],
                         Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.9999), [1])
    assert count.outputs[0].mismatch == "1 outputs where the source gives 2"
