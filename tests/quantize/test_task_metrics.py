"""Task metrics (edgeopt.metrics): the default per output, each metric in both directions, streaming,
hooks, and mixed precision that converges on a transformer with an additive mask and on a detector head
with scores concatenated beside boxes."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from edgeopt.errors import InputError
from edgeopt.metrics import MetricPlan, default_metric, parse_metric_spec
from edgeopt.metrics.fidelity import FidelityRun
from edgeopt.stages.quantize.search import QuantizeOptions, search
from edgeopt.targets import load_target
from tests.quantize.models import (
    audio_feeds,
    detector_feeds,
    detector_head_model,
    log_spectrogram_model,
    transformer_feeds,
    transformer_model,
)

RNG = np.random.default_rng(0)


def _boxes_and_scores(n=4, anchors=200, classes=5, layout="anchors-last"):
    boxes = RNG.uniform(20, 300, (n, anchors, 4))
    scores = RNG.uniform(0, 1, (n, anchors, classes)) ** 4  # mostly low, a few confident
    out = np.concatenate([boxes, scores], axis=-1).astype(np.float32)
    return np.transpose(out, (0, 2, 1)) if layout == "attributes-first" else out


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("name, array, labels, metric", [
    ("logits", RNG.standard_normal((32, 10)).astype(np.float32), False, "top1"),
    ("logits", RNG.standard_normal((32, 10)).astype(np.float32), True, "accuracy"),
    ("output", (lambda v: v / np.linalg.norm(v, axis=1, keepdims=True))(RNG.standard_normal((32, 384))), False,
     "retrieval"),
    ("sentence_embedding", RNG.standard_normal((32, 384)).astype(np.float32), False, "retrieval"),
    ("output0", _boxes_and_scores(), False, "detection"),
    ("output0", _boxes_and_scores(layout="attributes-first"), False, "detection"),
    ("probs", _softmax(RNG.standard_normal((4, 40, 6000)).astype(np.float32)), False, "sequence"),
    ("x", RNG.uniform(0, 1, (4, 1, 64, 64)).astype(np.float32), False, "iou"),
    ("last_hidden_state", RNG.standard_normal((4, 32, 384)).astype(np.float32), False, "cosine"),
    ("token_embeddings", RNG.standard_normal((4, 32, 384)).astype(np.float32), False, "cosine"),
    ("ctc_logits", RNG.standard_normal((4, 40, 100)).astype(np.float32), False, "sequence"),
    ("label_ids", RNG.integers(0, 5, (8, 3)), False, "exact"),
    ("StatefulPartitionedCall:1", RNG.uniform(0, 1, (4, 172, 88)) ** 6, False, "iou"),  # note posteriorgram
])
def test_default_metric_follows_the_output(name, array, labels, metric):
    spec, reason = default_metric(name, array, labels)
    assert spec.metric == metric and reason


def _score(metric_text: str, reference, candidate, labels=None, output="y"):
    plan = MetricPlan([output], [reference], {output: metric_text}, has_labels=labels is not None)
    run = FidelityRun([output], plan)
    run.update([reference], [candidate], labels)
    (result,) = run.result().metrics
    return result


def test_collapse_guard_catches_flattened_scores_but_not_noise():
    reference = _boxes_and_scores(n=8, anchors=100, classes=3)
    collapsed = reference.copy()
    collapsed[..., 4:] = 0.0  # one int8 scale for pixels and sigmoids
    result = _score("cosine", reference, collapsed)
    assert not result.passed and result.details["collapsed_channels"] == "4,5,6"
    assert _score("detection", reference, collapsed).score == 0.0
    # Noise on one embedding dimension, and an almost empty column of a probability map: not a collapse.
    embeddings = RNG.standard_normal((64, 128))
    noisy = embeddings.copy()
    noisy[:, 7] += 0.3 * RNG.standard_normal(64)
    assert _score("cosine", embeddings, noisy).passed
    prob_map = np.zeros((8, 1, 32, 32))
    prob_map[:, :, 8:20, 10:22] = 0.9
    prob_map[:, :, :, 31] = 1e-7  # a column with next to nothing in it
    quantized = np.round(prob_map * 255) / 255 + RNG.normal(0, 1e-3, prob_map.shape)
    assert _score("cosine", prob_map, quantized).passed
    assert _score("iou", prob_map, quantized).score == 1.0


def test_each_metric_in_both_directions():
    logits = RNG.standard_normal((50, 10))
    flipped = logits.copy()
    flipped[:5] = -flipped[:5]  # 5 of 50 predictions change
    assert _score("top1", logits, logits + 1e-3).score == 1.0
    assert _score("top1", logits, flipped).score == pytest.approx(0.9)
    labels = np.argmax(logits, axis=1)
    accuracy = _score("accuracy", logits, flipped, labels=labels)
    assert accuracy.score == pytest.approx(0.9) and accuracy.details["accuracy_float"] == 1.0
    embeddings = np.repeat(RNG.standard_normal((10, 64)), 3, axis=0) + 0.05 * RNG.standard_normal((30, 64))
    assert _score("retrieval", embeddings, embeddings + 1e-3 * RNG.standard_normal((30, 64))).score == 1.0
    assert _score("retrieval", embeddings, RNG.standard_normal((30, 64))).score < 0.5
    mask = np.zeros((2, 1, 10, 10))
    mask[:, :, :4, :5] = 1.0  # 20 pixels per sample
    shifted = np.roll(mask, 1, axis=3)  # 16 of 24 pixels overlap
    assert _score("iou[0.5]", mask, shifted).score == pytest.approx(16 / 24)
    assert _score("iou", mask, mask).score == 1.0
    steps = _softmax(RNG.standard_normal((4, 25, 30)))
    wrong = steps.copy()
    wrong[0, :10] = wrong[0, :10, ::-1]
    assert _score("sequence", steps, wrong).score == pytest.approx(90 / 100)
    detections = _boxes_and_scores(n=2, anchors=50)
    moved = detections.copy()
    moved[..., 0] += 1000  # every box elsewhere
    assert _score("detection", detections, detections).score == 1.0
    assert _score("detection", detections, moved).score == 0.0
    assert _score("sqnr", np.ones((4, 4)), np.ones((4, 4)) + 0.1).score == pytest.approx(20.0)
    assert not _score("sqnr@30", np.ones((4, 4)), np.ones((4, 4)) + 0.1).passed


def _yolox_raw(n=3, size=64, seed=0):
    """A raw YOLOX head at size x size (strides 8/16/32: 64 + 16 + 4 cells): offsets and log sizes per
    cell, sigmoid objectness, one conditional class score that is arbitrary (0.4-0.9) on background; one
    object per sample: a 40-pixel box at stride 8, cell (3, 3), and its neighbour."""
    rng = np.random.default_rng(seed)
    cells = sum((size // stride) ** 2 for stride in (8, 16, 32))
    out = np.concatenate([rng.uniform(0, 1, (n, cells, 2)), rng.uniform(-1, 1, (n, cells, 2)),
                          rng.uniform(0, 0.05, (n, cells, 1)), rng.uniform(0.4, 0.9, (n, cells, 1))], axis=-1)
    for cell in (3 * 8 + 3, 3 * 8 + 4):
        out[:, cell, :4] = [0.5, 0.5, np.log(5.0), np.log(5.0)]  # a 40 x 40 box centred in the cell
        out[:, cell, 4:] = [0.95, 0.9]
    out[:, 64 + 5, 2:4] = np.log(12.0)  # a large background prediction at stride 16, as real heads have
    return out.astype(np.float32)


def test_raw_yolox_head_is_decoded_and_scored_by_objectness_times_class():
    head = _yolox_raw()
    plan = MetricPlan(["output"], [head], {}, has_labels=False, image_size=(64, 64))
    (judged,) = plan.describe()
    assert judged["metric"] == "detection"
    assert "objectness" in judged["chosen"] and "raw grid offsets" in judged["chosen"]
    # Background cells' class scores are arbitrary: int8 noise there changes no detection.
    noisy = head.copy()
    noisy[:, :, 5] = np.random.default_rng(1).uniform(0.4, 0.9, noisy.shape[:2])
    result = _judge(plan, head, noisy)
    # The two proposals of the one object collapse to one detection per sample after NMS.
    assert result.score == 1.0 and result.details["detections_float"] == 3
    # An offset of 0.5 cell moves the decoded box by 4 pixels (IoU 0.82): still the same detection.
    nudged = head.copy()
    nudged[:, 3 * 8 + 3, :2] += 0.5
    nudged[:, 3 * 8 + 4, 4] = 0.0
    assert _judge(plan, head, nudged).score == 1.0
    # Two cells off at stride 8 (16 pixels on a 40-pixel box: IoU 0.43) is another box.
    moved = nudged.copy()
    moved[0, 3 * 8 + 3, :2] += 2.0
    assert _judge(plan, head, moved).score == pytest.approx(2 * 2 / 6)


def test_a_head_that_fits_no_stride_pyramid_is_read_as_plain_boxes():
    head = _boxes_and_scores(n=2, anchors=50)
    plan = MetricPlan(["output"], [head], {}, has_labels=False, image_size=(64, 64))
    (judged,) = plan.describe()
    assert judged["metric"] == "detection" and "objectness" not in judged["chosen"]
    assert "grid" not in judged["chosen"]


def _judge(plan, reference, candidate):
    judgement = plan.judge()
    judgement.update([reference], [candidate], None)
    (result,) = judgement.results()
    return result


def test_streaming_equals_one_pass():
    reference = RNG.standard_normal((24, 6, 12))
    candidate = reference + 0.05 * RNG.standard_normal(reference.shape)
    for metric in ("cosine", "sequence", "sqnr", "retrieval", "iou[0]"):
        plan = MetricPlan(["y"], [reference], {"y": metric}, has_labels=False)
        whole, parts = FidelityRun(["y"], plan), FidelityRun(["y"], plan)
        whole.update([reference], [candidate])
        for start in range(0, 24, 5):
            parts.update([reference[start:start + 5]], [candidate[start:start + 5]])
        assert whole.result().metrics[0].score == pytest.approx(parts.result().metrics[0].score, abs=1e-9), metric


def test_hooks_per_output_and_for_the_whole_model(tmp_path, monkeypatch):
    (tmp_path / "my_metrics.py").write_text(textwrap.dedent("""
        import numpy as np
        def agreement(reference, candidate, labels):
            return float(np.mean(np.abs(reference - candidate) < 0.5))
        def whole(reference, candidate, labels):
            return min(float(np.mean(np.abs(reference[k] - candidate[k]) < 0.5)) for k in reference)
        def broken(reference, candidate, labels):
            raise ValueError("no")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    reference = np.zeros((10, 4))
    candidate = reference.copy()
    candidate[:5, 0] = 1.0  # 5 of 40 elements off
    assert _score("my_metrics:agreement@0.8", reference, candidate).score == pytest.approx(35 / 40)
    plan = MetricPlan(["a", "b"], [reference, reference], {"*": "my_metrics:whole@0.9"}, has_labels=False)
    run = FidelityRun(["a", "b"], plan)
    run.update([reference, reference], [candidate, reference])
    (result,) = run.result().metrics
    assert result.output == "*" and result.score == pytest.approx(35 / 40) and not result.passed
    with pytest.raises(InputError, match="failed: ValueError: no"):
        _score("my_metrics:broken", reference, candidate)
    with pytest.raises(InputError, match="cannot import"):
        MetricPlan(["y"], [reference], {"y": "no_such_module_xyz:f"}, has_labels=False)
    sys.modules.pop("my_metrics", None)


