"""The pipeline's settings as `convert` and `tune` build them: the project file's [pipeline] (or MODEL and -o),
refined by the given flags, validated once with errors that name the flag."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeopt.cli.flags import flags_of_sections
from edgeopt.cli.output import warn
from edgeopt.config.settings import ConvertConfig


def project_pipeline(config_file: Path | None, output: Path | None) -> tuple[dict[str, Any], str]:
    """The [pipeline] of the project file (paths resolved against it), as settings to refine with flags."""
    from edgeopt.config.project import find_config, load_config, pipeline_config
    from edgeopt.errors import InputError

    path = find_config(config_file)
    if path is None:
        raise InputError("no MODEL given, and no edgeopt.toml (or [tool.edgeopt] in pyproject.toml) here",
                         "pass MODEL -o OUT, or declare [pipeline] source = \"model.onnx\" in edgeopt.toml")
    loaded = pipeline_config(load_config(path), output_override=str(output) if output else None)
    return loaded.model_dump(), path.name


def merged_settings(base: dict[str, Any], partial: dict[str, Any], flags: dict[str, str], origin: str) -> dict[str, Any]:
    """``base`` (the file's pipeline, or MODEL and -o) refined by the given flags. A section the run does
    not set up (--ssh, --prune, --finetune, or its table in the file) ignores its other flags, with a
    warning naming them."""
    merged = dict(base)
    creators = flags_of_sections(ConvertConfig)
    for key, value in partial.items():
        if isinstance(value, dict) and key in creators:
            creator = creators[key][0]
            primary = {f"{key}.{field}" for field in value if flags.get(f"{key}.{field}") != "--threads"}
            if merged.get(key) is None and creator not in {flags[p] for p in primary}:
                named = sorted({flags[p] for p in primary})
                if named:
                    table = f"[pipeline.{key}]" if origin != "the command line" else "its flag"
                    warn(f"{', '.join(named)} ignored: neither the command line nor {origin} sets up {key} "
                         f"(add {creator} or {table})")
                continue
            merged[key] = {**(merged.get(key) or {}), **value}
        elif isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "input_shapes":
            # a section (quantize, parity) or a table (fills, dims, state_pairs, input_dtypes): the flags add to
            # the file's entries; given shapes replace the file's (an unnamed one cannot sit beside named ones)
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    if "targets" in merged:
        merged["targets"] = list(dict.fromkeys(merged["targets"]))
    return merged


def validated_settings(merged: dict[str, Any], flags: dict[str, str], command: str = "convert") -> Any:
    """The run's settings, validated once; a bad flag value names the flag."""
    from pydantic import ValidationError

    from edgeopt.config.declare import flag_of
    from edgeopt.errors import InputError, first_validation_error

    try:
        return ConvertConfig.model_validate(merged)
    except ValidationError as exc:
        where, message = first_validation_error(exc)
        loc = tuple(exc.errors()[0]["loc"])
        flag = next((flag for path, flag in flags.items() if tuple(path.split(".")) == loc[:len(path.split("."))]),
                    None) or flag_of(ConvertConfig, loc)
        raise InputError(f"bad value for {flag or where}: {message}", f"see edgeopt {command} --help") from None
