"""The faithful int8 candidates of a search, by name: files in the stage's work folder when it has one (the
timing and profiling sessions open the files, and Python holds no copy of their weights), else bytes."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from pathlib import Path

from edgeopt.runtime.runner import ModelSource


class ModelStore(MutableMapping[str, ModelSource]):
    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._models: dict[str, ModelSource] = {}
        self._written = 0

    def __setitem__(self, name: str, data: ModelSource) -> None:
        if self.folder is not None and isinstance(data, bytes):
            self._written += 1
            path = self.folder / f"quantize-candidate-{self._written}.onnx"
            path.write_bytes(data)
            data = path
        self._drop(name)
        self._models[name] = data

    def __getitem__(self, name: str) -> ModelSource:
        return self._models[name]

    def __delitem__(self, name: str) -> None:
        self._drop(name)
        del self._models[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def bytes_of(self, name: str) -> bytes:
        model = self._models[name]
        return Path(model).read_bytes() if isinstance(model, (str, Path)) else model

    def _drop(self, name: str) -> None:
        old = self._models.get(name)
        if isinstance(old, Path) and old.parent == self.folder:
            old.unlink(missing_ok=True)
