"""Static analysis: the cost, memory and placement of the neutral graph (graph.model) on a target profile
(profile, memory, placement), estimate-vs-measurement comparison, and ONNX graph summaries for inspect and
the quantize stage (summary, footprint).

Pure library code: nothing here prints, imports torch, mutates the caller's model or reads external
weight data.
"""

from edgeopt.analysis.summary import GraphSummary, summarize_graph

__all__ = ["GraphSummary", "summarize_graph"]
