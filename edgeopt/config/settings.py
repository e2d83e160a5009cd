"""Run settings as data: what the CLI builds from flags and the pipeline consumes.

Unknown keys are rejected so a typo never silently disables a setting. The project
file (edgeopt.toml or [tool.edgeopt] in pyproject.toml) is validated by ``ProjectConfig``;
``config.project`` finds and reads it and turns errors into file:line messages.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from edgeopt.config.declare import Cli, Search


def _shapes(values: list[str]) -> dict[str, list[int]]:
    from edgeopt.data.specs import parse_input_shapes

    return {(name or ""): list(dims) for name, dims in parse_input_shapes(values).items()}


def _dtypes(values: list[str]) -> dict[str, str]:
    from edgeopt.data.specs import parse_input_dtypes

    return parse_input_dtypes(values)


def _dims(values: list[str]) -> dict[str, int]:
    from edgeopt.data.specs import parse_dims

    return parse_dims(values)


def _fills(values: list[str]) -> dict[str, str]:
    from edgeopt.data.specs import parse_fills

    return {name: fill.text for name, fill in parse_fills(values).items()}


def _pairs(values: list[str]) -> dict[str, str]:
    from edgeopt.data.specs import parse_state_pairs

    return parse_state_pairs(values)


def _factory_args(values: list[str]) -> dict[str, Any]:
    """NAME=VALUE, the value read as JSON where it parses (0.5, 3, true, "x", [1, 2]), else as text."""
    import json

    from edgeopt.errors import InputError

    parsed: dict[str, Any] = {}
    for item in values:
        name, sep, text = item.partition("=")
        if not sep or not name.strip().isidentifier():
            raise InputError(f"bad --factory-arg {item!r}", "write NAME=VALUE, e.g. --factory-arg width=0.5")
        try:
            parsed[name.strip()] = json.loads(text)
        except ValueError:
            parsed[name.strip()] = text
    return parsed


def _metrics(values: list[str]) -> dict[str, str]:
    from edgeopt.config.metric_spec import parse_metric_flags

    return parse_metric_flags(values)


class Bytes(int):
    """A size in bytes, written as a number of bytes or with a unit ("4 GiB", exactly: units.parse_bytes).
    Not a plain int, so that its flag takes text (cli/flags.py gives other types a str option)."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        return core_schema.with_info_before_validator_function(
            lambda value, info: _whole_limit(value, info.field_name or "size", "size"), core_schema.int_schema())


