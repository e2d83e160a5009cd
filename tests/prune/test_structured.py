"""Structured pruning on real torch models with real Torch-Pruning: widths, rounding, ignored
layers, output parity where it must hold, and the refusals."""

from __future__ import annotations

import pytest

from edgeopt.errors import InputError
from edgeopt.stages.prune.structured import (PruneConfig, detect_head_layers, make_prune_config, preferred_channel_multiple,
                                      prune_module, round_channels)
from edgeopt.targets import TargetProfile, load_target

from .conftest import PlainCNN, TinyMobileNet, seeded

torch = pytest.importorskip("torch")
nn = torch.nn


def _widths(result) -> dict[str, tuple[int, int]]:
    return {layer.name: (layer.out_after, layer.in_after) for layer in result.layers}


def test_rounded_widths_match_the_target_multiple(mobilenet):
    x = torch.randn(1, 1, 16, 16)
    result = prune_module(mobilenet, x, PruneConfig(ratio=0.3, channel_multiple=8))
    outs = {name: out for name, (out, _) in _widths(result).items()}
    # kept = int(C * 0.7), then the nearest multiple of 8 (at least 8); coupled layers follow their group:
    # stem.0 16→11→8 (tied to blocks.0's residual output), expand 32→22→24 (depthwise follows),
    # blocks.1 out 24→16→16 (tied to blocks.2's residual), blocks.2 expand 48→33→32, head 64→44→48.
    assert outs == {
        "stem.0": 8, "blocks.0.block.0": 24, "blocks.0.block.3": 24, "blocks.0.block.6": 8,
        "blocks.1.block.0": 24, "blocks.1.block.3": 24, "blocks.1.block.6": 16,
        "blocks.2.block.0": 32, "blocks.2.block.3": 32, "blocks.2.block.6": 16,
        "head.0": 48, "classifier.1": 10,
    }
    # The real module agrees with the record, and still runs with the same output shape.
    assert result.module.head[0].weight.shape == (48, 16, 1, 1)
    assert result.module(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    assert result.params_after < result.params_before and result.macs_after < result.macs_before


def test_without_multiple_widths_follow_the_ratio(mobilenet):
    result = prune_module(mobilenet, torch.randn(1, 1, 16, 16), PruneConfig(ratio=0.5))
    outs = {name: out for name, (out, _) in _widths(result).items()}
    assert outs["stem.0"] == 8 and outs["blocks.2.block.0"] == 24 and outs["head.0"] == 32
    assert outs["classifier.1"] == 10


@pytest.mark.parametrize(("kept", "multiple", "current", "expected"), [
    (11, 8, 16, 8), (12, 8, 16, 16), (13, 4, 16, 12), (2, 8, 16, 8), (5, 8, 6, 6), (5, None, 6, 5), (0, None, 6, 1),
])
def test_round_channels(kept, multiple, current, expected):
    assert round_channels(kept, multiple, current) == expected


def _profile(**fields) -> TargetProfile:
    return TargetProfile(name="t", display_name="t", kind=fields.pop("kind", "cpu"), arch=fields.pop("arch", "x"),
                         **fields)


def test_channel_multiple_from_targets():
    assert preferred_channel_multiple(load_target("rpi5"))[0] == 4
    assert preferred_channel_multiple(load_target("cortex-m55"))[0] == 4
    assert preferred_channel_multiple(_profile(arch="x86_64", isa_features=("fma", "avx2")))[0] == 8
    assert preferred_channel_multiple(_profile(arch="x86_64", isa_features=("avx2", "avx512f")))[0] == 16
    assert preferred_channel_multiple(_profile(isa_features=("asimd",), preferred_channel_multiple=32))[0] == 32
    multiple, why = preferred_channel_multiple(_profile(kind="npu", arch="unknown"))
    assert multiple is None and "not rounded" in why


def test_head_detected_and_kept(mobilenet):
    x = torch.randn(1, 1, 16, 16)
    assert detect_head_layers(mobilenet, x) == ["classifier.1"]
    result = prune_module(mobilenet, x, PruneConfig(ratio=0.5))
    assert result.ignored_auto_detected and result.ignored_layers == ["classifier.1"]
    assert result.module.classifier[1].out_features == 10


def test_named_ignored_layers_keep_their_weights(mobilenet):
    x = torch.randn(1, 1, 16, 16)
    before = mobilenet.stem[0].weight.detach().clone()
    result = prune_module(mobilenet, x, PruneConfig(ratio=0.5, ignored_layers=["stem.0", "classifier.1"]))
    assert not result.ignored_auto_detected
    # The stem reads the image (nothing upstream to prune), so its whole weight is untouched.
    assert torch.equal(result.module.stem[0].weight, before)
    assert result.module.classifier[1].out_features == 10
    assert _widths(result)["blocks.2.block.0"][0] == 24  # the rest is still pruned


def test_original_module_is_left_alone(mobilenet):
    state = {k: v.clone() for k, v in mobilenet.state_dict().items()}
    prune_module(mobilenet, torch.randn(1, 1, 16, 16), PruneConfig(ratio=0.5))
    assert all(torch.equal(v, state[k]) for k, v in mobilenet.state_dict().items())


@pytest.mark.parametrize("scope", ["per_layer", "global"])
def test_pruning_zero_channels_keeps_outputs(plain_cnn, scope):
    with torch.no_grad():
        plain_cnn.conv1.weight[::2] = 0.0  # 8 of 16 channels contribute exactly nothing
    x = torch.randn(4, 3, 8, 8)
    expected = plain_cnn(x)
    result = prune_module(plain_cnn, x[:1], PruneConfig(ratio=0.5, scope=scope, ignored_layers=["conv2", "fc"]))
    assert _widths(result)["conv1"] == (8, 3)
    assert _widths(result)["conv2"] == (32, 8)
    assert torch.equal(result.module.conv1.weight, plain_cnn.conv1.weight[1::2])
    torch.testing.assert_close(result.module(x), expected, rtol=0, atol=1e-6)


def test_iterative_steps_reach_the_same_widths(mobilenet):
    x = torch.randn(1, 1, 16, 16)
    once = prune_module(mobilenet, x, PruneConfig(ratio=0.5, channel_multiple=4))
    stepped = prune_module(mobilenet, x, PruneConfig(ratio=0.5, channel_multiple=4, steps=3))
    assert _widths(stepped) == _widths(once)


def test_taylor_and_bn_scale_criteria(mobilenet):
    x = torch.randn(8, 1, 16, 16)
    labels = torch.randint(0, 10, (8,))
    taylor = prune_module(mobilenet, x[:1], PruneConfig(ratio=0.5, criterion="taylor"), data_batches=[(x, labels)])
    bn = prune_module(mobilenet, x[:1], PruneConfig(ratio=0.5, criterion="bn_scale"))
    assert _widths(taylor)["head.0"][0] == _widths(bn)["head.0"][0] == 32
    # BN scale ranks by |gamma|: the kept head channels are the 32 largest.
    gamma = mobilenet.head[1].weight.detach().abs()
    assert torch.allclose(bn.module.head[1].weight.detach().abs().sort().values,
                          gamma.sort().values[32:])


@pytest.mark.parametrize("ratio", [0, 1, 1.5, -0.2, float("nan")])
def test_ratio_outside_0_1_refused(ratio):
    with pytest.raises(InputError, match="between 0 and 1"):
        make_prune_config(ratio=ratio)


def test_no_prunable_layers_refused():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    with pytest.raises(InputError, match="no prunable layers.*ignored.*1"):
        prune_module(model, torch.randn(1, 3, 4), PruneConfig(ratio=0.5))
    with pytest.raises(InputError, match="no Conv or Linear"):
        prune_module(nn.Sequential(nn.ReLU()).eval(), torch.randn(1, 4), PruneConfig(ratio=0.5))


class _Detached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        with torch.no_grad():  # hides conv2 from autograd, which Torch-Pruning traces
            x = self.conv2(x)
        return self.fc(x.mean(dim=(2, 3)))


def test_untraceable_layer_refused_by_name():
    with pytest.raises(InputError, match="cannot trace layer 'conv2'"):
        prune_module(_Detached().eval(), torch.randn(1, 3, 8, 8), PruneConfig(ratio=0.5))


def test_other_refusals(plain_cnn):
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(InputError, match="bn_scale.*BatchNorm"):
        prune_module(plain_cnn, x, PruneConfig(ratio=0.5, criterion="bn_scale"))
    with pytest.raises(InputError, match="taylor criterion needs data"):
        prune_module(plain_cnn, x, PruneConfig(ratio=0.5, criterion="taylor"))
    with pytest.raises(InputError, match="unknown layer name.*nope"):
        prune_module(plain_cnn, x, PruneConfig(ratio=0.5, ignored_layers=["nope"]))
    with pytest.raises(InputError, match="rejected|fails"):
        prune_module(plain_cnn, torch.randn(1, 5, 8, 8), PruneConfig(ratio=0.5))


def test_digits_example_prunes_and_reports():
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "models" / "digits"
    spec = importlib.util.spec_from_file_location("_digits_model_for_prune", root / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build_model()
    model.load_state_dict(torch.load(root / "digits_cnn.pt", weights_only=True))
    result = prune_module(model, torch.randn(1, 1, 8, 8), PruneConfig(ratio=0.5, channel_multiple=4))
    assert _widths(result) == {"features.0": (8, 1), "features.3": (16, 8), "features.7": (32, 16),
                               "classifier": (10, 32)}
    summary = result.model_dump(mode="json")  # as the report holds it
    assert summary["params_before"] == 24058 and summary["params_after"] < 24058 / 3
    assert "module" not in summary


def test_seeded_helper_is_deterministic():
    a, b = seeded(TinyMobileNet), seeded(TinyMobileNet)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert isinstance(seeded(PlainCNN), PlainCNN)
