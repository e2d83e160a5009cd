"""Task metrics: how an int8 model's outputs serve the task, judged per output, batch by batch.

One statistic cannot judge every model: a cosine over a DB detector's probability map or over one
dimension of an embedding refuses faithful models, and a whole-tensor cosine passes a detector whose
class scores collapsed beside its boxes. Each output is judged by the metric of its task:

| metric | for | score (1.0 = same as float) | default floor |
|---|---|---|---|
| ``top1`` | class scores ``[N, C]`` | argmax agreement | 0.98 |
| ``accuracy`` | the same, with labels | 1 - accuracy lost to int8 | 0.99 |
| ``cosine`` | anything else | mean per-sample cosine; fails when a channel collapses | 0.99 |
| ``retrieval`` | embeddings | nearest-neighbour agreement (cosine) | 0.98 |
| ``iou`` | masks, probability maps | IoU of the masks above a threshold (``iou[0.3]``) | 0.98 |
| ``detection`` | detector heads (boxes beside scores) | F1 of matched boxes (IoU ≥ 0.5, same class) | 0.98 |
| ``sequence`` | CTC / per-step class scores | per-step argmax agreement | 0.98 |
| ``sqnr`` | anything | signal-to-noise ratio in dB | 20 |
| ``exact`` | integer and bool outputs | exact element agreement | 1.0 |

A user hook ``pkg.mod:fn`` gets (float outputs, int8 outputs, labels) and returns a score, higher
is better. For one output it gets that output's arrays (samples on axis 0); for every output (no
``OUTPUT=``) it gets ``{name: array}`` dicts.

Every metric is an accumulator (``update`` per batch, ``result`` at the end) that keeps running sums
or per-sample values, never all activations: ``retrieval`` and hooks keep their output's arrays (an
embedding per sample), which is the whole evaluation set of that one output.

Specs (``--metric``, ``[pipeline] metrics``): ``[OUTPUT=]METRIC[[PARAM]][@FLOOR]``, for example
``top1``, ``probs=iou[0.3]@0.9``, ``scores=detection``, ``mypkg.metrics:ocr_accuracy@0.97``.
"""

from edgeopt.config.metric_spec import ALL_OUTPUTS, BUILTIN_FLOORS, MetricSpec, parse_metric_flags, parse_metric_spec
from edgeopt.metrics.accumulators import MetricHookError
from edgeopt.metrics.defaults import default_metric
from edgeopt.metrics.plan import Judgement, MetricPlan, MetricResult

__all__ = ["ALL_OUTPUTS", "BUILTIN_FLOORS", "Judgement", "MetricHookError", "MetricPlan", "MetricResult", "MetricSpec",
           "default_metric", "parse_metric_flags", "parse_metric_spec"]
