"""edgeopt report: the HTML page from real convert and profile runs, hostile names, partial
reports, the gate table, the CLI, and a real headless Chromium loading the page."""

from __future__ import annotations

import copy
import hashlib
import html
import json
import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from conftest import REPO, conv_classifier, run_cli
from edgeopt.errors import InputError
from edgeopt.gate.checks import GateResult
from edgeopt.report.html import PROFILE_SCHEMA_VERSION
from edgeopt.report.html import render_html as render_typed
from edgeopt.report.profile_schema import profile_report_from_json
from edgeopt.report.schema import report_from_json
from edgeopt.units import format_bytes, format_count

DIGITS = REPO / "models" / "digits"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOSTILE_NODES = {"conv": "<script>alert(1)</script>", "pool": '"><img src=x onerror=alert(2)>',
                 "fc": "fc & <b>bold</b>"}
HOSTILE_OUTPUT = "logits</td><script>alert(4)</script>"
NOT_RENDERED = "could not be rendered"


def render_html(report: dict[str, Any], gate: dict[str, Any] | None = None) -> str:
    """The page of a report document as its JSON holds it (validated as `edgeopt report` reads it)."""
    typed = (profile_report_from_json(report, "report") if report.get("kind") == "profile"
             else report_from_json(report, "report"))
    return render_typed(typed, GateResult.model_validate(gate) if gate is not None else None)


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _sig3(value: float) -> str:
    """3 significant digits without trailing zeros: a prefix of what the page prints."""
    return f"{value:.3g}"


