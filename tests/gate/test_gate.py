"""edgeopt gate against real convert reports and models: every budget kind passing and failing,
units, baselines (report, baseline file, git ref), exit codes, JUnit, Markdown, GitHub output."""

from __future__ import annotations

import json
import subprocess
from xml.etree import ElementTree

import pytest

from edgeopt.analysis.summary import summarize_graph
from edgeopt.fsutil import gzip_size


@pytest.fixture(autouse=True)
def not_on_github(monkeypatch):
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def facts(runs):
    """The numbers the budgets are held against, computed here independently of the gate."""
    import onnx

    report = runs.report("int8")
    model = runs.int8 / "model.onnx"
    summary = summarize_graph(onnx.load(str(model)))
    rpi4b = report["summary"]["targets"]["rpi4b"]
    quant = report["summary"]["quantization"]
    return {
        "max_size": model.stat().st_size,
        "max_compressed_size": gzip_size([model]),
        "max_params": summary.parameter_count,
        "max_macs": summary.macs_total,
        "max_latency_ms": rpi4b["latency_ms"],
        "max_peak_memory": rpi4b["peak_memory_bytes"],  # the runtime model (analysis.runtime_memory)
        "min_accuracy": quant["accuracy_int8"],
        "max_accuracy_drop": quant["accuracy_float"] - quant["accuracy_int8"],
        "min_fidelity": quant["worst_cosine"],
    }


def budget_toml(key: str, value, target: str | None = "rpi4b") -> str:
    return ('[[budgets]]\nartifact = "out/model.onnx"\n' + (f'target = "{target}"\n' if target else "")
            + f"{key} = {json.dumps(value)}\n")


@pytest.mark.parametrize("key", ["max_size", "max_compressed_size", "max_params", "max_macs", "max_latency_ms",
                                 "max_peak_memory", "min_accuracy", "max_accuracy_drop", "min_fidelity"])
def test_each_budget_kind_passes_at_its_value_and_fails_past_it(cli, project, runs, key):
    actual = facts(runs)[key]
    maximum = key.startswith("max_")
    if key == "max_accuracy_drop" and actual == 0:
        passing, failing = 0.001, None  # nothing can fail a zero drop
    elif key in ("min_accuracy", "min_fidelity"):
        passing, failing = actual * 0.999, min(1.0, actual + 1e-6) if actual < 1 else None
    else:
        passing = actual * 1.01 if maximum else actual * 0.99
        failing = actual * 0.99 if maximum else actual * 1.01
    if key in ("max_size", "max_compressed_size", "max_peak_memory", "max_params", "max_macs"):
        passing, failing = int(passing) + 1, int(failing)
    config = project.write(budget_toml(key, passing))
    ok = cli("gate", "--config", config, "--json")
    assert ok.code == 0, ok.stdout + ok.stderr
    (check,) = json.loads(ok.stdout)["checks"]
    assert check["status"] == "pass" and check["actual"] == pytest.approx(actual)
    if failing is None:
        return
    config = project.write(budget_toml(key, failing))
    bad = cli("gate", "--config", config, "--json")
    assert bad.code == 1, bad.stdout + bad.stderr
    (check,) = json.loads(bad.stdout)["checks"]
    assert check["status"] == "fail" and check["line"] == 1


def test_units_in_the_table_and_one_failure_exits_1(cli, project, runs):
    size = facts(runs)["max_size"]
    config = project.write(f'''
[[budgets]]
artifact = "out/model.onnx"
max_size = "4 MiB"
max_params = "1.2M"

[[budgets]]
name = "tight"
artifact = "out/model.onnx"
max_size = "{(size - 1) / 1000} kB"
''')
    result = cli("gate", "--config", config)
    assert result.code == 1
    written = f"{(size - 1) / 1000}"
    decimals = max(2, len(written.partition(".")[2]))  # the actual size in the limit's unit and precision
    assert f"FAIL: tight: size {size / 1000:.{decimals}f} kB ({size:,} B) exceeds max_size {written} kB " \
           f"({size - 1:,} B)" in result.stdout
    data = json.loads(cli("gate", "--config", config, "--json").stdout)
    assert [c["limit_text"] for c in data["checks"]] == ["≤ 4 MiB (4,194,304 B)", "≤ 1.2M (1,200,000)",
                                                          f"≤ {(size - 1) / 1000} kB ({size - 1:,} B)"]
    assert [c["limit"] for c in data["checks"]] == [4 * 1024 * 1024, 1_200_000, size - 1]