@pytest.mark.parametrize("text, fragment", [
    ("top2", "unknown metric"), ("probs=iou[x]", "must be numbers"), ("cosine[0.3]", "only iou"),
    ("=", "not a metric spec"),
])
def test_bad_metric_specs_are_one_line_errors(text, fragment):
    with pytest.raises(InputError, match=fragment):
        parse_metric_spec(text)


def test_metric_for_an_unknown_output_is_refused():
    with pytest.raises(InputError, match="does not have"):
        MetricPlan(["y"], [np.zeros((2, 3))], {"z": "cosine"}, has_labels=False)


def test_bad_metric_flag_exits_2(cli, conv_onnx, tmp_path):
    calib = tmp_path / "c.npz"
    np.savez(calib, x=np.zeros((4, 1, 8, 8), np.float32))
    result = cli("convert", conv_onnx, "--calib", calib, "--metric", "top5", "-o", tmp_path / "out")
    assert result.code == 2 and "unknown metric 'top5'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def _search(model, feeds, **options):
    return search(model, target=load_target("host"), options=QuantizeOptions(measure_latency=False, **options),
                  calibration=feeds[:32], evaluation=feeds[32:], labels=None, timing_feeds=feeds[0])


def test_mixed_precision_converges_on_a_transformer_with_an_additive_mask():
    # (techniques off: with SmoothQuant and clipped ranges this model needs no revert at all,
    # test_techniques.py; here mixed precision must find its way alone)
    model, outcome = _search(transformer_model(), transformer_feeds(48), techniques=False)
    assert model is not None and outcome.shipped == "int8"
    judged = {m["output"]: m["metric"] for m in outcome.metrics}
    assert judged == {"hidden": "cosine", "sentence_embedding": "retrieval"}
    up_front = outcome.prepare["kept_float_up_front"]
    assert up_front["mask_add"].startswith("additive mask") and {"ln0", "ln1", "ln2", "softmax"} <= set(up_front)
    chosen = next(c for c in outcome.candidates if c.name == outcome.chosen)
    assert all(m.passed for m in chosen.fidelity.metrics)
    assert len(chosen.mixed_precision) <= 4 and chosen.mixed_precision[-1].meets_floor
    assert chosen.mixed_precision_ranking and chosen.mixed_precision_stop.startswith("floor met")
    # ranked on the first 8 of the 16 evaluation batches; what ships is judged on all 16
    assert {r.batches for r in chosen.mixed_precision_ranking} == {8} and chosen.fidelity.samples == 16
    # Without the mask rule the mask Add is quantized: one scale for -1e4 and the scores.
    assert not any(c.status == "ok" and "mask_add" not in c.float_nodes for c in outcome.candidates
                   if c.recipe.mode == "static")