class ParityConfig(BaseModel):
    """How every produced float graph is held to its source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: Annotated[int, Cli(("--parity-samples",), "Random samples per parity check.")] = Field(3, ge=1, le=100)
    atol: Annotated[float, Cli(("--parity-atol",), "Absolute tolerance of parity checks.")] = Field(1e-4, ge=0)
    rtol: Annotated[float, Cli(("--parity-rtol",), "Tolerance relative to the largest reference value.")] = \
        Field(1e-3, ge=0)
    min_cosine: float = Field(0.9999, ge=-1, le=1)
    seed: int = 0


class QuantizeConfig(BaseModel):
    """int8 quantization settings; None fields mean "the target decides"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Annotated[Literal["auto", "static", "dynamic", "weights-only", "none"], Cli(
        ("--quantize",), "auto|static|dynamic|weights-only|none. auto quantizes when --calib is given, tries the "
                         "target's recipes and ships the fastest faithful one."),
        Search.choice("auto", "static", "dynamic", "none")] = "auto"
    calib: Annotated[str | None, Cli(("--calib",), "Calibration data: .npz keyed by input name, a folder of "
                                                   ".npy/.npz, or a folder of images (with --calib-preprocess).")] = None
    eval: Annotated[str | None, Cli(("--eval",), "Evaluation data (same formats; a 'labels' key gives task "
                                                 "accuracy). Default: hold out 20% of --calib.")] = None
    # image folders: size=224x224,mean=...,std=...,layout=NCHW,order=RGB
    calib_preprocess: Annotated[str | None, Cli(("--calib-preprocess",), "For image folders: size=224x224,"
                                                "mean=0.485/0.456/0.406,std=0.229/0.224/0.225,layout=NCHW,order=RGB")] \
        = None
    max_calib_samples: Annotated[int | None, Cli(("--max-calib-samples",), "Use at most N samples."),
                                 Search.choice(32, 128, 512)] = Field(None, ge=1)
    # memory against speed: activations of this many samples are alive at once per session
    calib_batch: Annotated[int, Cli(("--calib-batch",), "Samples per onnxruntime run in calibration and the other "
                                    "passes over the calibration data (fewer: less memory, slower). A batch axis the "
                                    "model fixes wins; recurrent state pairs run one sample at a time.")] = \
        Field(16, ge=1)
    # None: 70% of MemAvailable when the quantize stage starts
    max_memory: Annotated[Bytes | None, Cli(("--max-memory",), "Memory the quantize stage may expect to use, e.g. "
                                            "\"4 GiB\": a smaller --calib-batch is chosen to fit, or the run is "
                                            "refused before quantizing. Default: 70% of the memory available.")] \
        = None
    allow_random_calibration: Annotated[bool, Cli(("--allow-random-calibration",), "Calibrate on random inputs "
                                                  "(smoke tests only; warns).", switch=True)] = False
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    min_cosine: Annotated[float | None, Cli(
        ("--min-cosine",), "Fidelity floor: the worst output's cosine to float (mean, and per output channel). "
                           "Decides alone where no task metric applies (default 0.99); beside a task metric "
                           "(--metric, or labels in --eval) it is required too when given.")] = \
        Field(None, ge=-1, le=1)
    min_top1: Annotated[float | None, Cli(("--min-top1",), "Also require this top-1 agreement on classifier-like "
                                                          "outputs.")] = Field(None, ge=0, le=1)
    metrics: Annotated[dict[str, str], Cli(
        ("--metric",), "Task metric judging int8 fidelity: [OUTPUT=]METRIC[[PARAM]][@FLOOR], METRIC one of top1, "
                       "accuracy, cosine, retrieval, iou, detection, sequence, sqnr, exact, or a hook pkg.mod:fn "
                       "(repeatable; default: chosen per output from its shape, printed with the reason).",
        parse=_metrics, repeat=True)] = {}
    force_int8: Annotated[bool, Cli(("--force-int8",), "Ship int8 even when it is not faster on host.",
                                    switch=True)] = False
    # The latency rule where int8 is timed (-t host, --ssh): smaller gains are within run-to-run noise.
    min_speedup: Annotated[float, Cli(("--min-speedup",), "Where int8 is timed (host target, --ssh), ship it only "
                                      "when it is at least this much faster than float: 0.05 = 5% (the default); "
                                      "0 ships it when it is not slower.")] = Field(0.05, ge=0, lt=1)
    # Accuracy for speed: a tune dimension (the groups are named by the SQNR ranking mixed precision starts from).
    keep_float: Annotated[int, Cli(("--keep-float",), "Keep the N quantizer groups that lose the most accuracy "
                                   "(SQNR ranking) in float in every candidate, even where int8 meets the floor."),
                          Search.ints(0, 4)] = Field(0, ge=0)
    # Where latency is measured (host, --ssh): keep the layers whose int8 kernels are slower in float.
    speed_fallback: Annotated[bool, Cli(("--speed-fallback",), "Where latency is measured (host target, --ssh): "
                                        "keep in float the layers whose int8 kernels profile slower, if the model "
                                        "gets faster.", negative="--no-speed-fallback"),
                              Search.choice(True, False)] = True
    activation_type: Annotated[Literal["u8", "s8"] | None, Cli(("--activation-type",), "u8|s8 (default: the "
                                                                "target decides)."), Search.choice("u8", "s8")] = None
    weight_type: Annotated[Literal["s8", "u8"] | None, Cli(("--weight-type",), "s8|u8 (default s8).")] = None
    per_channel: Annotated[bool | None, Cli(("--per-channel",), "Weight scales per output channel (default) or per "
                                            "tensor.", negative="--per-tensor"), Search.choice(True, False)] = None
    calibration_method: Annotated[Literal["minmax", "entropy", "percentile", "per-activation"] | None, Cli(
        ("--calibration-method",), "minmax|entropy|percentile|per-activation (default: min/max, or a clipping "
                                   "method where it measures better)."),
        Search.choice("minmax", "entropy", "percentile", "per-activation")] = None
    format: Annotated[Literal["qdq", "qoperator"] | None, Cli(("--quant-format",), "qdq|qoperator (default qdq).")] \
        = None
    threads: Annotated[int, Cli(("--threads",), "Threads for latency measurement (host and --ssh).",
                                also=(("device", "threads"),))] = Field(1, ge=1)


    @field_validator("metrics")
    @classmethod
    def _metric_specs(cls, value: dict[str, str]) -> dict[str, str]:
        """Checked where they are written (flag or edgeopt.toml), not after quantizing."""
        from edgeopt.config.metric_spec import ALL_OUTPUTS, parse_metric_spec

        for output, text in value.items():
            parse_metric_spec(text if output == ALL_OUTPUTS else f"{output}={text}")
        return value