@pytest.mark.parametrize("unit, scale", [("B", 1), ("kB", 1000), ("MB", 1000**2), ("KiB", 1024), ("MiB", 1024**2),
                                         ("GiB", 1024**3)])
def test_a_size_limit_at_the_exact_byte_in_every_unit(cli, project, runs, unit, scale):
    """Whatever size the int8 model has on this CPU, its size written exactly in any unit passes and
    one byte less fails (size / 1000 and size / 1024**k are finite decimals)."""
    from decimal import Decimal

    size = facts(runs)["max_size"]
    config = project.write(f'[[budgets]]\nname = "exact"\nartifact = "out/model.onnx"\n'
                           f'max_size = "{Decimal(size) / scale:f} {unit}"\n\n'
                           f'[[budgets]]\nname = "one byte less"\nartifact = "out/model.onnx"\n'
                           f'max_size = "{Decimal(size - 1) / scale:f} {unit}"\n')
    result = cli("gate", "--config", config, "--json")
    assert result.code == 1, result.stdout + result.stderr
    exact, less = json.loads(result.stdout)["checks"]
    assert (exact["status"], less["status"]) == ("pass", "fail")
    assert (exact["limit"], less["limit"]) == (size, size - 1)
    assert isinstance(exact["limit"], int) and exact["actual"] == size
    # shown as written, the exact byte count beside it, and the actual size in the same unit
    written = f"{Decimal(size) / scale:f} {unit}"
    if unit == "B":
        assert exact["limit_text"] == f"≤ {size:,} B" and exact["actual_text"] == f"{size:,} B"
    else:
        assert exact["limit_text"] == f"≤ {written} ({size:,} B)"
        # the actual size to as many decimals as the check's limit was written with (2 to 6): a size
        # ending in 0 (28,840 B) reads "28.84 kB" beside a limit of 28.84 kB, "28.840 kB" beside 28.839 kB
        for check, bytes_written in ((exact, size), (less, size - 1)):
            digits = f"{Decimal(bytes_written) / scale:f}".partition(".")[2]
            decimals = min(6, max(2, len(digits)))
            assert check["actual_text"] == f"{size / scale:.{decimals}f} {unit} ({size:,} B)"
        assert less["actual_text"] != less["limit_text"][2:]


@pytest.mark.parametrize("key", ["max_params", "max_macs"])
@pytest.mark.parametrize("suffix, scale", [("", 1), ("k", 1000), ("M", 1000**2), ("G", 1000**3)])
def test_a_count_limit_at_the_exact_count_in_every_suffix(cli, project, runs, key, suffix, scale):
    from decimal import Decimal

    count = facts(runs)[key]
    config = project.write(f'[[budgets]]\nartifact = "out/model.onnx"\n{key} = "{Decimal(count) / scale:f}{suffix}"\n'
                           f'\n[[budgets]]\nartifact = "out/model.onnx"\n'
                           f'{key} = "{Decimal(count - 1) / scale:f}{suffix}"\n')
    result = cli("gate", "--config", config, "--json")
    assert result.code == 1, result.stdout + result.stderr
    exact, less = json.loads(result.stdout)["checks"]
    assert (exact["status"], exact["limit"], less["status"], less["limit"]) == ("pass", count, "fail", count - 1)
    if suffix:
        assert exact["limit_text"] == f"≤ {Decimal(count) / scale:f}{suffix} ({count:,})"