def _text(page: str) -> str:
    """The page's visible text, roughly: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def _stage(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in report["stages"] if s["name"] == name)


def _assert_self_contained(page: str) -> None:
    assert "<script" not in page.lower()
    assert re.search(r"<(link|img|iframe|object|embed)\b(?![^>]*href=\"data:)", page, re.I) is None
    for attr in re.findall(r'\b(?:src|href|action|xlink:href)\s*=\s*"([^"]*)"', page, re.I):
        assert attr.startswith(("#", "data:")), attr
    assert "url(" not in page and "@import" not in page


# --------------------------------------------------------------------------- real runs (built once per module)


@pytest.fixture(scope="module")
def calibrated_targets(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("targets")
    result = run_cli("targets", "calibrate", "host", "--output-dir", folder, "--threads", "1", "--seconds", "0.05")
    assert result.code == 0, result.stderr
    return folder


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, calibrated_targets) -> Path:
    """digits CNN, int8 search timed on host, profiled on host, rpi4b and an NPU."""
    out = tmp_path_factory.mktemp("digits") / "out"
    result = run_cli("convert", DIGITS / "digits_cnn.onnx", "--calib", DIGITS / "calib.npz", "--eval",
                     DIGITS / "eval.npz", "-t", "host", "-t", "rpi4b", "-t", "coral-edgetpu",
                     "--targets-dir", calibrated_targets, "-o", out)
    assert result.code == 0, result.stderr
    return out / "report.json"


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> Path:
    """A model whose node names, output name, file and folder names are HTML/JS."""
    model = conv_classifier()
    for node in model.graph.node:
        node.name = HOSTILE_NODES.get(node.name, node.name)
    model.graph.name = "<svg onload=alert(3)>"
    old = model.graph.output[0].name
    model.graph.output[0].name = HOSTILE_OUTPUT
    for node in model.graph.node:
        node.output[:] = [HOSTILE_OUTPUT if o == old else o for o in node.output]
    onnx.checker.check_model(model)
    folder = tmp_path_factory.mktemp("hostile") / 'evil"<i>dir<b>'
    folder.mkdir()
    onnx.save(model, str(folder / "model<x>.onnx"))
    np.savez(folder / "calib.npz", x=np.random.default_rng(0).standard_normal((40, 3, 8, 8)).astype(np.float32))
    result = run_cli("convert", folder / "model<x>.onnx", "--calib", folder / "calib.npz", "-t", "rpi4b",
                     "-o", folder / "out")
    assert result.code == 0, result.stderr
    return folder / "out" / "report.json"


@pytest.fixture(scope="module")
def profile_run(tmp_path_factory, calibrated_targets) -> Path:
    path = tmp_path_factory.mktemp("profile") / "profile.json"
    result = run_cli("profile", DIGITS / "digits_cnn.onnx", "-t", "host", "-t", "rpi4b", "--targets-dir",
                     calibrated_targets, "--measure", "--runs", "10", "--threads", "1", "-o", path)
    assert result.code == 0, result.stderr
    return path


def _gate(report_path: Path, size: int) -> dict[str, Any]:
    return {"kind": "gate", "passed": False, "exit_code": 1, "config": "cfg/<edgeopt>.toml", "checks": [
        {"budget": "out/model.onnx @ rpi4b", "artifact": "out/model.onnx", "target": "rpi4b", "metric": "max_size",
         "limit": 4194304, "limit_text": "4 MiB", "actual": size, "actual_text": format_bytes(size), "unit": "bytes",
         "baseline": size - 1000, "delta": 1000, "delta_pct": 2.88, "status": "pass", "message": "within budget",
         "line": 12, "source": "file <out>"},
        {"budget": "out/model.onnx @ rpi4b", "artifact": "out/model.onnx", "target": "rpi4b", "metric": "max_latency",
         "limit": 0.01, "limit_text": "0.01 ms", "actual": 0.0767, "actual_text": "0.0767 ms", "unit": "ms",
         "baseline": None, "delta": None, "delta_pct": None, "status": "fail",
         "message": "latency 0.0767 ms > 0.01 ms <script>alert(5)</script>", "line": 14},
        {"budget": "out/model.onnx", "artifact": "out/model.onnx", "target": None, "metric": "min_accuracy",
         "limit": 0.9, "limit_text": "0.9", "actual": None, "actual_text": "-", "unit": "", "baseline": None,
         "delta": None, "delta_pct": None, "status": "error", "message": "no accuracy in the report", "line": 15},
        {"budget": "out/other.onnx", "artifact": "out/other.onnx", "target": None, "metric": "max_size",
         "limit": 1, "limit_text": "1 B", "actual": None, "actual_text": "-", "unit": "bytes", "baseline": None,
         "delta": None, "delta_pct": None, "status": "skip", "message": "artifact not built", "line": 20},
    ]}


# --------------------------------------------------------------------------- renderer on real reports


def test_convert_report_shows_the_key_numbers(digits_run):
    report = json.loads(digits_run.read_text())
    page = render_html(report)
    text = _text(page)
    _assert_self_contained(page)
    assert NOT_RENDERED not in page
    final, summary = report["final"], report["summary"]
    # header: model, final artifact (size, short sha, format, opset), version, time
    assert "<h1>digits_cnn.onnx</h1>" in page
    assert format_bytes(final["size_bytes"]) in text and f"{final['size_bytes']:,}" in text
    assert final["sha256"][:12] in text and final["sha256"] not in text  # short form shown
    assert final["path"] in text and f"opset {summary['opset']}" in text
    assert report["edgeopt_version"] in text and report["created_at"] in text
    assert format_count(summary["parameter_count"]) in text and format_count(summary["macs_total"]) in text
    # stages with durations, output sizes and parity
    for stage in report["stages"]:
        assert f"<td>{stage['name']}</td>" in page
    simplify = _stage(report, "simplify")
    assert f"{simplify['outputs'][0]['size_bytes']:,} B" in text
    assert f"nodes {simplify['details']['nodes_before']} → {simplify['details']['nodes_after']}" in text
    cosine = simplify["parity"][0]["outputs"][0]["cosine"]
    assert f"worst cosine {cosine:.6f}" in text
    # quantization: every candidate with its fidelity, latency ratio, and the outcome
    quant = _stage(report, "quantize")["details"]
    assert quant["reason"] in text
    for candidate in quant["candidates"]:
        assert candidate["name"] in text
        output = candidate["fidelity"]["outputs"][0]
        assert f"{output['cosine_mean']:.4f}" in text and f"{output['channel_cosine_min']:.4f}" in text
        assert f"{output['sqnr_db']:.1f} dB" in text
        if candidate["latency_ratio"] is not None:
            assert f"{candidate['latency_ratio']:.2f}×" in text
    if quant["shipped"] == "int8":
        assert re.search(re.escape(quant["chosen"]) + r"</code> <span class=\"badge ok\">ok</span> "
                         r"<span class=\"badge ok\">chosen</span>", page)
    assert _sig3(quant["float_latency"]["median_ms"]) in text
    # targets: latency and memory charts with every target's estimate, in SVG
    charts = re.findall(r"<svg.*?</svg>", page, re.S)
    latency_chart = next(c for c in charts if "Latency per target" in c)
    memory_chart = next(c for c in charts if "Peak memory per target" in c)
    for name, target in summary["targets"].items():
        assert f">{name}</text>" in latency_chart and f">{name}</text>" in memory_chart
        if target["latency_ms"] is None:  # e.g. an NPU whose profile states no memory bandwidth
            assert "no estimate: " + target["estimate_unavailable_reason"][:60] in _text(latency_chart)
        else:
            assert f"{_sig3(target['latency_ms'])}" in _text(latency_chart)
        assert format_bytes(target["weight_bytes"] + target["peak_activation_bytes"]) in memory_chart
    # Whether int8 ships (and so how much of it the NPU takes) is measured on this machine.
    tpu = summary["targets"]["coral-edgetpu"]
    assert f"Google Edge TPU: {tpu['accelerator_nodes']} nodes on it" in text
    # "(REQUIRED)" flags a model the TPU needs fully int8 but is not: float when int8 was not faster here
    assert ("(REQUIRED)" in text) == (tpu["full_int8_required"] and not tpu["full_int8"])
    # bar lengths follow the values: rpi4b is slower than host
    widths = {name: float(width) for width, name in re.findall(
        r'width="([\d.]+)" height="16" class="c-est"><title>([\w-]+): estimated', latency_chart)}
    ratio = summary["targets"]["rpi4b"]["latency_ms"] / summary["targets"]["host"]["latency_ms"]
    assert widths["rpi4b"] / widths["host"] == pytest.approx(ratio, rel=0.02)
    # heaviest nodes per target, by estimated time
    nodes = _stage(report, "profile")["details"]["rpi4b"]["nodes"]
    heaviest = max(nodes, key=lambda n: n["time_us"])
    assert f"{heaviest['time_us']:.1f}" in text and heaviest["name"] in text
    assert re.search(rf"rpi4b: top \d+ of {len(nodes)} nodes by estimated time", text)
    assert "Estimate vs measurement" not in text  # a convert report has no measurement


def test_profile_report_renders_estimates_measurements_and_comparison(profile_run):
    report = json.loads(profile_run.read_text())
    assert report["kind"] == "profile"
    page = render_html(report)
    text = _text(page)
    _assert_self_contained(page)
    assert NOT_RENDERED not in page
    assert "<h1>digits_cnn.onnx</h1>" in page and "image=1x1x8x8" in text
    for section in ("Targets: latency and memory", "Heaviest nodes", "Measurements", "Estimate vs measurement"):
        assert f"<h2>{section}</h2>" in page
    (measurement,) = report["measurements"]["host"]
    assert _sig3(measurement["latency_ms"]["p50"]) in text and "host measured, 1 thr" in page
    assert format_bytes(measurement["memory"]["peak_rss_increase_bytes"]) in text
    (comparison,) = report["comparisons"]
    assert f"{comparison['total']['ratio']:.2f}×" in text
    for op_type, row in comparison["by_op_type"].items():
        assert op_type in text and _sig3(row["measured_ms"]) in text
    assert _sig3(report["estimates"]["rpi4b"]["latency_ms"]) in text


def test_hostile_names_are_shown_as_text(hostile_run):
    report = json.loads(hostile_run.read_text())
    nodes = [n["name"] for n in _stage(report, "profile")["details"]["rpi4b"]["nodes"]]
    assert set(HOSTILE_NODES.values()) <= set(nodes)  # the names reached the report
    page = render_html(report, _gate(hostile_run, 1000))
    _assert_self_contained(page)
    assert NOT_RENDERED not in page
    assert "<img" not in page and "<b>" not in page and "<i>" not in page and "<svg onload" not in page
    for name in [*HOSTILE_NODES.values(), HOSTILE_OUTPUT]:
        assert html.escape(name, quote=True) in page
    assert "model&lt;x&gt;.onnx" in page and "evil&quot;&lt;i&gt;dir&lt;b&gt;" in page
    # the tiny model's int8 candidates are all bigger than the float model: each says why
    quant = _stage(report, "quantize")["details"]
    assert quant["shipped"] == "float" and all(c["status"] == "rejected" for c in quant["candidates"])
    text = _text(page)
    for candidate in quant["candidates"]:
        assert f"not shipped: {candidate['rejection']}" in text


HOSTILE = '<img src=x onerror=alert(9)>"\'&'
# values the report's models constrain to a set (statuses, formats, devices, ...): not free text
KEEP = {"kind", "status", "shipped", "activation_type", "weight_type", "calibration", "format", "mode", "bound",
        "device", "memory", "role", "peak_rss_scope"}


def _poison(value: Any, key: str | None = None) -> Any:
    """Every string and every data-named key of a report replaced by markup."""
    if isinstance(value, dict):
        data_keyed = key in {"targets", "estimates", "measurements", "by_op_type", "tool_versions"}
        return {(HOSTILE + k if data_keyed else k): _poison(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_poison(v, key) for v in value]
    if isinstance(value, str) and key not in KEEP and not (key == "name" and value in {
            "load", "export", "opset", "simplify", "quantize", "profile", "finalize"}):
        return HOSTILE + value
    return value


def test_every_report_string_is_escaped(digits_run, profile_run):
    for path in (digits_run, profile_run):
        report = _poison(json.loads(path.read_text()))
        page = render_html(report, _poison(_gate(path, 1000), "gate"))
        _assert_self_contained(page)
        assert "<img" not in page and NOT_RENDERED not in page
        assert page.count(html.escape(HOSTILE, quote=True)) > 40


def test_partial_reports_render_and_malformed_ones_are_refused_in_one_line(digits_run):
    report = json.loads(digits_run.read_text())
    minimal = render_html({"schema_version": 2, "kind": "convert", "edgeopt_version": "0.1.0"})
    assert "<h1>model</h1>" in minimal and "</html>" in minimal
    # an older/partial report: no summary, no final artifact, stages without details
    partial = copy.deepcopy(report)
    del partial["summary"], partial["final"]
    for stage in partial["stages"]:
        stage.pop("details")
    page = render_html(partial)
    assert "<h2>Pipeline stages</h2>" in page
    assert "<h2>Quantization</h2>" in page and "<h2>Heaviest nodes</h2>" not in page
    # a summary-only target digest (no full profile stage) still gives the charts
    digest_only = copy.deepcopy(report)
    digest_only["stages"] = [s for s in digest_only["stages"] if s["name"] != "profile"]
    page = render_html(digest_only)
    assert "Latency per target" in page and "<h2>Heaviest nodes</h2>" not in page
    # every value up to four levels deep replaced by each wrong type: the report is refused with the place
    # that is wrong (edgeopt report exits 2 on it), or, where the value is still valid, the page renders
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        if len(path) >= 4:
            return
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for key, child in items:
            if isinstance(key, int) and key > 1:
                continue  # two list items are enough
            paths.append((*path, key))
            walk(child, (*path, key))

    walk(report, ())
    assert len(paths) > 150
    refused = 0
    for path in paths:
        for wrong in (None, "text", [1, "x"], {"a": 1}, float("nan"), True):
            broken = copy.deepcopy(report)
            parent = broken
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = wrong
            try:
                page = render_html(broken)
            except InputError as exc:
                refused += 1
                assert exc.message.startswith("report") and "\n" not in exc.message and exc.hint, exc.message
                continue
            assert page.endswith("</html>\n")
    assert refused > 500


def test_render_is_pure(digits_run):
    report = json.loads(digits_run.read_text())
    before = copy.deepcopy(report)
    assert render_html(report) == render_html(report)
    assert report == before


def test_gate_budget_table(digits_run):
    report = json.loads(digits_run.read_text())
    size = report["final"]["size_bytes"]
    page = render_html(report, _gate(digits_run, size))
    text = _text(page)
    section = page[page.index('<section id="budgets">'):page.index("</section>", page.index('id="budgets"'))]
    assert '<span class="badge bad">FAILED</span>' in section
    assert "1 pass, 1 fail, 1 error, 1 skip" in _text(section) and "cfg/<edgeopt>.toml" in _text(section)
    assert "4 MiB" in text and format_bytes(size) in text and "+1000 B (+2.88%)" in text
    assert "file &lt;out&gt;" in section
    assert "0.0767 ms" in text and "latency 0.0767 ms > 0.01 ms <script>alert(5)</script>" in text
    for status in ("pass", "fail", "error", "skip"):
        assert f">{status}</span>" in section
    assert section.count('class="row-bad"') == 2
    passed = _gate(digits_run, size)
    passed["passed"], passed["checks"] = True, passed["checks"][:1]
    assert '<span class="badge ok">PASSED</span>' in render_html(report, passed)
    assert "the gate result lists no checks" in render_html(
        report, {"kind": "gate", "passed": True, "exit_code": 0, "checks": []})


def test_profile_schema_version_matches_profiling():
    from edgeopt.commands.profile import PROFILE_SCHEMA_VERSION as current

    assert PROFILE_SCHEMA_VERSION == current


# --------------------------------------------------------------------------- the CLI


def test_cli_writes_the_page_and_leaves_the_input_alone(digits_run, tmp_path):
    before = _sha(digits_run)
    out = tmp_path / "pages" / "digits.html"
    result = run_cli("report", digits_run, "-o", out)
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == str(out) and result.stderr == ""
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and "digits_cnn.onnx" in page
    assert sorted(p.name for p in out.parent.iterdir()) == ["digits.html"]  # no temp file left
    assert _sha(digits_run) == before


def test_cli_default_output_folder_argument_and_gate(digits_run, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "report.json").write_bytes(digits_run.read_bytes())
    gate = tmp_path / "gate.json"
    gate.write_text(json.dumps(_gate(digits_run, 1234)))
    gate_sha = _sha(gate)
    result = run_cli("report", folder, "--gate", gate)  # the convert OUT folder, default output beside it
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == str(folder / "report.html")
    assert "<h2>Budgets</h2>" in (folder / "report.html").read_text() and _sha(gate) == gate_sha


def test_cli_renders_a_profile_report(profile_run, tmp_path):
    result = run_cli("report", profile_run, "-o", tmp_path / "p.html")
    assert result.code == 0, result.stderr
    assert "<h2>Estimate vs measurement</h2>" in (tmp_path / "p.html").read_text()


@pytest.mark.parametrize("content, message", [
    (None, "report not found"),
    ("{not json", "is not JSON"),
    ("[1, 2]", "is not an edgeopt report"),
    ('{"schema_version": 3, "kind": "convert"}', "schema version 3"),
    ('{"kind": "convert"}', "schema version None"),
    ('{"schema_version": 1, "kind": "tune"}', "unknown report kind 'tune'"),
    ('{"schema_version": 1, "kind": "gate", "checks": []}', "is a gate result"),
    (b"\xff\xfe\x00bad", "cannot read report"),
])
def test_cli_bad_report_exits_2_with_one_line(tmp_path, content, message):
    path = tmp_path / "report.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    before = _sha(path) if path.exists() else None
    result = run_cli("report", path, "-o", tmp_path / "out.html")
    assert result.code == 2, result
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
    assert result.stderr.startswith("error: ") and result.stdout == ""
    assert not (tmp_path / "out.html").exists()
    assert (_sha(path) if path.exists() else None) == before


@pytest.mark.parametrize("content, message", [
    (None, "gate result not found"),
    ('{"kind": "convert", "schema_version": 1}', "is not a gate result (kind 'convert'"),
    ('{"kind": "gate", "passed": true, "exit_code": 0, "checks": {"a": 1}}', "invalid gate result at checks"),
    ('"gate"', "is not a gate result"),
])
def test_cli_bad_gate_exits_2(digits_run, tmp_path, content, message):
    gate = tmp_path / "gate.json"
    if content is not None:
        gate.write_text(content)
    result = run_cli("report", digits_run, "--gate", gate, "-o", tmp_path / "out.html")
    assert result.code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.html").exists()


def test_cli_refuses_to_overwrite_its_input(digits_run, tmp_path):
    copy_path = tmp_path / "report.json"
    copy_path.write_bytes(digits_run.read_bytes())
    before = _sha(copy_path)
    result = run_cli("report", copy_path, "-o", copy_path)
    assert result.code == 2 and "would overwrite the input" in result.stderr
    assert _sha(copy_path) == before
    result = run_cli("report", copy_path, "-o", tmp_path)
    assert result.code == 2 and "is a folder" in result.stderr
    (tmp_path / "blocker").write_text("a file")
    result = run_cli("report", copy_path, "-o", tmp_path / "blocker" / "page.html")
    assert result.code == 2 and "cannot write" in result.stderr


# --------------------------------------------------------------------------- a real browser


def _browser_or_skip():
    missing = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
        missing.append("the playwright Python package (pip install playwright)")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if missing:
        reason = "the headless browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI is set, so this test may not be skipped")
        pytest.skip(reason)
    return sync_playwright


def _artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("EDGEOPT_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _load(sync_playwright, page_path: Path, screenshot: Path) -> dict[str, Any]:
    url = page_path.resolve().as_uri()
    seen: dict[str, Any] = {"requests": [], "console": [], "errors": [], "dialogs": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: seen["requests"].append(r.url))
            page.on("console", lambda m: seen["console"].append((m.type, m.text)))
            page.on("pageerror", lambda e: seen["errors"].append(str(e)))
            page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
            page.route("**/*", lambda route: route.continue_() if route.request.url == url else route.abort())
            page.goto(url, wait_until="load")
            page.wait_for_timeout(200)  # anything late (onerror handlers, lazy loads) would show by now
            seen["text"] = page.inner_text("body")
            seen["title"] = page.title()
            seen["svg_boxes"] = page.eval_on_selector_all(
                "figure.chart svg", "els => els.map(e => [e.getBoundingClientRect().width, "
                                    "e.getBoundingClientRect().height])")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    seen["url"] = url
    return seen


def test_page_in_headless_chromium(digits_run, hostile_run, tmp_path):
    sync_playwright = _browser_or_skip()
    artifacts = _artifacts(tmp_path)
    report = json.loads(digits_run.read_text())
    page_path = artifacts / "report-digits.html"
    gate = tmp_path / "gate.json"
    gate.write_text(json.dumps(_gate(digits_run, report["final"]["size_bytes"])))
    assert run_cli("report", digits_run, "--gate", gate, "-o", page_path).code == 0
    shot = artifacts / "report-digits.png"
    seen = _load(sync_playwright, page_path, shot)
    assert seen["errors"] == [] and [m for m in seen["console"] if m[0] == "error"] == []
    assert seen["requests"] == [seen["url"]]  # the file itself, nothing else
    assert seen["dialogs"] == []
    text = seen["text"]
    assert seen["title"] == "edgeopt convert report: digits_cnn.onnx"
    assert format_bytes(report["final"]["size_bytes"]) in text and f"{report['final']['size_bytes']:,}" in text
    for stage in report["stages"]:
        assert stage["name"] in text
    assert _sig3(report["summary"]["targets"]["rpi4b"]["latency_ms"]) in text and "FAILED" in text
    assert len(seen["svg_boxes"]) >= 2 and all(w > 300 and h > 40 for w, h in seen["svg_boxes"])
    width, height = _png_size(shot)
    assert width == 1280 and height > 2000 and shot.stat().st_size > 50_000

    hostile_page = artifacts / "report-hostile.html"
    assert run_cli("report", hostile_run, "-o", hostile_page).code == 0
    seen = _load(sync_playwright, hostile_page, artifacts / "report-hostile.png")
    assert seen["dialogs"] == [] and seen["errors"] == [] and seen["requests"] == [seen["url"]]
    for name in HOSTILE_NODES.values():
        assert name in seen["text"]  # shown as text, not run
    assert (artifacts / "report-hostile.png").stat().st_size > 20_000


# --------------------------------------------------------------------------- the typed, versioned report


def test_the_committed_report_schema_is_the_models_schema():
    """docs/report.schema.json is exported from the report models; regenerate it when they change:
    python -c "import json, edgeopt.pipeline; from edgeopt.report.schema import report_json_schema as s;
    open('docs/report.schema.json','w').write(json.dumps(s(), indent=2, sort_keys=True) + '\\n')" """
    from edgeopt.report.schema import SCHEMA_VERSION, report_json_schema

    import edgeopt.pipeline  # noqa: F401  (every stage registers its details: the schema names them all)

    committed = json.loads((REPO / "docs" / "report.schema.json").read_text())
    assert committed == json.loads(json.dumps(report_json_schema()))
    assert committed["$id"].endswith(f"report-v{SCHEMA_VERSION}.json")
    assert {"quantization", "targets", "pruning", "device"} <= set(committed["$defs"]["RunSummary"]["properties"])


