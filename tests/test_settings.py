"""Settings declared once: each field's default, bounds, flag and search space sit beside it, and the CLI,
edgeopt.toml and the Python API build the same ConvertConfig."""

from __future__ import annotations

from typing import Annotated

import pytest
import typer
from pydantic import BaseModel, Field, ValidationError
from typer.testing import CliRunner

from edgeopt.cli.flags import given_settings, with_setting_options
from edgeopt.config.declare import Cli, Search, declared, search_space
from edgeopt.config.settings import ConvertConfig


def test_every_declared_flag_is_an_option_of_convert():
    from edgeopt.cli.app import app

    help_text = CliRunner().invoke(app, ["convert", "--help"], terminal_width=200).output
    flags = [flag for item in declared(ConvertConfig) if item.cli for flag in item.cli.flags]
    assert len(flags) > 50
    missing = [flag for flag in flags if flag not in help_text]
    assert missing == []


@pytest.mark.parametrize("argv, expected", [
    (["--no-simplify"], {"simplify": False}),
    (["--static-batch"], {"dynamic_batch": False}),
    (["--no-speed-fallback"], {"quantize": {"speed_fallback": False}}),
    (["--per-tensor"], {"quantize": {"per_channel": False}}),
    (["--threads", "2"], {"quantize": {"threads": 2}, "device": {"threads": 2}}),
    (["-t", "rpi4b", "-t", "host"], {"targets": ["rpi4b", "host"]}),
    (["--input-shape", "x=1x3x8x8", "--dim", "seq=12"], {"input_shapes": {"x": [1, 3, 8, 8]}, "dims": {"seq": 12}}),
    (["--prune", "0.5", "--l2", "0.001"], {"prune": {"ratio": 0.5}, "finetune": {"weight_decay": 0.001}}),
    (["--eval", "e.npz", "--quantize", "static"], {"quantize": {"eval": "e.npz", "mode": "static"}}),
])
def test_a_flag_sets_the_field_it_is_declared_on(argv, expected):
    seen = {}

    def command(**settings):
        seen.update(given_settings(ConvertConfig, settings)[0])

    app = typer.Typer()
    app.command()(with_setting_options(ConvertConfig, command))
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert seen == expected


def test_a_new_declared_field_is_a_new_flag_with_its_help():
    class Tiny(BaseModel):
        level: Annotated[int, Cli(("--level",), "How hard to try."), Search.ints(1, 3)] = Field(2, ge=1, le=3)

    seen = {}
    app = typer.Typer()
    app.command()(with_setting_options(Tiny, lambda **settings: seen.update(given_settings(Tiny, settings)[0])))
    assert "How hard to try." in CliRunner().invoke(app, ["--help"]).output
    assert CliRunner().invoke(app, ["--level", "3"]).exit_code == 0 and seen == {"level": 3}
    assert search_space(Tiny) == {"level": Search.ints(1, 3)}


def test_every_search_space_fits_its_field():
    """Each value tune may draw is a valid value of the field it is declared on (bounds included)."""
    space = search_space(ConvertConfig)
    assert {"prune.ratio", "quantize.calibration_method", "finetune.lr", "finetune.weight_decay"} <= set(space)
    fields = {".".join(item.path): item for item in declared(ConvertConfig)}
    for path, search in space.items():
        values = list(search.values) if search.kind == "choice" else [search.low, search.high]
        for value in values:
            section, _, name = path.rpartition(".")
            model = type(getattr(ConvertConfig.model_construct(), section, None) or _section(section)) if section \
                else ConvertConfig
            try:
                model.__pydantic_validator__.validate_assignment(model.model_construct(), name, value)
            except ValidationError as exc:
                pytest.fail(f"{path}: search value {value!r} is not valid for the field: {exc.errors()[0]['msg']}")
        assert fields[path].cli is not None, f"{path} is searchable but has no flag"


def _section(name: str):
    from edgeopt.config.settings import DeviceConfig, FinetuneSettings, PruneConfig

    return {"prune": PruneConfig.model_construct(), "finetune": FinetuneSettings.model_construct(),
            "device": DeviceConfig.model_construct()}[name]


def test_the_file_and_the_flags_build_the_same_settings(tmp_path):
    from edgeopt.config.project import load_config, pipeline_config

    (tmp_path / "edgeopt.toml").write_text('[pipeline]\nsource = "m.onnx"\noutput = "out"\ninput_shape = "1x3x8x8"\n'
                                           'targets = ["rpi4b"]\n[pipeline.quantize]\nmin_cosine = 0.95\n')
    from_file = pipeline_config(load_config(tmp_path / "edgeopt.toml"))
    from_api = ConvertConfig(source=str(tmp_path / "m.onnx"), output_dir=str(tmp_path / "out"),
                             input_shapes={"": [1, 3, 8, 8]}, targets=["rpi4b"],
                             quantize={"min_cosine": 0.95})
    assert from_file == from_api