@pytest.mark.parametrize("text, expected", [
    ('[[budgets]]\nartifact = "out/model.onnx"\nmax_sise = "4 MiB"\n', ":3: budgets[0].max_sise: unknown key (did you mean max_size?)"),
    ('[[budgets]]\nartifact = "out/model.onnx"\nmax_size = "4 MeB"\n', ":3: budgets[0].max_size: bad size '4 MeB'"),
    ('[[budgets]]\nartifact = "out/model.onnx"\nmax_latency_ms = 5\n', ":1: budgets[0]: max_latency_ms and max_peak_memory need a target"),
    ('[[budgets]]\nartifact = "out/model.onnx"\n', ":1: budgets[0]: this budget sets no limit"),
    ('[[budgets]]\nartifact = "out/model.onnx"\nmax_size = "1 MiB"\nmax_compressed_size = "2 MiB"\n', "one of them is a typo"),
    ('[[budgets]]\nartifact = "out/model.onnx"\nmax_size = "1 MiB"\nsource = "measured"\n', "source applies to max_latency_ms"),
    ('[[budgets]]\nartifact = "out/model.onnx"\nmin_accuracy = 1.5\n', "min_accuracy must be between 0 and 1"),
    ('[[budgets]]\nartifact = "out/model.onnx"\nmax_size = 1\nmax_growth = { size = "5%", sise = "1%" }\n', "unknown metric(s) sise"),
    ('[[budgets]]\nartifact = "out/missing.onnx"\nmax_size = "1 MiB"\n', ":2: budgets[0].artifact: 'out/missing.onnx' matches no file"),
    ('[[budgets]]\nartifact = "out/model.onnx"\ntarget = "rpi9"\nmax_latency_ms = 4\n', ":3: budgets[0].target: unknown target 'rpi9'"),
    ('[gate]\nreprot = "x"\n[[budgets]]\nartifact = "out/model.onnx"\nmax_size = 1\n', ":2: gate.reprot: unknown key (did you mean report?)"),
    ('[[budgets]\nartifact = 1\n', "not valid TOML"),
])
def test_config_errors_name_file_line_and_key(cli, project, text, expected):
    config = project.write(text)
    result = cli("gate", "--config", config)
    assert result.code == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and str(config) in result.stderr
    assert expected in result.stderr


def test_pyproject_tool_table_is_read_with_line_numbers(cli, project):
    config = project.write('[project]\nname = "x"\n\n[tool.edgeopt]\n\n[[tool.edgeopt.budgets]]\n'
                           'artifact = "out/model.onnx"\nmax_siz = 3\n', name="pyproject.toml")
    result = cli("gate", "--config", config)
    assert result.code == 2 and "pyproject.toml:8: budgets[0].max_siz: unknown key" in result.stderr
    config.write_text('[tool.edgeopt]\n[[tool.edgeopt.budgets]]\nartifact = "out/model.onnx"\nmax_size = "1 GiB"\n')
    assert cli("gate", "--config", config).code == 0


def test_missing_numbers_exit_2(cli, project, tmp_path):
    # a measured latency is demanded but nothing was measured
    config = project.write('[[budgets]]\nartifact = "out/model.onnx"\ntarget = "rpi4b"\nmax_latency_ms = 100\n'
                           'source = "measured"\n')
    result = cli("gate", "--config", config, "--json")
    assert result.code == 2
    (check,) = json.loads(result.stdout)["checks"]
    assert check["status"] == "error" and "no measurement on rpi4b" in check["message"]
    # accuracy without a report describing the model
    (project.out / "report.json").unlink()
    config = project.write('[[budgets]]\nartifact = "out/model.onnx"\nmin_accuracy = 0.5\n')
    result = cli("gate", "--config", config, "--json")
    assert result.code == 2 and "no convert report" in json.loads(result.stdout)["checks"][0]["message"]


def test_measured_latency_from_a_profile_report(cli, project):
    profile = project.folder / "host-profile.json"
    done = cli("profile", project.out / "model.onnx", "-t", "host", "--measure", "--threads", "1", "--runs", "5",
               "-o", profile, "--json")
    assert done.code == 0, done.stderr
    measured = json.loads(profile.read_text())["measurements"]["host"][0]["latency_ms"]["p50"]
    config = project.write(f'[gate]\nprofile_reports = ["host-profile.json"]\n\n[[budgets]]\n'
                           f'artifact = "out/model.onnx"\ntarget = "host"\nmax_latency_ms = {measured * 2}\n'
                           f'source = "measured"\n')
    result = cli("gate", "--config", config, "--json")
    assert result.code == 0, result.stdout + result.stderr
    (check,) = json.loads(result.stdout)["checks"]
    assert check["actual"] == measured and check["source"].startswith("measured on host")


def test_baseline_from_a_report_gives_deltas_and_growth_fails(cli, project, runs):
    float_report, int8_report = runs.report("float"), runs.report("int8")
    config = project.write('[[budgets]]\nartifact = "out/model.onnx"\nmax_size = "1 MiB"\nmax_growth = "+5%"\n')
    # against the bigger float model, the int8 model shrank: deltas negative, growth passes
    result = cli("gate", "--config", config, "--baseline", runs.float / "report.json", "--json")
    assert result.code == 0, result.stdout + result.stderr
    size, growth = json.loads(result.stdout)["checks"]
    assert size["baseline"] == float_report["final"]["size_bytes"]
    assert size["delta"] == int8_report["final"]["size_bytes"] - float_report["final"]["size_bytes"]
    assert size["delta_pct"] == pytest.approx(size["delta"] / size["baseline"] * 100)
    assert growth["kind"] == "growth" and growth["status"] == "pass"
    # the float model against an int8 baseline grew far beyond +5%
    (project.out / "model.onnx").write_bytes((runs.float / "model.onnx").read_bytes())
    (project.out / "report.json").write_bytes((runs.float / "report.json").read_bytes())
    result = cli("gate", "--config", config, "--baseline", runs.int8 / "report.json", "--json")
    assert result.code == 1
    growth = json.loads(result.stdout)["checks"][1]
    assert growth["status"] == "fail" and "allowed +5%" in growth["message"]


