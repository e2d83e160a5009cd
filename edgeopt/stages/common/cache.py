"""Stage results cached by (stage, settings, input sha256): a stage that declares ``cache_key`` and ran
once on the same graph with the same settings and data is not run again; its record and output graph
come back from the cache. ``tune`` leans on this to re-run only the stages whose settings changed.

A cache entry is a folder named by the key's sha256 holding ``record.json`` and ``model.onnx`` (absent
when the stage handed its input on unchanged). Writes are atomic (a temporary folder renamed), so a
crashed run never leaves half an entry."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import onnx

from edgeopt.stages.common.records import StageRecord

CACHE_FORMAT = 1


def model_sha256(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


class StageCache:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.hits: list[str] = []  # stage names served from the cache in this run

    def key(self, stage: str, model: onnx.ModelProto | None, settings: dict[str, Any]) -> str:
        document = {"format": CACHE_FORMAT, "stage": stage, "input": model_sha256(model) if model is not None else None,
                    "settings": settings}
        return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()

    def get(self, key: str) -> tuple[StageRecord, onnx.ModelProto | None] | None:
        entry = self.folder / key
        try:
            record = StageRecord.model_validate_json((entry / "record.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        model_path = entry / "model.onnx"
        model = onnx.load(str(model_path)) if model_path.is_file() else None
        return record, model

    def put(self, key: str, record: StageRecord, model: onnx.ModelProto | None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".entry-", dir=self.folder))
        try:
            (staging / "record.json").write_text(record.model_dump_json(), encoding="utf-8")
            if model is not None:
                onnx.save(model, str(staging / "model.onnx"))
            target = self.folder / key
            if target.exists():  # another run stored the same result meanwhile
                shutil.rmtree(staging)
                return
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