def test_the_search_budget_bounds_mixed_precision():
    # The same transformer with no time left for the search: no candidate is reverted, the float model ships.
    model, outcome = _search(transformer_model(), transformer_feeds(48), techniques=False, search_budget_s=0)
    assert model is None and outcome.shipped == "float"
    below = [c for c in outcome.candidates if c.status == "below-floor"]
    assert below and all(not c.mixed_precision_ranking and c.mixed_precision_stop.startswith(
        "not tried: the time budget (mixed precision 180 s, the search 0 s)") for c in below)


def test_mixed_precision_converges_on_a_detector_with_scores_beside_boxes():
    # (floor 0.9: with 7-bit weights, the AVX2 default, this small head keeps ~0.945 of its boxes once the
    # concat is float; what matters here is the climb from ~0.55 in one revert, on every CPU)
    model, outcome = _search(detector_head_model(), detector_feeds(48), mode="static", techniques=False,
                             metrics={"detections": "detection@0.9"})
    assert outcome.metrics[0]["metric"] == "detection"
    (chosen,) = outcome.candidates
    assert chosen.status == "ok" and "concat" in chosen.float_nodes
    assert len(chosen.mixed_precision) <= 2 and chosen.mixed_precision[-1].meets_floor
    # The ranking measured the concat's revert as the one that helps most.
    assert chosen.mixed_precision_ranking[0].nodes == ["concat"] and chosen.mixed_precision_ranking[0].effect > 0.3
    detection = chosen.fidelity.metrics[0]
    assert detection.score >= 0.9 and detection.details["detections_float"] > 0