def test_without_a_baseline_growth_is_skipped_not_passed(cli, project):
    config = project.write('[[budgets]]\nartifact = "out/model.onnx"\nmax_size = "1 MiB"\nmax_growth = "+5%"\n')
    result = cli("gate", "--config", config, "--json")
    assert result.code == 0
    assert [c["status"] for c in json.loads(result.stdout)["checks"]] == ["pass", "skip"]


def test_update_baseline_then_git_ref_baseline(cli, project, runs):
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "-C", str(project.folder)]
    subprocess.run([*git, "init", "-q"], check=True)
    config = project.write('[gate]\nbaseline_file = "budgets/baseline.json"\n\n[[budgets]]\n'
                           'artifact = "out/model.onnx"\ntarget = "rpi4b"\nmax_size = "1 MiB"\n'
                           'max_latency_ms = 50\nmax_growth = "+5%"\n')
    (project.folder / "budgets").mkdir()
    written = cli("gate", "--config", config, "--update-baseline")
    assert written.code == 0, written.stderr
    baseline = json.loads((project.folder / "budgets" / "baseline.json").read_text())
    values = baseline["values"]["out/model.onnx@rpi4b"]
    assert values["size"] == (project.out / "model.onnx").stat().st_size and values["latency_ms"] > 0
    subprocess.run([*git, "add", "edgeopt.toml", "budgets/baseline.json"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "baseline"], check=True)
    # the candidate grows: the float model replaces the int8 one
    (project.out / "model.onnx").write_bytes((runs.float / "model.onnx").read_bytes())
    (project.out / "report.json").write_bytes((runs.float / "report.json").read_bytes())
    md = project.folder / "pr.md"
    result = cli("gate", "--config", config, "--baseline", "HEAD", "--markdown", md, "--json")
    assert result.code == 1, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert "budgets/baseline.json at HEAD" in data["baseline"]
    size = next(c for c in data["checks"] if c["metric"] == "size" and c["kind"] == "limit")
    assert size["baseline"] == values["size"] and size["delta"] > 0
    text = md.read_text()
    assert "❌ edgeopt gate" in text and "| out/model.onnx @ rpi4b | size growth |" in text
    assert "#### What changed" in text and "#### Top contributors" in text and "largest initializers" in text
    missing = cli("gate", "--config", config, "--baseline", "no-such-ref")
    assert missing.code == 2 and "neither a file nor a git ref" not in missing.stderr
    assert "'no-such-ref' is not a file nor a git ref" in missing.stderr


def test_junit_xml_and_github_annotations(cli, project, runs, monkeypatch, tmp_path):
    size = facts(runs)["max_size"]
    config = project.write(f'[[budgets]]\nartifact = "out/model.onnx"\nmax_size = "1 MiB"\n\n'
                           f'[[budgets]]\nname = "too small, 100%"\nartifact = "out/model.onnx"\nmax_size = {size - 1}\n')
    junit = tmp_path / "gate.xml"
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_WORKSPACE", str(project.folder))
    result = cli("gate", "--config", config, "--junit", junit)
    assert result.code == 1
    root = ElementTree.parse(junit).getroot()
    suite = root.find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "1" and suite.get("errors") == "0"
    failed = [case for case in suite.findall("testcase") if case.find("failure") is not None]
    assert [case.get("classname") for case in failed] == ["too small, 100%"]
    # the annotation points at the budget's [[budgets]] line, properties escaped as GitHub requires
    assert "::error file=edgeopt.toml,line=5,title=edgeopt gate%3A too small%2C 100%25::size" in result.stdout
    assert summary.read_text().startswith("earlier step\n### ❌ edgeopt gate: 1 of 2 checks over budget")
    # with --json the annotations go to stderr and stdout stays JSON
    as_json = cli("gate", "--config", config, "--json")
    json.loads(as_json.stdout)
    assert "::error file=edgeopt.toml,line=5" in as_json.stderr


