"""ModelArtifact: one model file a stage produced or consumed, and where it came from."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from edgeopt.fsutil import sha256_file


class ModelFormat(str, Enum):
    ONNX = "onnx"
    TFLITE = "tflite"
    TORCHSCRIPT = "torchscript"
    TORCH_EXPORT = "torch-export"  # .pt2 from torch.export.save
    TORCH_PICKLE = "torch-pickle"  # torch.save of a module or a state_dict
    TORCH_FACTORY = "torch-factory"  # "package.module:function" or "file.py:function"
    UNKNOWN = "unknown"


class ModelArtifact(BaseModel):
    """A model on disk. ``lineage`` lists the sha256 of what it was made from, oldest first."""

    model_config = ConfigDict(extra="forbid")

    path: str
    format: ModelFormat
    sha256: str | None = None
    size_bytes: int | None = None
    opset: int | None = None
    produced_by: str | None = None  # stage name; None for the user's source
    external_files: list[str] = []
    lineage: list[str] = []

    @classmethod
    def from_file(
        cls,
        path: Path,
        fmt: ModelFormat,
        *,
        opset: int | None = None,
        produced_by: str | None = None,
        external_files: list[Path] | None = None,
        parent: ModelArtifact | None = None,
    ) -> ModelArtifact:
        path = Path(path)
        extra = list(external_files or [])
        size = path.stat().st_size + sum(p.stat().st_size for p in extra)
        lineage = [*parent.lineage, parent.sha256] if parent and parent.sha256 else []
        return cls(
            path=str(path),
            format=fmt,
            sha256=sha256_file(path),
            size_bytes=size,
            opset=opset,
            produced_by=produced_by,
            external_files=[str(p) for p in extra],
            lineage=lineage,
        )
