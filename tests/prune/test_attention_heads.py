"""Whole-head and head-size pruning of hand-written attention (separate q/k/v projections)."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgeopt.errors import InputError
from edgeopt.stages.prune.attention import find_attention_modules
from edgeopt.stages.prune.structured import PruneConfig, prune_module
from edgeopt.report.html import render_html
from edgeopt.report.schema import report_from_json

ENCODER_SOURCE = '''
import torch
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        split = lambda t: t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(-1)
        return self.out_proj((attn @ v).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1, self.attn, self.norm2 = nn.LayerNorm(dim), Attention(dim, heads), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Encoder(nn.Module):
    def __init__(self, dim=64, heads=8, depth=2, classes=5):
        super().__init__()
        self.embed = nn.Linear(16, dim)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        return self.head(self.blocks(self.embed(x)).mean(1))


def build():
    torch.manual_seed(0)
    return Encoder().eval()
'''


@pytest.fixture(scope="module")
def encoder_module():
    namespace: dict = {}
    exec(compile(ENCODER_SOURCE, "encoder.py", "exec"), namespace)  # noqa: S102 - the test's own source
    return namespace


def _head_rows(weight: torch.Tensor, heads: int) -> list[torch.Tensor]:
    return list(weight.detach().reshape(heads, -1, weight.shape[1]))


def test_whole_heads_removed_and_the_rest_computes_exactly_as_before(encoder_module):
    """Only the attention can shrink here (its input is the model input, its output the model
    output), so the pruned block must equal the original with the removed heads silenced."""
    torch.manual_seed(1)
    attention = encoder_module["Attention"](64, 8).eval()
    x = torch.randn(2, 7, 64)
    result = prune_module(attention, (x[:1],), PruneConfig(ratio=0.5))
    pruned = result.module
    (change,) = result.attention
    assert (change.heads_before, change.heads_after, change.head_size_before, change.head_size_after) == (8, 4, 8, 8)
    assert pruned.num_heads == 4 and pruned.head_dim == 8 and pruned.scale == pytest.approx(8 ** -0.5)
    assert pruned.q_proj.out_features == 32 and pruned.out_proj.in_features == 32 and pruned.out_proj.out_features == 64
    # Which heads survived: match the pruned q rows to the original heads.
    original = _head_rows(attention.q_proj.weight, 8)
    kept = [next(i for i, rows in enumerate(original) if torch.equal(rows, survivor))
            for survivor in _head_rows(pruned.q_proj.weight, 4)]
    assert len(set(kept)) == 4
    silenced = copy.deepcopy(attention)
    with torch.no_grad():
        for head in set(range(8)) - set(kept):
            silenced.v_proj.weight[head * 8:(head + 1) * 8] = 0
            silenced.v_proj.bias[head * 8:(head + 1) * 8] = 0
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), silenced(x), rtol=1e-5, atol=1e-5)


def test_head_dims_mode_keeps_the_heads_and_narrows_them(encoder_module):
    model = encoder_module["build"]()
    x = torch.randn(1, 10, 16)
    result = prune_module(model, (x,), PruneConfig(ratio=0.5, heads="dims"))
    for change in result.attention:
        assert (change.heads_after, change.head_size_after) == (8, 4)
    attention = result.module.blocks[0].attn
    assert attention.head_dim == 4 and attention.scale == pytest.approx(0.5)  # 1/sqrt(4)
    assert result.module(x).shape == (1, 5)


def test_auto_removes_heads_where_the_module_allows_it(encoder_module):
    model = encoder_module["build"]()
    result = prune_module(model, (torch.randn(1, 10, 16),), PruneConfig(ratio=0.25, steps=2))
    assert [(c.name, c.heads_after, c.head_size_after) for c in result.attention] == [
        ("blocks.0.attn", 6, 8), ("blocks.1.attn", 6, 8)]
    assert result.module.blocks[1].attn.num_heads == 6


def test_multihead_attention_and_fused_qkv_are_reported_not_head_pruned():
    class Fused(nn.Module):
        def __init__(self):
            super().__init__()
            self.num_heads = 4
            self.qkv = nn.Linear(32, 96)

    model = nn.Sequential(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), Fused())
    found, notes = find_attention_modules(model)
    assert found == []
    assert any("nn.MultiheadAttention keeps its 4 heads" in n for n in notes)
    assert any("fused 'qkv' projection, 4 heads kept" in n for n in notes)


def test_whole_heads_requested_without_attention_is_refused():
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    with pytest.raises(InputError, match="whole-head pruning found no attention module"):
        prune_module(model, (torch.randn(1, 8),), PruneConfig(ratio=0.5, heads="whole"))


def test_convert_prunes_heads_and_reports_them(cli, tmp_path):
    factory = tmp_path / "encoder.py"
    factory.write_text(ENCODER_SOURCE)
    result = cli("convert", f"{factory}:build", "--input-shape", "x=1x10x16", "-o", tmp_path / "out",
                 "--prune", "0.5", "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    pruning = report["summary"]["pruning"]
    assert [(a["name"], a["heads_before"], a["heads_after"]) for a in pruning["attention"]] == [
        ("blocks.0.attn", 8, 4), ("blocks.1.attn", 8, 4)]
    page = render_html(report_from_json(report, "report"))
    assert "attention heads" in page and "<code>blocks.1.attn</code>" in page and "8 → 4" in page
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"x": np.random.default_rng(0).standard_normal((1, 10, 16)).astype(np.float32)})
    assert out.shape == (1, 5)
    refused = cli("convert", f"{factory}:build", "--input-shape", "x=1x10x16", "-o", tmp_path / "bad",
                  "--prune", "0.5", "--prune-heads", "some")
    assert refused.code == 2 and "heads" in refused.stderr


@pytest.mark.parametrize(("initial", "ratio", "steps", "kept_per_step"), [
    (8, 0.25, 2, [7, 6]), (8, 0.3, 1, [6]), (8, 0.5, 3, [7, 5, 4]), (2, 0.9, 1, [1]), (4, 0.1, 1, [4])])
def test_head_step_ratio_removes_the_rounded_cumulative_share(initial, ratio, steps, kept_per_step):
    import math

    from edgeopt.stages.prune.attention import head_step_ratio

    current = initial
    for step, expected in enumerate(kept_per_step):
        r = head_step_ratio(initial, current, ratio, step, steps)
        current -= math.ceil(r * current) if r > 0 else 0  # what Torch-Pruning does with r
        assert current == expected
