"""The architecture as a test (docs/architecture.md): lower layers never import higher ones, stages never
import each other, nobody imports another module's private names, and no module grows past 600 lines
without saying why in its docstring. Read from the source with ast: nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "edgeopt"

# Lower numbers are lower layers; a module may import its own layer and below.
LAYERS = {
    "errors": 0, "events": 0, "units": 0, "fsutil": 0, "numeric": 0, "__init__": 0,
    "config": 1, "formats": 1, "data": 1, "targets": 1, "graph": 1,
    "analysis": 2, "runtime": 2, "metrics": 2,
    "stages": 3,
    "remote": 4,
    "gate": 5, "report": 5, "commands": 5,
    "pipeline": 6, "tune": 6,
    "cli": 7, "__main__": 7,
}
SHARED_STAGE_CODE = {"stages", "stages.common"}  # what every stage may use: the Stage protocol, its context
MAX_LINES = 600
SIZE_REASON = "Over 600 lines because"


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found.append((".".join(parts), path))
    return found


def _area(module: str) -> str:
    """The area of ``edgeopt.x.y``: x (``__init__`` for the package itself); each stage under
    ``edgeopt.stages`` is an area of its own (``stages.quantize``)."""
    parts = module.split(".")
    if len(parts) > 2 and parts[1] == "stages":
        return f"stages.{parts[2]}"
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(area: str) -> int:
    return LAYERS.get(area.split(".")[0], 99)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names imported, line) for every edgeopt import, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "edgeopt":
            found.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "edgeopt"]
    return found


def test_every_area_has_a_layer():
    areas = {_area(module).split(".")[0] for module, _ in _modules()}
    assert not areas - set(LAYERS), f"add these areas to LAYERS (and docs/architecture.md): {areas - set(LAYERS)}"


def layering_violations(modules: list[tuple[str, Path]] | None = None) -> list[str]:
    violations = []
    for module, path in modules or _modules():
        mine = _area(module)
        for imported, names, line in _imports(path):
            theirs = _area(imported)
            where = f"{path.relative_to(REPO)}:{line}"
            if theirs != mine and _layer(theirs) > _layer(mine):
                violations.append(f"{where}: {mine} (layer {_layer(mine)}) imports {imported} "
                                  f"(layer {_layer(theirs)})")
            if mine.startswith("stages.") and theirs.startswith("stages.") and theirs != mine and \
                    mine not in SHARED_STAGE_CODE and theirs not in SHARED_STAGE_CODE:
                violations.append(f"{where}: stage {mine} imports stage {imported}")
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            if private and imported != module.rsplit(".", 1)[0]:
                violations.append(f"{where}: imports private name(s) {', '.join(private)} from {imported}")
            if any(part.startswith("_") for part in imported.split(".")[1:]) and \
                    imported.rsplit(".", 1)[0] != module.rsplit(".", 1)[0]:
                violations.append(f"{where}: imports private module {imported}")
    return violations


def test_no_forbidden_import():
    assert layering_violations() == []


def test_a_forbidden_import_is_caught(tmp_path):
    """The check itself fails on a lower layer importing a higher one, a stage importing a stage, and a
    private name crossing modules."""
    bad = tmp_path / "edgeopt" / "data" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from edgeopt.pipeline import convert\nfrom edgeopt.analysis.summary import _secret\n")
    stage = tmp_path / "edgeopt" / "stages" / "quantize" / "x.py"
    stage.parent.mkdir(parents=True)
    stage.write_text("def f():\n    from edgeopt.stages.prune.stage import run\n")
    global REPO
    saved = REPO
    REPO = tmp_path
    try:
        found = layering_violations([("edgeopt.data.bad", bad), ("edgeopt.stages.quantize.x", stage)])
    finally:
        REPO = saved
    assert any("data (layer 1) imports edgeopt.pipeline" in v for v in found)
    assert any("private name(s) _secret" in v for v in found)
    assert any("stage stages.quantize imports stage edgeopt.stages.prune.stage" in v for v in found)


# Static analysis and what it reads never see a model format: a format reaches them through its graph adapter.
FORMAT_NEUTRAL = ("edgeopt.analysis.memory", "edgeopt.analysis.placement", "edgeopt.analysis.profile",
                  "edgeopt.analysis.comparison", "edgeopt.graph.model", "edgeopt.graph.kinds", "edgeopt.graph.build")
FORMAT_LIBRARIES = ("onnx", "onnxruntime", "google.protobuf", "ai_edge_litert", "tflite_runtime", "tensorflow")


def format_imports(path: Path) -> list[str]:
    """Imports of a format's library or of a format-specific edgeopt module (edgeopt.graph.onnx_*)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        found += [n for n in names if n.split(".")[0] in FORMAT_LIBRARIES or n.startswith("google.protobuf")
                  or n.startswith(("edgeopt.graph.onnx_", "edgeopt.formats.onnx"))]
    return found


@pytest.mark.parametrize("module", FORMAT_NEUTRAL)
def test_static_analysis_imports_no_format(module):
    path = REPO / (module.replace(".", "/") + ".py")
    assert format_imports(path) == [], f"{module} must work on graph.model only"


def test_a_format_import_is_caught(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("import onnx\nfrom edgeopt.graph.onnx_shapes import TensorInfo\n")
    assert format_imports(bad) == ["onnx", "edgeopt.graph.onnx_shapes"]


@pytest.mark.parametrize("module, path", _modules(), ids=[m for m, _ in _modules()])
def test_modules_stay_small_or_say_why(module, path):
    lines = path.read_text(encoding="utf-8").count("\n")
    if lines <= MAX_LINES:
        return
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert SIZE_REASON in docstring, f"{module} has {lines} lines: split it, or say '{SIZE_REASON} ...' in its docstring"
