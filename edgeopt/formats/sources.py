"""What a model source is: a file of a known format, or a PyTorch factory ``pkg.mod:fn`` /
``path/file.py:fn``. One identification for every command; each command then says which formats
it takes (``convert`` all of them, ``inspect`` and ``profile`` the ones a graph reader exists for)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edgeopt.errors import ModelLoadError, UnsupportedFormatError
from edgeopt.formats.artifact import ModelFormat
from edgeopt.formats.registry import sniff_format

_FACTORY_RE = re.compile(r"^(?P<module>.+):(?P<func>[A-Za-z_][A-Za-z0-9_]*)$")
TORCH_FILES = (ModelFormat.TORCHSCRIPT, ModelFormat.TORCH_EXPORT, ModelFormat.TORCH_PICKLE)


@dataclass(frozen=True)
class Source:
    text: str
    format: ModelFormat
    path: Path | None  # None for a factory


def factory_parts(text: str) -> tuple[str, str] | None:
    """(module or file.py, function) of ``pkg.mod:fn`` / ``file.py:fn``, else None."""
    match = _FACTORY_RE.match(text)
    return (match.group("module"), match.group("func")) if match else None


def is_factory_spec(text: str) -> bool:
    """``pkg.mod:fn`` or ``path/to/file.py:fn`` (an existing file never counts)."""
    if Path(text).exists():
        return False
    parts = factory_parts(text)
    if parts is None:
        return False
    module = parts[0]
    return module.endswith(".py") or all(part.isidentifier() for part in module.split("."))


def identify_source(text: str, accepted: tuple[ModelFormat, ...] | None = None, command: str = "convert") -> Source:
    """The source ``text`` names, or a one-line error: missing, not a file, unknown format, or a format
    ``command`` does not take (``accepted``; None: every known one)."""
    path = Path(text)
    factories = accepted is None or ModelFormat.TORCH_FACTORY in accepted
    if not path.exists() and is_factory_spec(text):
        fmt, path_or_none = ModelFormat.TORCH_FACTORY, None
    elif not path.exists():
        if not factories:
            raise ModelLoadError(f"model file not found: {text}", "check the path")
        raise ModelLoadError(f"model not found: {text}", "check the path, or give a factory as package.module:function")
    elif not path.is_file():
        raise ModelLoadError(f"{text} is not a file", "give a model file (.onnx, .pt, .pt2) or a factory"
                             if factories else "give the path of an .onnx file")
    else:
        fmt, path_or_none = sniff_format(path), path
    if fmt is ModelFormat.UNKNOWN:
        raise ModelLoadError(f"cannot tell what kind of model {text} is",
                             "edgeopt reads .onnx, TorchScript/.pt, .pt2 files and pkg.module:function factories")
    if accepted is not None and fmt not in accepted:
        if fmt is ModelFormat.TFLITE:
            raise UnsupportedFormatError(f"{text} is a TFLite model; {command} does not read TFLite yet",
                                         f"{command} the ONNX model it came from")
        if fmt in TORCH_FILES or fmt is ModelFormat.TORCH_FACTORY:
            raise UnsupportedFormatError(
                f"{text} is a PyTorch source ({fmt.value}); {command} reads ONNX models",
                f"export it first: edgeopt convert {text} -o OUT --input-shape ..., then edgeopt {command} "
                "OUT/model.onnx")
        raise UnsupportedFormatError(f"{text} is {fmt.value}; {command} does not read it", "convert it to ONNX first")
    return Source(text, fmt, path_or_none)
