"""Bad input gets one clear line on stderr, a documented exit code, and no traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from conftest import conv_classifier


def _one_line_error(result, code: int = 2, *fragments: str) -> None:
    assert result.code == code, (result.code, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("command", ["inspect", "convert"])
def test_missing_file(cli, tmp_path, command):
    args = [command, tmp_path / "nope.onnx"] + (["-o", tmp_path / "out"] if command == "convert" else [])
    _one_line_error(cli(*args), 2, "not found")


@pytest.mark.parametrize("command", ["inspect", "convert"])
def test_truncated_onnx(cli, tmp_path, command):
    good = conv_classifier().SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(good[: len(good) // 2])
    args = [command, path] + (["-o", tmp_path / "out"] if command == "convert" else [])
    _one_line_error(cli(*args), 2, "truncated")
    assert not (tmp_path / "out" / "model.onnx").exists()


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes_onnx(cli, tmp_path, seed):
    path = tmp_path / "noise.onnx"
    path.write_bytes(os.urandom(64 + seed * 1000))
    result = cli("inspect", path)
    _one_line_error(result, 2)


def test_empty_file(cli, tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    _one_line_error(cli("inspect", path), 2, "empty")


@pytest.mark.parametrize("spec", ["x=1x3xAx8", "x=", "x=1,,3", "=1x3", "x=0x3x8x8", "x=-1x3x8x8"])
def test_bad_input_shape_syntax(cli, conv_onnx, tmp_path, spec):
    _one_line_error(cli("convert", conv_onnx, "-o", tmp_path / "out", "--input-shape", spec), 2, "--input-shape")


def test_unknown_input_name(cli, conv_onnx, tmp_path):
    _one_line_error(cli("convert", conv_onnx, "-o", tmp_path / "out", "--input-shape", "image=1x3x8x8"),
                    2, "unknown input 'image'", "x")


@pytest.mark.parametrize("spec,fragment", [("x=1x3x8", "rank"), ("x=1x4x8x8", "axis 1 is fixed to 3")])
def test_shape_the_onnx_model_rejects_statically(cli, conv_onnx, tmp_path, spec, fragment):
    _one_line_error(cli("convert", conv_onnx, "-o", tmp_path / "out", "--input-shape", spec), 2, fragment)


def test_shape_the_onnx_model_rejects_at_run_time(cli, tmp_path):
    from onnx import TensorProto, helper, numpy_helper
    import numpy as np

    # Symbolic dims that must agree: MatMul [n, k] x [4, 2] needs k == 4.
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "k"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
        initializer=[numpy_helper.from_array(np.ones((4, 2), np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    path = tmp_path / "mm.onnx"
    onnx.save(model, str(path))
    _one_line_error(cli("convert", path, "-o", tmp_path / "out", "--input-shape", "x=2x5"), 2, "rejected inputs x=2x5")


def test_shape_the_torch_model_rejects(cli, torch_factory, tmp_path):
    _one_line_error(cli("convert", f"{torch_factory}:build", "-o", tmp_path / "out", "--input-shape", "image=1x5x8x8"),
                    2, "rejected inputs image=1x5x8x8")


def test_torch_source_without_shape(cli, torch_factory, tmp_path):
    _one_line_error(cli("convert", f"{torch_factory}:build", "-o", tmp_path / "out"), 2, "--input-shape image=")


def test_unwritable_output_folder(cli, conv_onnx, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    _one_line_error(cli("convert", conv_onnx, "-o", blocker / "out"), 2, "cannot write to output folder")
    _one_line_error(cli("convert", conv_onnx, "-o", blocker), 2, "not a folder")


def test_read_only_output_folder(cli, conv_onnx, tmp_path):
    """A folder the user may not write; root ignores permissions, so for root it is a read-only mount."""
    import subprocess

    folder = tmp_path / "ro"
    folder.mkdir()
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if as_root:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], check=True)
    else:
        folder.chmod(0o500)
    try:
        _one_line_error(cli("convert", conv_onnx, "-o", folder), 2, "cannot write")
    finally:
        if as_root:
            subprocess.run(["umount", str(folder)], check=True)
        else:
            folder.chmod(0o700)


@pytest.mark.parametrize("spec,fragment", [
    ("no_such_pkg_xyz.models:build", "cannot import factory module"),
    ("{factory}:missing_function", "has no callable 'missing_function'"),
    ("{factory}:build_broken", "factory exploded"),
    ("{factory}:build_not_a_module", "not a torch.nn.Module"),
    ("{missing}:build", "not found"),
])
def test_factory_errors(cli, torch_factory, tmp_path, spec, fragment):
    spec = spec.format(factory=torch_factory, missing=tmp_path / "missing.py")
    _one_line_error(cli("convert", spec, "-o", tmp_path / "out", "--input-shape", "1x3x8x8"), 2, fragment)


def test_factory_module_with_syntax_error(cli, tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("def build(:\n")
    _one_line_error(cli("convert", f"{bad}:build", "-o", tmp_path / "out", "--input-shape", "1x3x8x8"), 2,
                    "SyntaxError")


def _tflite_file(path: Path) -> Path:
    # A FlatBuffer header with the TFLite file identifier is enough to be recognised.
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 64)
    return path


def test_tflite_is_refused_clearly(cli, tmp_path):
    model = _tflite_file(tmp_path / "m.tflite")
    _one_line_error(cli("inspect", model), 2, "TFLite")
    _one_line_error(cli("convert", model, "-o", tmp_path / "out"), 2, "TFLite")


def test_pytorch_file_on_inspect_points_to_convert(cli, tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)
    _one_line_error(cli("inspect", path), 2, "PyTorch", "edgeopt convert")


def test_external_data_outside_model_folder_is_refused(cli, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x00" * 4096)
    folder = tmp_path / "model"
    folder.mkdir()
    model = conv_classifier()
    tensor = model.graph.initializer[0]
    raw_len = len(tensor.float_data) * 4 or 4 * 3 * 3 * 3 * 4
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", str(raw_len))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    _one_line_error(cli("inspect", path), 2, "outside the model's folder")
    _one_line_error(cli("convert", path, "-o", tmp_path / "out"), 2, "outside the model's folder")


def test_unknown_option_is_usage_error(cli, conv_onnx):
    _one_line_error(cli("inspect", conv_onnx, "--no-such-flag"), 2, "--no-such-flag", "edgeopt inspect --help")


def test_bad_parity_option_value(cli, conv_onnx, tmp_path):
    _one_line_error(cli("convert", conv_onnx, "-o", tmp_path / "out", "--parity-samples", "0"), 2)


def _console_script() -> str:
    script = shutil.which("edgeopt", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the edgeopt console script is not installed next to this Python")
    return script


def test_console_script_exit_codes_and_no_traceback(tmp_path):
    script = _console_script()
    run = subprocess.run([script, "inspect", str(tmp_path / "missing.onnx")], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.startswith("error: model file not found") and "Traceback" not in run.stderr
    debug = subprocess.run([script, "--debug", "inspect", str(tmp_path / "missing.onnx")],
                           capture_output=True, text=True)
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    version = subprocess.run([script, "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("edgeopt ")


def test_help_on_every_command(cli):
    from edgeopt.cli.app import app

    import typer.main

    group = typer.main.get_command(app)
    paths = [[]]
    for name, command in group.commands.items():
        paths.append([name])
        for sub in getattr(command, "commands", {}):
            paths.append([name, sub])
    for path in paths:
        result = cli(*path, "--help")
        assert result.code == 0, (path, result.stderr)
        assert "Usage:" in result.stdout


def test_optional_typed_input_is_a_clear_error(cli, tmp_path):
    from onnx import TensorProto, helper

    optional = helper.make_value_info("x", helper.make_optional_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, [2])))
    graph = helper.make_graph(
        [helper.make_node("OptionalGetElement", ["x"], ["y"])], "opt", [optional],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path = tmp_path / "optional.onnx"
    onnx.save(model, str(path))
    _one_line_error(cli("convert", path, "-o", tmp_path / "out"), 2, "numeric tensors")


def test_hard_linked_external_data_is_refused(cli, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    onnx.save(conv_classifier(), str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="w.bin", size_threshold=0)
    os.link(folder / "w.bin", tmp_path / "elsewhere.bin")
    _one_line_error(cli("convert", folder / "m.onnx", "-o", tmp_path / "out"), 2, "hard link")


def test_truncated_external_data_without_length(cli, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    onnx.save(conv_classifier(), str(folder / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="w.bin", size_threshold=0)
    model = onnx.load(str(folder / "m.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        keep = [e for e in tensor.external_data if e.key != "length"]
        del tensor.external_data[:]
        tensor.external_data.extend(keep)
    onnx.save(model, str(folder / "m.onnx"))
    (folder / "w.bin").write_bytes((folder / "w.bin").read_bytes()[:100])
    _one_line_error(cli("inspect", folder / "m.onnx"), 2, "truncated")


def test_terminal_escapes_in_a_library_message_are_dropped(cli, tmp_path):
    """torch colours some of its errors: the one error line stays plain text (CI logs, files)."""
    factory = tmp_path / "coloured.py"
    factory.write_text("def build_model():\n    raise RuntimeError('\\x1b[31mcolour\\x1b[0m from \\x1b[1;33mtorch\\x1b[0m')\n")
    result = cli("convert", f"{factory}:build_model", "--input-shape", "1x4", "-o", tmp_path / "out")
    assert result.code == 2, result.stderr
    assert "colour from torch" in result.stderr and "\x1b" not in result.stderr