class DeviceConfig(BaseModel):
    """A device reached over SSH: it profiles the final model and decides whether int8 is faster."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # ~/.ssh/config alias, user@host or user@host:port
    ssh: Annotated[str, Cli(("--ssh",), "Device to profile the final model (and the float baseline) on, over SSH; "
                                        "its numbers decide whether int8 ships.", creates=True)]
    target: str | None = None  # the target profile this device is an instance of (default: the first target)
    python: Annotated[str, Cli(("--remote-python",), "Python on the device.")] = "python3"
    ssh_config: Annotated[str | None, Cli(("--ssh-config",), "OpenSSH client config file to use (ssh -F).")] = None
    accept_new_host_key: Annotated[bool, Cli(("--accept-new-host-key",), "Trust the device's host key on first "
                                             "contact (accept-new).", switch=True)] = False
    cache_dir: str = "~/.cache/edgeopt"
    runs: Annotated[int, Cli(("--device-runs",), "Measured runs per model on the device.")] = Field(50, ge=1)
    threads: int = Field(1, ge=1)


# -- pruning and fine-tuning (edgeopt.stages.prune applies them) --------------------------------

Criterion = Literal["magnitude", "taylor", "bn_scale"]
Scope = Literal["global", "per_layer"]


class PruneConfig(BaseModel):
    """What to prune and how. ``ratio`` is the fraction of output channels removed from each
    prunable layer (per_layer) or across all of them ranked together (global)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ratio: Annotated[float, Cli(("--prune",), "Remove this fraction of channels (0 < RATIO < 1) structurally, "
                                              "rounded to the target's SIMD width.", creates=True),
                     Search.floats(0.1, 0.7, step=0.05)]
    criterion: Annotated[Criterion, Cli(("--prune-criterion",), "magnitude|taylor|bn_scale."),
                         Search.choice("magnitude", "taylor")] = "magnitude"
    scope: Annotated[Scope, Cli(("--prune-scope",), "per_layer|global."), Search.choice("per_layer", "global")] = \
        "per_layer"
    # Module names (as in named_modules()); None: the layers producing the model's outputs.
    ignored_layers: Annotated[list[str] | None, Cli(("--prune-ignore",), "Layer (module name) to keep whole "
                                                    "(repeatable; default: the detected head).", repeat=True)] = None
    steps: Annotated[int, Cli(("--prune-steps",), "Prune iteratively in this many steps."), Search.ints(1, 4)] = \
        Field(1, ge=1, le=100)
    # Kept channels are rounded to a multiple of this; None: no rounding.
    channel_multiple: Annotated[int | None, Cli(("--prune-multiple",), "Round kept channels to this multiple "
                                                "(default: from the target).")] = Field(None, ge=1, le=1024)
    # ONNX inputs that cannot be converted to torch: continue unpruned (True) or refuse (False).
    allow_unprunable: Annotated[bool, Cli(("--allow-unprunable",), "An ONNX graph that cannot be pruned continues "
                                          "unpruned.", switch=True)] = False
    # In global scope, no layer loses more than this fraction (a layer emptied breaks the model).
    max_layer_ratio: float = Field(0.9, gt=0, lt=1)
    # Attention with separate q/k/v projections: remove whole heads ("whole"; "auto" does so where
    # such modules exist) or narrow every head ("dims"). See edgeopt/stages/prune/attention.py.
    heads: Annotated[Literal["auto", "whole", "dims"], Cli(("--prune-heads",), "Attention with separate q/k/v "
                     "projections: whole (remove heads), dims (narrow every head) or auto (whole where such "
                     "modules exist).")] = "auto"

    @field_validator("ratio")
    @classmethod
    def _ratio_in_range(cls, value: float) -> float:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value < 1):
            raise ValueError(f"the pruning ratio must be between 0 and 1 (exclusive), got {value!r}")
        return float(value)


class FinetuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: Annotated[int, Cli(("--epochs",), "Fine-tuning epochs (at most)."), Search.ints(2, 30)] = \
        Field(10, ge=1, le=10000)
    lr: Annotated[float, Cli(("--lr",), "Fine-tuning learning rate."), Search.floats(1e-4, 1e-2, log=True)] = \
        Field(1e-3, gt=0, lt=10)
    schedule: Annotated[Literal["cosine", "step", "constant"], Cli(("--lr-schedule",), "cosine|step|constant.")] = \
        "cosine"
    # L2 strength (Adam's weight decay)
    weight_decay: Annotated[float, Cli(("--l2",), "L2 regularization (weight decay)."),
                            Search.floats(1e-6, 1e-2, log=True)] = Field(0.0, ge=0)
    l1: Annotated[float, Cli(("--l1",), "L1 regularization strength."), Search.floats(1e-7, 1e-3, log=True)] = \
        Field(0.0, ge=0)  # L1 strength on Conv/Linear weights
    # epochs without a better validation loss before stopping
    patience: Annotated[int, Cli(("--patience",), "Epochs without a better validation loss before stopping."),
                        Search.ints(1, 6)] = Field(3, ge=1)
    min_delta: float = Field(0.0, ge=0)  # improvement smaller than this does not count
    batch_size: Annotated[int, Cli(("--batch-size",), "Fine-tuning batch size."), Search.choice(16, 32, 64)] = \
        Field(32, ge=1)
    # 0: no distillation; 1: teacher only
    distill_weight: Annotated[float, Cli(("--distill",), "Weight of distillation from the unpruned model (0: off)."),
                              Search.floats(0.0, 0.9, step=0.1)] = Field(0.0, ge=0, le=1)
    temperature: float = Field(4.0, gt=0)
    seed: int = 0
    threads: int | None = Field(None, ge=1)  # torch intra-op threads while training; None: leave as is

    @model_validator(mode="after")
    def _finite(self) -> FinetuneConfig:
        for name in ("lr", "weight_decay", "l1", "temperature", "min_delta"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite")
        return self


class FinetuneSettings(FinetuneConfig):
    """Fine-tuning after pruning: the training settings plus where the data comes from."""

    # .npz with inputs and labels, or a hook pkg.mod:fn / file.py:fn returning loaders
    data: Annotated[str, Cli(("--finetune",), "Fine-tune after pruning: .npz with inputs and 'labels', or a hook "
                                              "pkg.mod:fn returning loaders.", creates=True)]
    # a separate validation .npz; default: val_fraction of data held out
    val: Annotated[str | None, Cli(("--finetune-val",), "Validation .npz (default: hold out 20%).")] = None
    val_fraction: float = Field(0.2, gt=0, lt=1)

    def training(self) -> FinetuneConfig:
        return FinetuneConfig(**self.model_dump(exclude={"data", "val", "val_fraction"}))


class ConvertConfig(BaseModel):
    """The whole convert run, as the CLI's flags, ``[pipeline]`` in edgeopt.toml and the Python API all
    give it (in the file, paths are relative to the file, ``output`` names the output folder and
    ``input_shape`` is the only input's shape)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    source: str = ""
    output_dir: str = Field("out", validation_alias=AliasChoices("output_dir", "output"))
    # "" key: the only input
    input_shapes: Annotated[dict[str, list[int]], Cli(("--input-shape",), "Input shape NAME=1x3x224x224 "
                            "(repeatable; NAME= may be dropped for single-input models).", parse=_shapes)] = {}
    input_dtypes: Annotated[dict[str, str], Cli(("--input-dtype",), "Input dtype NAME=int64 (default float32).",
                                                parse=_dtypes)] = {}
    # sizes of named symbolic dims (--dim seq=128)
    dims: Annotated[dict[str, int], Cli(("--dim",), "Size of a named symbolic dim, NAME=SIZE (e.g. seq=128, "
                                                    "height=320), in every input that uses it (repeatable).",
                                        parse=_dims)] = {}
    # inputs the data lacks: zeros | ones | a number (--fill)
    fills: Annotated[dict[str, str | int | float], Cli(("--fill",), "Value of an input the data lacks: "
                     "NAME=zeros|ones|NUMBER (repeatable; float inputs default to zeros, integer inputs need data "
                     "or a fill).", parse=_fills)] = {}
    # a stream: output -> the input it feeds on the next call
    state_pairs: Annotated[dict[str, str], Cli(("--state-pair",), "A stream's recurrent state: OUTPUT=INPUT feeds "
                           "the output back into the input on the next call (repeatable).", parse=_pairs)] = {}
    opset: Annotated[int | None, Cli(("--opset",), "Target ONNX opset (>= 13). Default: keep the source's, "
                                                   "upgrading anything older than 13; torch's default for exports.")] \
        = None
    dynamic_batch: Annotated[bool, Cli(("--static-batch",), "Keep the batch axis fixed instead of dynamic.",
                                       switch=False)] = True
    simplify: Annotated[bool, Cli(("--no-simplify",), "Skip graph simplification (onnxslim).", switch=False)] = True
    widen_convs: Annotated[bool, Cli(("--no-widen-convs",), "Keep thin convolutions as they are (by default a "
                                     "Conv with few output channels computes several output columns at once "
                                     "where that measured faster here or on the --ssh device).",
                                     switch=False)] = True
    weights: Annotated[str | None, Cli(("--weights",), "state_dict for a factory source (loaded weights-only).")] \
        = None
    # keyword arguments of a factory source (width, depth, dropout): what `tune` searches as "factory.NAME"
    factory_args: Annotated[dict[str, Any], Cli(("--factory-arg",), "Keyword argument of a factory source, "
                                                "NAME=VALUE (repeatable; e.g. width=0.5).", parse=_factory_args,
                                                repeat=True)] = {}
    trust_pickle: Annotated[bool, Cli(("--trust-pickle",), "Allow unpickling Python objects (full nn.Module "
                                      "files). Runs code from the file: only for files you trust.", switch=True)] \
        = False
    keep_failed: Annotated[bool, Cli(("--keep-failed",), "Keep the work folder when a run fails.", switch=True)] = \
        False
    parity: ParityConfig = ParityConfig()
    # The first target picks the quantization recipe; every target gets a static profile.
    targets: Annotated[list[str], Cli(("--target", "-t"), "Hardware target (repeatable; edgeopt targets list). The "
                                      "first one picks the quantization recipe; each gets a static latency/memory "
                                      "profile.", repeat=True)] = Field(default_factory=lambda: ["host"],
                                                                         min_length=1)
    targets_dir: Annotated[str | None, Cli(("--targets-dir",), "Extra folder of target .toml files.")] = None
    format: Annotated[Literal["onnx", "tflite"], Cli(("--format",), "onnx|tflite. tflite also writes OUT/model.tflite: "
                                                      "the PyTorch source converted by litert-torch (pip install "
                                                      "'edgeopt[tflite-export]'), parity-checked with LiteRT.")] = "onnx"
    quantize: QuantizeConfig = QuantizeConfig()
    device: DeviceConfig | None = None
    prune: PruneConfig | None = None
    finetune: FinetuneSettings | None = None

    @field_validator("input_shapes", mode="before")
    @classmethod
    def _shape_texts(cls, value: object) -> object:
        """The file writes shapes as text ("1x3x224x224") or lists."""
        if not isinstance(value, dict):
            return value
        out = {}
        for name, dims in value.items():
            if isinstance(dims, str):
                from edgeopt.data.specs import parse_input_shapes
                from edgeopt.errors import InputError

                try:
                    (parsed,) = parse_input_shapes([dims]).values()
                except InputError as exc:
                    raise ValueError(f"{exc.message} ({exc.hint})") from None
                dims = list(parsed)
            out[name] = dims
        return out

    @model_validator(mode="before")
    @classmethod
    def _single_input_shape(cls, value: object) -> object:
        """``input_shape = "1x1x8x8"`` in the file: the only input's shape."""
        if isinstance(value, dict) and "input_shape" in value:
            value = dict(value)
            shape = value.pop("input_shape")
            value["input_shapes"] = {**dict(value.get("input_shapes") or {}), "": shape}
        return value


# ---------------------------------------------------------------------------------------------
# The project file: edgeopt.toml, or [tool.edgeopt] in pyproject.toml (loaded by config/project.py)

def _whole_limit(value: object, key: str, kind: str) -> int:
    """A positive size ("4 MiB", bytes) or count ("1.2M", MACs, parameters), parsed exactly (units.py)."""
    from edgeopt.errors import InputError
    from edgeopt.units import parse_bytes, parse_count

    if isinstance(value, bool) or not isinstance(value, (int, float, str)) or \
            (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"{key} must be a size like \"4 MiB\" or a number of bytes" if kind == "size"
                         else f"{key} must be a number")
    try:
        number = (parse_bytes if kind == "size" else parse_count)(value)
    except InputError as exc:
        raise ValueError(f"{exc.message}: {exc.hint}") from None
    if number <= 0:
        raise ValueError(f"{key} must be positive")
    return number


def _fraction(value: object, key: str, *, points: bool) -> float:
    """0.98 or "98%" (accuracy); "1pt" / "1%" or 0.01 (accuracy points). A bare number is a
    fraction, so it must be below 1 for a drop (1 would allow losing everything)."""
    import re

    if isinstance(value, bool):
        raise ValueError(f"{key} must be a number")
    if isinstance(value, (int, float)):
        number = float(value)
        if points and number >= 1:
            raise ValueError(f"{key} = {value!r} would allow a drop of {number * 100:g} points; "
                             f"write \"{value}pt\" for {value} points, or a fraction like 0.01")
    else:
        units = r"%|pt|pts|points" if points else r"%"
        match = re.fullmatch(rf"\s*(\d+(?:\.\d+)?)\s*({units})\s*", str(value).lower())
        if not match:
            example = "\"1pt\" or 0.01" if points else "0.98 or \"98%\""
            raise ValueError(f"{key}: bad value {value!r} (use {example})")
        number = float(match.group(1)) / 100
    if not math.isfinite(number) or not 0 <= number <= 1:
        raise ValueError(f"{key} must be between 0 and 1 (or 0% and 100%), got {value!r}")
    return number


def _growth(value: object, key: str) -> float:
    """"+5%" → 0.05. Only percentages: a bare 5 could mean +5% or +500%."""
    import re

    match = re.fullmatch(r"\s*\+?\s*(\d+(?:\.\d+)?)\s*%\s*", value) if isinstance(value, str) else None
    if match is None:
        if isinstance(value, str) and value.strip().startswith("-"):
            raise ValueError(f"{key} cannot be negative (it is the growth allowed over the baseline)")
        raise ValueError(f"{key}: bad growth {value!r} (use a percentage string like \"+5%\")")
    return float(match.group(1)) / 100


# Metrics a budget can limit: name → (unit, lower is better).
GROWTH_METRICS = ("size", "compressed_size", "params", "macs", "latency_ms", "peak_memory")


WRITTEN_LIMITS = ("max_size", "max_compressed_size", "max_peak_memory", "max_params", "max_macs")


class Budget(BaseModel):
    """One ``[[budgets]]`` entry: an artifact (path or glob), optionally a target, and limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    artifact: str
    target: str | None = None
    name: str | None = None  # a label for tables; default "artifact @ target"
    source: Literal["any", "estimated", "measured"] = "any"  # where latency / peak memory come from
    # "require-measured": an estimate decides a latency / peak-memory limit only when its validated error band
    # lies wholly on one side of it; otherwise the check asks for a measurement (exit 2)
    when_estimate_uncertain: Literal["use-estimate", "require-measured"] = "use-estimate"
    max_size: int | None = None
    max_compressed_size: int | None = None
    max_params: int | None = None
    max_macs: int | None = None
    max_latency_ms: float | None = Field(None, gt=0)
    max_peak_memory: int | None = None
    min_accuracy: float | None = None
    max_accuracy_drop: float | None = None
    min_fidelity: float | None = Field(None, ge=-1, le=1)
    max_growth: dict[str, float] | None = None  # metric → allowed growth over the baseline (0.05 = +5%)

    # each size and count limit as written ("30.492 kB"): the gate shows limits in the user's own units
    _written: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _remember_units(cls, data: Any, handler: Any) -> "Budget":
        budget = handler(data)
        if isinstance(data, dict):
            budget._written = {key: value.strip() for key, value in data.items()
                               if key in WRITTEN_LIMITS and isinstance(value, str)}
        return budget

    def written(self, field: str) -> str | None:
        """A size or count limit as the user wrote it, when it was a string with a unit."""
        return self._written.get(field)

    @field_validator("max_size", "max_compressed_size", "max_peak_memory", mode="before")
    @classmethod
    def _sizes(cls, value: object, info: Any) -> int | None:
        return None if value is None else _whole_limit(value, info.field_name, "size")

    @field_validator("max_params", "max_macs", mode="before")
    @classmethod
    def _counts(cls, value: object, info: Any) -> int | None:
        return None if value is None else _whole_limit(value, info.field_name, "count")

    @field_validator("min_accuracy", mode="before")
    @classmethod
    def _accuracy(cls, value: object) -> float | None:
        return None if value is None else _fraction(value, "min_accuracy", points=False)

    @field_validator("max_accuracy_drop", mode="before")
    @classmethod
    def _drop(cls, value: object) -> float | None:
        return None if value is None else _fraction(value, "max_accuracy_drop", points=True)

    @field_validator("max_growth", mode="before")
    @classmethod
    def _growths(cls, value: object) -> dict[str, float] | None:
        if value is None:
            return None
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(GROWTH_METRICS))
            if unknown:
                raise ValueError(f"max_growth names unknown metric(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(GROWTH_METRICS)}")
            return {metric: _growth(v, f"max_growth.{metric}") for metric, v in value.items()}
        return {"*": _growth(value, "max_growth")}

    @model_validator(mode="after")
    def _consistent(self) -> "Budget":
        limits = [name for name in type(self).model_fields if name.startswith(("max_", "min_")) and
                  getattr(self, name) is not None]
        if not limits:
            raise ValueError("this budget sets no limit (max_size, max_latency_ms, min_accuracy, ...)")
        if self.source != "any" and self.max_latency_ms is None and self.max_peak_memory is None:
            raise ValueError("source applies to max_latency_ms / max_peak_memory, and neither is set")
        if (self.max_latency_ms is not None or self.max_peak_memory is not None) and self.target is None:
            raise ValueError("max_latency_ms and max_peak_memory need a target (e.g. target = \"rpi4b\")")
        if self.max_size is not None and self.max_compressed_size is not None and \
                self.max_compressed_size > self.max_size * 1.01 + 1024:
            raise ValueError(f"max_compressed_size ({self.max_compressed_size} B) is larger than max_size "
                             f"({self.max_size} B): gzip never grows a model that much; one of them is a typo")
        if self.min_accuracy is not None and self.min_accuracy == 0:
            raise ValueError("min_accuracy = 0 limits nothing")
        return self

    @property
    def label(self) -> str:
        return self.name or (f"{self.artifact} @ {self.target}" if self.target else self.artifact)


class GateSettings(BaseModel):
    """``[gate]``: where `edgeopt gate` finds the run's report and the committed baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    report: str | None = None  # default: <pipeline.output>/report.json, else out/report.json
    baseline: str | None = None  # default for --baseline: a report/baseline file or a git ref (e.g. "main")
    baseline_file: str = "edgeopt-baseline.json"  # written by --update-baseline; read from a git ref
    profile_reports: list[str] = []  # `edgeopt profile -o` files with measurements to use


TUNE_OBJECTIVES = ("metric", "latency", "size", "memory")
TUNE_SAMPLERS = ("tpe", "nsga2", "gp", "random", "grid")


class TuneConfig(BaseModel):
    """``[tune]``, and the flags of `edgeopt tune`: the search over the pipeline's settings (edgeopt.tune)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trials: int = Field(20, ge=1)  # finished trials the study should hold (a resumed study counts its own)
    timeout_s: float | None = Field(None, gt=0)
    sampler: Literal["tpe", "nsga2", "gp", "random", "grid"] = "tpe"
    storage: str | None = None  # an Optuna storage URL; default sqlite in the output folder
    study: str = "edgeopt-tune"
    resume: bool = False  # the study must exist already
    seed: int = 0
    objectives: list[Literal["metric", "latency", "size", "memory"]] = Field(
        default_factory=lambda: ["metric", "latency", "size"], min_length=1)
    objective: Literal["metric", "latency", "size", "memory"] | None = None  # one scalar instead of a front
    # successive halving of the training budget (tune/halving.py): trials train for epochs/η², epochs/η, then
    # all epochs, going on only in the top 1/η of each rung; 0 or 1: every trial at the full budget
    halving: int = Field(3, ge=0)
    # latency (and peak memory) of each trial's model measured on this machine rather than estimated (-t host);
    # with --ssh the device measures every trial anyway
    measure: bool = False
    # "prune.ratio" -> {low, high, step?, log?} | [choices] | "search" (its declared range) | a fixed value
    space: dict[str, Any] = {}

    @field_validator("objectives")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"objectives repeat a name: {value}")
        return value


class ProjectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pipeline: ConvertConfig | None = None
    gate: GateSettings = GateSettings()
    budgets: list[Budget] = []
    tune: TuneConfig | None = None