def test_a_revert_that_lifts_another_failing_output_ranks_above_none():
    # Two score maps below their floors (a detector's levels): reverting a group that lifts the second one
    # leaves the worst where it was, yet the ranking must see it; lifting the worst counts the most.
    from edgeopt.metrics import MetricResult
    from edgeopt.metrics.fidelity import Fidelity, OutputFidelity

    def fidelity(level8: float, level64: float) -> Fidelity:
        outputs = [OutputFidelity(name=name, cosine_mean=0.9, cosine_min=0.5, sqnr_db=10.0, max_abs_error=1.0)
                   for name in ("level8", "level64")]
        metrics = [MetricResult(output=name, metric="iou", score=score, floor=0.98, passed=False,
                                chosen="default") for name, score in (("level8", level8), ("level64", level64))]
        return Fidelity(samples=8, outputs=outputs, metrics=metrics)

    baseline, other_lifted, worst_lifted = fidelity(0.4, 0.0), fidelity(0.7, 0.0), fidelity(0.4, 0.3)
    assert other_lifted.margin == baseline.margin  # the decisive output did not move
    assert baseline.smooth_margin < other_lifted.smooth_margin < worst_lifted.smooth_margin


def test_what_feeds_a_log_stays_float_and_the_rest_ships_int8():
    # A spectrogram by convolution, then log(power): int8 steps sized for the loudest tone turn the quiet
    # bins into noise, and the log magnifies it (plain quantize_static: note-map IoU ~0.58 on this model).
    model, outcome = _search(log_spectrogram_model(), audio_feeds(48), mode="static", techniques=False,
                             metrics={"notes": "iou"})
    up_front = outcome.prepare["kept_float_up_front"]
    front_end = {"cqt_re", "cqt_im", "re_squared", "im_squared", "power", "floor"}
    assert front_end <= set(up_front) and all("feeds log" in up_front[name] for name in front_end)
    assert "head" not in up_front and "scale" not in up_front  # after the Log, int8 is fine
    assert model is not None and outcome.shipped == "int8"
    chosen = next(c for c in outcome.candidates if c.name == outcome.chosen)
    assert "head" not in chosen.float_nodes and not chosen.mixed_precision  # no revert was needed
    (iou,) = chosen.fidelity.metrics
    assert iou.metric == "iou" and iou.score >= 0.95