def test_glob_budgets_check_every_match(cli, project):
    config = project.write('[[budgets]]\nartifact = "out/*.onnx"\nmax_size = "1 MiB"\n')
    result = cli("gate", "--config", config, "--json")
    assert result.code == 0
    names = sorted(c["budget"] for c in json.loads(result.stdout)["checks"])
    assert names == sorted(f"out/{p.name}" for p in project.out.glob("*.onnx")) and len(names) >= 2


def test_no_config_is_a_usage_error(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("gate")
    assert result.code == 2 and "no edgeopt.toml here" in result.stderr


def test_convert_without_arguments_runs_the_declared_pipeline(cli, tmp_path, monkeypatch):
    from conftest import REPO

    digits = REPO / "models" / "digits"
    (tmp_path / "edgeopt.toml").write_text(f'''
[pipeline]
source = "{digits / 'digits_cnn.onnx'}"
output = "build"
targets = ["rpi4b"]

[pipeline.quantize]
calib = "{digits / 'calib.npz'}"
eval = "{digits / 'eval.npz'}"
min_cosine = 0.98

[[budgets]]
artifact = "build/model.onnx"
target = "rpi4b"
max_size = "1 MiB"
min_fidelity = 0.98
''')
    monkeypatch.chdir(tmp_path)
    done = cli("convert", "--json")
    assert done.code == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["config"]["targets"] == ["rpi4b"] and report["config"]["quantize"]["min_cosine"] == 0.98
    assert (tmp_path / "build" / "model.onnx").is_file()
    # a flag on the command line wins over the file
    again = cli("convert", "--no-simplify", "-o", tmp_path / "other", "--json")
    assert again.code == 0 and json.loads(again.stdout)["config"]["simplify"] is False
    assert cli("gate").code == 0


def test_accuracy_below_the_floor_fails(cli, project, runs):
    report = runs.report("noisy")
    accuracy = report["summary"]["quantization"]["accuracy_int8"]
    assert 0.6 < accuracy < 0.9  # a fifth of the labels are wrong
    (project.out / "model.onnx").write_bytes((runs.noisy / "model.onnx").read_bytes())
    (project.out / "report.json").write_bytes((runs.noisy / "report.json").read_bytes())
    config = project.write('[[budgets]]\nartifact = "out/model.onnx"\nmin_accuracy = "90%"\n')
    result = cli("gate", "--config", config, "--json")
    assert result.code == 1
    (check,) = json.loads(result.stdout)["checks"]
    assert check["actual"] == accuracy and check["limit"] == 0.9 and "below min_accuracy" in check["message"]


def test_evaluator_limits_in_both_directions():
    """The pure evaluator: every limit, at, under and over, including the accuracy drop the digits
    model (whose int8 and float agree on every sample) cannot produce for real."""
    from edgeopt.config.settings import Budget
    from edgeopt.gate.checks import LIMITS, Fact, evaluate_budget

    for metric, (field, _unit, higher_is_worse) in LIMITS.items():
        value = 0.5 if metric in ("accuracy", "accuracy_drop", "fidelity") else 1000
        extra = {"target": "t"} if metric in ("latency_ms", "peak_memory") else {}
        budget = Budget(artifact="m.onnx", **{field: value}, **extra)
        for actual, expected in ((value, "pass"), (value * 0.9, "pass" if higher_is_worse else "fail"),
                                 (value * 1.1, "fail" if higher_is_worse else "pass")):
            (check,) = evaluate_budget(budget, {metric: Fact(value=actual, source="test")}, None)
            assert check.status == expected, (metric, actual)
        (missing,) = evaluate_budget(budget, {}, None)
        assert missing.status == "error"


def test_the_readme_example_config_is_valid(tmp_path):
    import re

    from conftest import REPO
    from edgeopt.config.project import load_config, pipeline_config

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### Budgets as code"):]
    example = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    (tmp_path / "edgeopt.toml").write_text(example)
    loaded = load_config(tmp_path / "edgeopt.toml")
    (budget,) = loaded.config.budgets
    assert budget.max_size == 4 * 1024 * 1024 and budget.max_params == 1_200_000 and budget.max_growth == {"*": 0.05}
    assert budget.max_accuracy_drop == pytest.approx(0.01) and budget.min_accuracy == pytest.approx(0.97)
    config = pipeline_config(loaded)
    assert config.targets == ["rpi4b", "host"] and config.input_shapes == {"image": [1, 1, 8, 8]}
    assert config.quantize.calib == str(tmp_path / "models/digits/calib.npz")


def test_pipeline_errors_name_the_line(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "edgeopt.toml").write_text('[pipeline]\nsource = "m.onnx"\ntargets = ["rpi4b", "rpi99"]\n')
    result = cli("convert")
    assert result.code == 2 and "edgeopt.toml:3: pipeline.targets: unknown target 'rpi99'" in result.stderr
    (tmp_path / "edgeopt.toml").write_text('[pipeline]\nsource = "m.onnx"\n\n[pipeline.quantize]\nmin_cosin = 0.9\n')
    result = cli("convert")
    assert result.code == 2 and "edgeopt.toml:5: pipeline.quantize.min_cosin: unknown key (did you mean min_cosine?)" \
        in result.stderr


@pytest.mark.parametrize("field, text, expected", [
    ("max_size", "4 MiB", 4 * 1024**2), ("max_size", "800 kB", 800_000), ("max_size", "1.5GB", 1_500_000_000),
    ("max_size", 123456, 123456), ("max_peak_memory", "64 KiB", 65536), ("max_params", "1.2M", 1_200_000),
    ("max_macs", "800k", 800_000), ("max_macs", "3 G", 3_000_000_000), ("min_accuracy", "97.5%", 0.975),
    ("min_accuracy", 0.9, 0.9), ("max_accuracy_drop", "1pt", 0.01), ("max_accuracy_drop", "0.5%", 0.005),
    ("max_growth", "+5%", {"*": 0.05}), ("max_growth", {"latency_ms": "10%"}, {"latency_ms": 0.1}),
])
def test_budget_units(field, text, expected):
    from edgeopt.config.settings import Budget

    extra = {"target": "host"} if field == "max_peak_memory" else {}
    value = getattr(Budget(artifact="m.onnx", **{field: text}, **extra), field)
    assert value == (pytest.approx(expected) if isinstance(expected, float) else expected)


@pytest.mark.parametrize("field, text", [("max_size", "4 MeB"), ("max_size", "-1 MiB"), ("max_size", True),
                                         ("max_params", "1.2X"), ("min_accuracy", "120%"), ("max_growth", "5"),
                                         ("max_growth", "-5%"), ("max_latency_ms", 0), ("min_accuracy", "abc%"),
                                         ("max_params", float("inf")), ("max_size", float("inf")),
                                         ("max_accuracy_drop", 1), ("max_growth", 5)])
def test_budget_units_refused(field, text):
    from pydantic import ValidationError

    from edgeopt.config.settings import Budget

    with pytest.raises(ValidationError):
        Budget(artifact="m.onnx", target="host", **{field: text})


def test_the_report_records_the_invocation_not_the_host_process(runs):
    command = runs.report("float")["command"]
    assert command[:2] == ["edgeopt", "convert"] and command[-4:] == ["-t", "rpi4b", "-t", "host"]


def test_growth_never_compares_an_estimate_with_a_measurement(cli, project):
    config = project.write('[[budgets]]\nartifact = "out/model.onnx"\ntarget = "host"\nmax_latency_ms = 100\n'
                           'max_growth = "+5%"\n')
    calibrated = project.folder / "targets"
    assert cli("targets", "calibrate", "host", "--output-dir", calibrated, "--threads", "1", "--seconds", "0.05").code == 0
    written = cli("gate", "--config", config, "--update-baseline", "--targets-dir", calibrated)
    assert written.code == 0, written.stdout  # the baseline holds an estimate only
    profile = project.folder / "measured.json"
    assert cli("profile", project.out / "model.onnx", "-t", "host", "--measure", "--threads", "1", "--runs", "5",
               "-o", profile, "--json").code == 0
    result = cli("gate", "--config", config, "--baseline", project.folder / "edgeopt-baseline.json",
                 "--profile-report", profile, "--targets-dir", calibrated, "--json")
    latency_growth = [c for c in json.loads(result.stdout)["checks"] if c["kind"] == "growth"]
    (check,) = latency_growth
    assert check["source"].startswith("measured") and check["status"] == "skip"
    assert "no measured latency_ms" in check["message"]


def test_a_new_budget_or_file_missing_from_the_baseline_is_skipped_not_an_error(cli, project, runs):
    config = project.write('[[budgets]]\nartifact = "out/model.onnx"\nmax_size = "1 MiB"\nmax_growth = "+5%"\n')
    assert cli("gate", "--config", config, "--update-baseline").code == 0
    config = project.write('[[budgets]]\nartifact = "out/model.onnx"\nmax_size = "1 MiB"\nmax_growth = "+5%"\n\n'
                           '[[budgets]]\nartifact = "out/*.onnx"\nmax_size = "1 MiB"\nmax_growth = "+5%"\n')
    result = cli("gate", "--config", config, "--baseline", "edgeopt-baseline.json", "--json")
    assert result.code == 0, result.stdout + result.stderr
    checks = json.loads(result.stdout)["checks"]
    assert {c["status"] for c in checks if c["budget"] == "out/model.onnx" and c["kind"] == "growth"} == {"pass"}
    assert {c["status"] for c in checks if c["budget"] != "out/model.onnx" and c["kind"] == "growth"} == {"skip"}
    # a report as the baseline describes its own final model only, not every file a glob matches
    result = cli("gate", "--config", config, "--baseline", runs.float / "report.json", "--json")
    others = [c for c in json.loads(result.stdout)["checks"] if c["budget"] != "out/model.onnx" and c["kind"] == "limit"]
    assert others and all(c["baseline"] is None for c in others)


def test_paths_in_the_config_are_relative_to_it_from_any_folder(cli, project, tmp_path, monkeypatch):
    (project.folder / "base.json").write_text((project.out / "report.json").read_text())
    config = project.write('[gate]\nbaseline = "base.json"\n\n[[budgets]]\nartifact = "out/model.onnx"\n'
                           'max_size = "1 MiB"\nmax_growth = "+5%"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = cli("gate", "--config", config, "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["checks"][1]["status"] == "pass"


def test_junit_survives_control_characters_in_names(cli, project, tmp_path):
    config = project.write('[[budgets]]\nname = "red \\u001b[31m budget"\nartifact = "out/model.onnx"\nmax_size = 1\n')
    junit = tmp_path / "j.xml"
    assert cli("gate", "--config", config, "--junit", junit).code == 1
    case = ElementTree.parse(junit).getroot().find("testsuite").find("testcase")
    assert case.get("classname") == "red [31m budget"


def test_flags_refine_the_files_sections(cli, tmp_path, monkeypatch):
    from conftest import REPO

    digits = REPO / "models" / "digits"
    (tmp_path / "edgeopt.toml").write_text(f'''
[pipeline]
source = "{digits / 'digits_cnn.onnx'}"
output = "build"

[pipeline.prune]
ratio = 0.25
scope = "global"
''')
    monkeypatch.chdir(tmp_path)
    result = cli("convert", "--prune", "0.5", "--no-simplify", "--epochs", "3", "--json")
    assert result.code == 0, result.stderr
    prune = json.loads(result.stdout)["config"]["prune"]
    assert prune["ratio"] == 0.5 and prune["scope"] == "global"  # --prune changed the ratio, kept the scope
    assert "--epochs ignored" in result.stderr


def test_a_model_path_in_the_config_never_comes_from_the_current_folder(cli, tmp_path, monkeypatch, runs):
    project = tmp_path / "project"
    project.mkdir()
    (project / "edgeopt.toml").write_text('[pipeline]\nsource = "model.onnx"\n')
    (tmp_path / "model.onnx").write_bytes((runs.float / "model.onnx").read_bytes())  # beside cwd only
    monkeypatch.chdir(tmp_path)
    result = cli("convert", "--config", project / "edgeopt.toml")
    assert result.code == 2 and str(project / "model.onnx") in result.stderr


def test_the_bundled_example_pipeline_converts_and_passes_its_budgets(cli, tmp_path):
    import shutil

    from conftest import REPO

    folder = tmp_path / "models" / "digits"
    shutil.copytree(REPO / "models" / "digits", folder)  # its output goes two folders up, here in tmp
    config = folder / "edgeopt.toml"
    done = cli("convert", "--config", config)
    assert done.code == 0, done.stderr
    assert (tmp_path / "out" / "digits-pipeline" / "model.onnx").is_file()
    gate = cli("gate", "--config", config, "--json")
    assert gate.code == 0, gate.stdout + gate.stderr
    checks = json.loads(gate.stdout)["checks"]
    assert len(checks) == 9 and all(c["status"] == "pass" for c in checks)


def test_an_uncertain_estimate_asks_for_a_measurement_when_the_budget_says_so():
    """An estimate of 20 ms ±25% spans 15-25 ms: with "require-measured" it decides only limits outside that band;
    an estimate without a validated band never decides; a measured figure always does."""
    from edgeopt.config.settings import Budget
    from edgeopt.gate.checks import Fact, evaluate_budget

    estimate = Fact(value=20.0, source="estimate for t", kind="estimated", error=0.25)
    expected = {26.0: "pass", 25.0: "pass", 24.9: "error", 16.0: "error", 15.0: "error", 14.9: "fail"}
    for limit, status in expected.items():
        strict = Budget(artifact="m.onnx", target="t", max_latency_ms=limit, when_estimate_uncertain="require-measured")
        (check,) = evaluate_budget(strict, {"latency_ms": estimate}, None)
        assert check.status == status, (limit, check.message)
        assert check.actual_text == "20 ms ±25%"
        lenient = Budget(artifact="m.onnx", target="t", max_latency_ms=limit)  # the default uses the estimate
        (check,) = evaluate_budget(lenient, {"latency_ms": estimate}, None)
        assert check.status == ("pass" if limit >= 20 else "fail")
    strict = Budget(artifact="m.onnx", target="t", max_latency_ms=24.0, when_estimate_uncertain="require-measured")
    (check,) = evaluate_budget(strict, {"latency_ms": estimate}, None)
    assert "spans the limit" in check.message and "between 15 ms and 25 ms" in check.message
    unvalidated = Fact(value=20.0, source="estimate for t", kind="estimated")
    (check,) = evaluate_budget(strict.model_copy(update={"max_latency_ms": 1000.0}), {"latency_ms": unvalidated}, None)
    assert check.status == "error" and "no validated error band" in check.message
    measured = Fact(value=23.9, source="measured on pi", kind="measured")
    (check,) = evaluate_budget(strict, {"latency_ms": measured}, None)
    assert check.status == "pass"


def test_host_estimates_carry_their_band_and_the_gate_uses_it(cli, project, runs):
    """The measured host has a validated band (analysis.validation); rpi4b, never checked against a board, has none."""
    from edgeopt.analysis.validation import VALIDATED_ON_HOST

    import platform

    host = runs.report("int8")["summary"]["targets"]["host"]
    band = VALIDATED_ON_HOST.get(platform.machine())
    if band is None:
        pytest.skip(f"no validated band for {platform.machine()}")
    # convert prices the host at all its cores: the band validated at more than one thread where it has more
    import os

    expected = band.latency_parallel if (os.cpu_count() or 1) > 1 and band.latency_parallel else band.latency
    assert host["latency_error"] == expected and runs.report("int8")["summary"]["targets"]["rpi4b"][
        "latency_error"] is None
    estimate = host["latency_ms"]
    for limit, code in ((estimate * (1 + expected) * 1.01, 0), (estimate, 2)):
        config = project.write(f'[[budgets]]\nartifact = "out/model.onnx"\ntarget = "host"\nmax_latency_ms = {limit}\n'
                               'when_estimate_uncertain = "require-measured"\n')
        result = cli("gate", "--config", config, "--json")
        assert result.code == code, result.stdout + result.stderr
    config = project.write('[[budgets]]\nartifact = "out/model.onnx"\ntarget = "rpi4b"\nmax_latency_ms = 1000\n'
                           'when_estimate_uncertain = "require-measured"\n')
    result = cli("gate", "--config", config, "--json")
    assert result.code == 2 and "no validated error band" in json.loads(result.stdout)["checks"][0]["message"]


def test_a_bare_models_free_dims_are_sized_as_the_project_says_never_at_one(cli, tmp_path):
    """A model whose width is symbolic is estimated at the [pipeline] dims (as convert and profile size it);
    without them the latency check says which dim is unsized instead of pricing a width of 1."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((16, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 4)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, "width"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "model.onnx")
    budget = '[[budgets]]\nartifact = "model.onnx"\ntarget = "rpi4b"\nmax_latency_ms = 1000\n'
    (tmp_path / "edgeopt.toml").write_text(budget)
    result = cli("gate", "--config", tmp_path / "edgeopt.toml", "--json")
    (check,) = json.loads(result.stdout)["checks"]
    assert result.code == 2 and check["status"] == "error" and "width" in check["message"], check
    assert "[pipeline] dims" in check["message"]

    def latency(width: int) -> float:
        (tmp_path / "edgeopt.toml").write_text(f'[pipeline]\nsource = "model.onnx"\ndims = {{ width = {width} }}\n\n'
                                               + budget)
        done = cli("gate", "--config", tmp_path / "edgeopt.toml", "--json")
        assert done.code == 0, done.stderr
        (passed,) = json.loads(done.stdout)["checks"]
        return passed["actual"]

    narrow, wide = latency(64), latency(1024)
    assert wide > 8 * narrow  # 16x the positions: the estimate follows the width