def test_a_version_1_report_still_loads_in_gate_and_report(cli, digits_run, tmp_path):
    from edgeopt.report.schema import read_report

    old = json.loads(digits_run.read_text())
    assert old["schema_version"] == 2
    old["schema_version"] = 1
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "report.json").write_text(json.dumps(old))
    (folder / "model.onnx").write_bytes((digits_run.parent / "model.onnx").read_bytes())
    report = read_report(folder / "report.json")
    assert report.schema_version == 2 and report.summary.quantization.shipped in ("int8", "float")
    assert report.summary.targets["rpi4b"].weight_bytes > 0  # attributes, not string keys
    page = cli("report", folder / "report.json", "-o", tmp_path / "page.html")
    assert page.code == 0, page.stderr
    (tmp_path / "edgeopt.toml").write_text('[gate]\nreport = "out/report.json"\n[[budgets]]\n'
                                           'artifact = "out/model.onnx"\ntarget = "rpi4b"\nmax_size = "1 MiB"\n'
                                           'max_latency_ms = 1000\n')
    gated = cli("gate", "--config", tmp_path / "edgeopt.toml", "--json")
    assert gated.code == 0, gated.stdout + gated.stderr
    checks = {c["metric"]: c for c in json.loads(gated.stdout)["checks"]}
    assert checks["latency_ms"]["source"] == "estimate for rpi4b"  # read from the version-1 report's summary


def test_an_early_version_1_report_without_a_device_target_loads(digits_run):
    """Reports of the first --ssh sessions wrote summary.device without "target": the first target stands in."""
    from edgeopt.report.schema import report_from_json

    old = json.loads(digits_run.read_text())
    old["schema_version"] = 1
    old["summary"]["device"] = {"host": "pi@board", "threads": 1, "p50_ms": 1.5, "p90_ms": 2.0,
                                "peak_rss_increase_bytes": 1000, "device": {}}
    report = report_from_json(old, "old report")
    assert report.summary.device.target == old["config"]["targets"][0] and report.summary.device.p50_ms == 1.5