def test_weight_range_is_chosen_by_measured_error_on_every_cpu():
    """7-bit (reduce_range) and 8-bit weights are both measured; the more faithful ships. Which one
    that is depends on the CPU (u8×s8 pair sums saturate without VNNI), so the test checks the rule."""
    # (a lenient whole-output SQNR floor: both weight ranges pass, and their errors decide)
    model, outcome = _search(detector_head_model(), detector_feeds(48), metrics={"*": "sqnr@10"}, techniques=False)
    twins = [c for c in outcome.candidates if c.recipe.mode == "static" and c.recipe.activation_type == "u8"
             and c.recipe.op_types is None]
    assert sorted(c.recipe.reduce_range for c in twins) == [False, True]
    passing = [c for c in twins if c.status == "ok"]
    assert model is not None and len(passing) == 2
    assert outcome.chosen == max(passing, key=lambda c: c.fidelity.margin).name


def test_every_evaluation_pass_reports_its_samples():
    from edgeopt.events import Events

    seen = []
    feeds = detector_feeds(40)
    search(detector_head_model(), target=load_target("host"),
           options=QuantizeOptions(mode="static", measure_latency=False, techniques=False,
                                   metrics={"detections": "detection@0.5"}),
           calibration=feeds[:32], evaluation=feeds[32:], labels=None, events=Events(seen.append))
    passes = [e for e in seen if e.kind == "progress" and e.message.startswith("evaluating ")]
    assert passes and all(e.total == 8 for e in passes)
    finished = [e for e in passes if e.done == e.total]
    assert len(finished) >= 1 and finished[0].message.endswith("8/8 samples")
    assert [e.done for e in passes[:8]] == list(range(1, 9))  # one step per batch of one sample
