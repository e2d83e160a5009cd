"""edgeopt tune end to end on the bundled digits CNN (its factory, weights and data): real pruning, fine-tuning
and quantization runs in every trial, real Optuna studies in SQLite and in a PostgreSQL server the fixture
starts. Each test reads the study back from its storage, not from edgeopt's own summary alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest

from conftest import REPO, WIDE_FACTORY

optuna = pytest.importorskip("optuna")
pytest.importorskip("torch_pruning")

DIGITS = REPO / "models" / "digits"
pytestmark = pytest.mark.timeout(900)


def project(folder: Path, space: str, budgets: str = "", tune: str = "", quantize: bool = False,
            epochs: int = 1) -> Path:
    """An edgeopt.toml for the digits factory: pruning + fine-tuning, [tune] and [[budgets]] as given."""
    calib = f'calib = "{DIGITS / "calib.npz"}"\n' if quantize else ""
    text = f"""[pipeline]
source = "{DIGITS / 'model.py'}:build_model"
weights = "{DIGITS / 'digits_cnn.pt'}"
input_shape = "1x1x8x8"
output = "out"

[pipeline.quantize]
eval = "{DIGITS / 'eval.npz'}"
{calib}
[pipeline.prune]
ratio = 0.5

[pipeline.finetune]
data = "{DIGITS / 'train.npz'}"
epochs = {epochs}

[tune]
{tune}

[tune.space]
"prune.criterion" = "magnitude"
"finetune.lr" = 0.003
"finetune.weight_decay" = 0.0
{space}
{budgets}
"""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "edgeopt.toml").write_text(text)
    return folder / "edgeopt.toml"


def params_of(model: Path) -> int:
    proto = onnx.load(str(model))
    return sum(int(__import__("numpy").prod(t.dims)) for t in proto.graph.initializer if len(t.dims) > 1 or t.dims)


def trials_of(storage: str, study: str = "edgeopt-tune") -> list:
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def _dashboard(storage: str, path: str) -> dict:
    """GET ``path`` from optuna-dashboard's own WSGI app over ``storage`` (what `optuna-dashboard URL` serves)."""
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    environ: dict = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(wsgi(storage)(environ, lambda code, headers, *rest: status.append(code)))
    assert status == ["200 OK"], body[:300]
    return json.loads(body)


def test_the_winner_meets_the_budgets_and_is_the_most_accurate_that_does(cli, tmp_path):
    """Three pruning ratios; a parameter budget only the two stronger ones meet. The study's constraints say
    which trials are feasible, the winner is the most accurate feasible one, OUT/model.onnx is its model."""
    config = project(tmp_path, '"prune.ratio" = [0.25, 0.5, 0.75]',
                     '[[budgets]]\nartifact = "out/model.onnx"\nmax_params = "10k"\n',
                     'sampler = "grid"\ntrials = 3')
    result = cli("tune", "--config", config, "--json")
    assert result.code == 0, result.stderr
    assert "search space: 1 dimension(s), 3 configurations: prune.ratio {0.25, 0.5, 0.75}" in " ".join(
        result.stderr.split())
    document = json.loads(result.stdout)
    out = tmp_path / "out"
    trials = [t for t in trials_of(f"sqlite:///{out / 'tune.db'}") if t.state.name == "COMPLETE"]
    assert sorted(t.params["prune.ratio"] for t in trials) == [0.25, 0.5, 0.75]
    feasible = {t.number for t in trials if all(c <= 0 for c in t.user_attrs["constraints"])}
    by_ratio = {t.params["prune.ratio"]: t for t in trials}
    assert feasible == {by_ratio[0.5].number, by_ratio[0.75].number}  # 0.25 keeps ~15k parameters
    best = max((t for t in trials if t.number in feasible), key=lambda t: t.values[0])
    assert document["winner"]["number"] == best.number
    assert params_of(out / "model.onnx") <= 10_000
    assert (out / "model.onnx").read_bytes() == Path(best.user_attrs["model"]).read_bytes()
    assert json.loads((out / "report.json").read_text())["final"]["sha256"]
    for number in document["front"]:
        assert (out / "pareto" / str(number) / "model.onnx").is_file()
        assert number in feasible
    assert document["float_models"] == {"built": 3, "reused": 0}
    # the study opens in optuna-dashboard as it is: its API lists the trials with their objective names
    study = _dashboard(f"sqlite:///{out / 'tune.db'}", "/api/studies/1")
    assert study["name"] == "edgeopt-tune" and study["directions"] == ["maximize", "minimize", "minimize"]
    assert study["objective_names"] == ["metric", "latency", "size"]
    assert sorted(t["number"] for t in study["trials"] if t["state"] == "Complete") == sorted(t.number for t in trials)
    # the HTML report of OUT finds tune.json beside it: one point per trial, the infeasible one hollow, the
    # winner ringed and its row highlighted
    page = cli("report", out, "-o", tmp_path / "page.html")
    assert page.code == 0, page.stderr
    html = (tmp_path / "page.html").read_text()
    assert html.count('class="point ') == 3 and html.count('class="point infeasible"') == 1
    assert html.count('class="winner"') == 1 and html.count('<tr class="highlight">') == 1
    assert f'<td class="num">{best.number}</td>' in html.split('<tr class="highlight">')[1].split("</tr>")[0]


def test_no_trial_within_the_budgets_saves_the_nearest_miss_and_exits_1(cli, tmp_path):
    config = project(tmp_path, '"prune.ratio" = [0.25, 0.5]',
                     '[[budgets]]\nartifact = "out/model.onnx"\nmax_params = "1k"\n', 'sampler = "grid"\ntrials = 2')
    result = cli("tune", "--config", config)
    assert result.code == 1, result.stderr
    out = tmp_path / "out"
    assert not (out / "model.onnx").exists()  # nothing is published as if it met the budgets
    document = json.loads((out / "tune.json").read_text())
    miss = document["nearest_miss"]
    assert document["winner"] is None and miss["params"]["prune.ratio"] == 0.5  # the smaller model misses less
    assert (out / "nearest-miss" / "model.onnx").is_file()
    assert "no trial met the budgets" in result.stdout and "exceeds max_params" in result.stdout


@pytest.mark.parametrize(("entry", "message"), [
    ('"prune.ratio" = {low = 0.5, high = 1.5}', "tune.space.prune.ratio: 1.5 is not a valid value"),
    ('"quantize.no_such_setting" = [1, 2]', "tune.space.quantize.no_such_setting: not a setting tune can vary"),
    ('"prune.ratio" = {low = 0.6, high = 0.2}', "tune.space.prune.ratio: low (0.6) must be a number below high"),
    ('"quantize.calibration_method" = ["minmax", "median"]', "tune.space.quantize.calibration_method: 'median'"),
])
def test_a_bad_space_entry_names_the_file_line_and_key(cli, tmp_path, entry, message):
    config = project(tmp_path, entry, tune="trials = 2")
    line = next(i for i, text in enumerate(config.read_text().splitlines(), 1) if text == entry)
    result = cli("tune", "--config", config)
    assert result.code == 2
    assert f"{config}:{line}: {message}" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out" / "tune.db").exists()


def test_trials_sharing_the_pruned_model_reuse_it(cli, tmp_path):
    """Two ratios x two quantization settings: each pruned (and fine-tuned) model is built once and quantized
    twice; the training count is the float cache's, and the stage records say so."""
    config = project(tmp_path, '"prune.ratio" = [0.25, 0.5]\n"quantize.per_channel" = [true, false]\n'
                               '"quantize.activation_type" = "u8"\n"quantize.calibration_method" = "minmax"',
                     tune='sampler = "grid"\ntrials = 4', quantize=True)
    result = cli("tune", "--config", config, "--json", "--no-speed-fallback")
    assert result.code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["float_models"] == {"built": 2, "reused": 2}
    trials = [t for t in trials_of(f"sqlite:///{tmp_path / 'out' / 'tune.db'}") if t.state.name == "COMPLETE"]
    assert len({(t.params["prune.ratio"], t.params["quantize.per_channel"]) for t in trials}) == 4
    float_runs = list((tmp_path / "out" / "cache" / "float").glob("*/report.json"))
    assert len(float_runs) == 2  # one fine-tuning per ratio, on disk
    for trial in trials:  # each quantized its ratio's own float model
        report = json.loads((Path(trial.user_attrs["model"]).parent / "report.json").read_text())
        assert "/cache/float/" in report["source"]["path"]


def _worker(config: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeopt", "tune", "--config", str(config), *args],
                            cwd=config.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_killed_tune_resumes_the_study_and_loses_nothing_completed(cli, tmp_path):
    config = project(tmp_path, '"prune.ratio" = [0.25, 0.5, 0.75]', tune='sampler = "grid"\ntrials = 3')
    storage = f"sqlite:///{tmp_path / 'out' / 'tune.db'}"
    worker = _worker(config)
    deadline = time.monotonic() + 300
    while True:  # kill it in the middle of a trial, after at least one has finished
        time.sleep(0.3)
        assert worker.poll() is None, worker.communicate()
        assert time.monotonic() < deadline, "no trial finished in time"
        try:
            states = [t.state.name for t in trials_of(storage)]
        except Exception:  # the study is not created yet
            continue
        if "COMPLETE" in states and "RUNNING" in states:
            break
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    before = {t.number: (t.params, t.values) for t in trials_of(storage) if t.state.name == "COMPLETE"}
    killed = [t for t in trials_of(storage) if t.state.name == "RUNNING"]
    assert before and len(killed) == 1
    result = cli("tune", "--config", config, "--resume", "--json")
    assert result.code == 0, result.stderr
    after = trials_of(storage)
    complete = {t.number: (t.params, t.values) for t in after if t.state.name == "COMPLETE"}
    assert all(complete[n] == before[n] for n in before)  # nothing completed was lost or rerun
    assert len(complete) == 3 and sorted(p["prune.ratio"] for p, _v in complete.values()) == [0.25, 0.5, 0.75]
    gone = next(t for t in after if t.number == killed[0].number)
    assert gone.state.name == "FAIL"  # its worker is dead: failed, and its parameters ran again
    assert any(t.user_attrs.get("retry_of") == gone.number and t.state.name == "COMPLETE" for t in after)
    assert json.loads(result.stdout)["winner"] is not None


@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
def test_two_workers_share_one_study_without_running_a_trial_twice(request, tmp_path, where):
    if where == "postgresql":
        storage = request.getfixturevalue("postgres").url
        study = f"shared-{os.getpid()}"
    else:
        storage, study = f"sqlite:///{tmp_path / 'shared.db'}", "shared"
    configs = [project(tmp_path / name, '"prune.ratio" = [0.25, 0.375, 0.5, 0.625]',
                       tune=f'sampler = "grid"\ntrials = 4\nstorage = "{storage}"\nstudy = "{study}"')
               for name in ("machine-a", "machine-b")]
    workers = [_worker(config) for config in configs]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (_out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err
    trials = trials_of(storage.replace("postgresql://", "postgresql+psycopg://"), study)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4 and len({t.number for t in complete}) == 4
    assert sorted(t.params["prune.ratio"] for t in complete) == [0.25, 0.375, 0.5, 0.625]  # each grid point once
    assert not [t for t in trials if t.state.name == "RUNNING"]  # nothing left running (queued points may wait)
    workers_seen = {t.user_attrs["edgeopt_worker"] for t in complete}
    assert len(workers_seen) == 2  # both machines ran trials
    for t in complete:  # each trial's files are on the machine that ran it, under its own number
        assert Path(t.user_attrs["model"]).is_file() and f"/trials/{t.number}/" in t.user_attrs["model"]
    if where == "sqlite":
        return
    # a third machine joins the finished study and sees none of the others' files: the front's models are made
    # again there from their settings, and tune.json says which were
    import shutil

    for name in ("machine-a", "machine-b"):
        shutil.rmtree(tmp_path / name / "out" / "trials")
    third = project(tmp_path / "machine-c", '"prune.ratio" = [0.25, 0.375, 0.5, 0.625]',
                    tune=f'sampler = "grid"\ntrials = 4\nstorage = "{storage}"\nstudy = "{study}"')
    joined = _worker(third, "--json")
    out, err = joined.communicate(timeout=600)
    assert joined.returncode == 0, err
    document = json.loads(out)
    assert document["trials_run_here"] == 0 and document["front"]
    rows = {row["number"]: row for row in document["trials"]}
    for number in document["front"]:
        published = tmp_path / "machine-c" / "out" / "pareto" / str(number) / "model.onnx"
        assert published.is_file() and document["winner"] is not None
        assert published.stat().st_size == rows[number]["values"]["size"]  # the same pruned architecture
        by_ratio = {t.number: t.params["prune.ratio"] for t in complete}
        assert json.loads((published.parent / "report.json").read_text())["config"]["prune"]["ratio"] == \
            by_ratio[number]
    assert all(row.get("rebuilt_here") for row in document["trials"] if row["number"] in document["front"])


def test_ctrl_c_finishes_the_trial_in_flight_and_keeps_what_is_done(tmp_path):
    config = project(tmp_path, '"prune.ratio" = [0.25, 0.5, 0.75]', tune='sampler = "grid"\ntrials = 3')
    storage = f"sqlite:///{tmp_path / 'out' / 'tune.db'}"
    worker = _worker(config)
    deadline = time.monotonic() + 300
    while True:
        time.sleep(0.3)
        assert worker.poll() is None and time.monotonic() < deadline, worker.communicate()
        try:
            running = [t for t in trials_of(storage) if t.state.name == "RUNNING"]
        except Exception:
            continue
        if running:
            break
    worker.send_signal(signal.SIGINT)
    _out, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err
    assert "stopping after the trial in flight" in err and "Traceback" not in err
    trials = trials_of(storage)
    assert running[0].number in {t.number for t in trials if t.state.name == "COMPLETE"}  # it was finished
    assert not [t for t in trials if t.state.name == "RUNNING"]
    document = json.loads((tmp_path / "out" / "tune.json").read_text())
    assert document["stopped_by"] == "interrupted" and len([t for t in trials if t.state.name == "COMPLETE"]) < 3
    assert (tmp_path / "out" / "model.onnx").is_file()


def test_architecture_trials_build_and_train_each_width_from_scratch(cli, tmp_path):
    """factory.width is a dimension: each value builds the factory's model anew and trains it on the fine-tuning
    data; a parameter budget keeps the widest out, and the winner is a trained, feasible width."""
    factory = tmp_path / "wide.py"
    factory.write_text(WIDE_FACTORY)
    (tmp_path / "edgeopt.toml").write_text(f"""[pipeline]
source = "{factory}:build"
input_shape = "1x1x8x8"
output = "out"

[pipeline.quantize]
eval = "{DIGITS / 'eval.npz'}"

[pipeline.finetune]
data = "{DIGITS / 'train.npz'}"
epochs = 4
lr = 0.01

[tune]
sampler = "grid"
trials = 3
halving = 0

[tune.space]
"factory.width" = [0.25, 0.5, 1.0]
"factory.dropout" = 0.1
"finetune.lr" = 0.01
"finetune.weight_decay" = 0.0

[[budgets]]
artifact = "out/model.onnx"
max_params = "1.5k"
""")
    result = cli("tune", "--config", tmp_path / "edgeopt.toml", "--json")
    assert result.code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["float_models"] == {"built": 3, "reused": 0}  # one training per width
    trials = {t["params"]["factory.width"]: t for t in document["trials"] if t["state"] == "complete"}
    widths = {w: {d for d in _conv_outputs(Path(t["model"]))} for w, t in trials.items()}
    assert widths == {0.25: {4}, 0.5: {8}, 1.0: {16}}  # max(4, 16 x width) channels
    assert not trials[1.0]["feasible"] and trials[0.25]["feasible"]  # 16 channels: ~2.6k parameters
    winner = document["winner"]
    feasible = [t for t in trials.values() if t["feasible"]]
    assert winner["number"] == max(feasible, key=lambda t: t["values"]["metric"])["number"]
    for trial in trials.values():  # each was trained: better than the same architecture at its random start
        steps = json.loads((Path(trial["model"]).parent / "report.json").read_text())["summary"]["pruning"]["steps"]
        assert [s["step"] for s in steps] == ["unpruned", "fine-tuned"]
        assert trial["values"]["metric"] == steps[1]["accuracy"] > steps[0]["accuracy"] + 0.05
    bad = tmp_path / "bad"
    bad.mkdir()
    text = (tmp_path / "edgeopt.toml").read_text().replace('"factory.dropout" = 0.1', '"factory.depth" = [1, 2]')
    (bad / "edgeopt.toml").write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith('"factory.depth"'))
    refused = cli("tune", "--config", bad / "edgeopt.toml")
    assert refused.code == 2 and f"edgeopt.toml:{line}: tune.space.factory.depth: the factory takes no argument" \
        in refused.stderr


def _conv_outputs(model: Path) -> list[int]:
    proto = onnx.load(str(model))
    weights = {t.name: list(t.dims) for t in proto.graph.initializer}
    return [weights[n.input[1]][0] for n in proto.graph.node if n.op_type == "Conv" and n.input[1] in weights]


@pytest.mark.parametrize(("args", "message"), [
    (["--trials", "0"], "bad value for --trials"),
    (["--sampler", "annealing"], "bad value for --sampler"),
    (["--objectives", "metric,speed"], "bad value for --objectives"),
    (["--timeout", "5x"], "bad --timeout '5x'"),
    (["--resume"], "--resume: there is no study to resume"),
    (["--storage", "postgresql://user:secret@127.0.0.1:1/none"], "cannot open the study storage"),
])
def test_bad_tune_flags_are_one_line_and_leave_nothing_behind(cli, tmp_path, args, message):
    out = tmp_path / "out"
    result = cli("tune", DIGITS / "digits_cnn.onnx", "--calib", DIGITS / "calib.npz", "-o", out, *args)
    assert result.code == 2 and message in result.stderr, result.stderr
    assert "secret" not in result.stderr and "Traceback" not in result.stderr
    assert not (out / "tune.db").exists()


def test_halving_trains_cheap_first_and_only_the_promising_go_on(cli, tmp_path):
    """9 epochs, η = 3: every trial trains 1 epoch first, then 3, then 9 while it ranks in the top third of its
    rung; the decisions are re-derived here from the study's own rung results, and only full-budget trials
    can win."""
    from edgeopt.tune import halving

    config = project(tmp_path, '"prune.ratio" = [0.25, 0.5, 0.75]', tune='sampler = "grid"\ntrials = 3\nhalving = 3',
                     epochs=9)
    result = cli("tune", "--config", config, "--json")
    assert result.code == 0, result.stderr
    document = json.loads(result.stdout)
    trials = sorted((t for t in trials_of(f"sqlite:///{tmp_path / 'out' / 'tune.db'}") if t.state.name == "COMPLETE"),
                    key=lambda t: t.number)
    assert len(trials) == 3 and trials[0].user_attrs["full_budget"] and trials[0].user_attrs["epochs"] == 9
    trainings = 0
    for trial in trials:
        rungs = [trial.user_attrs[f"rung_{r}"] for r in range(3) if f"rung_{r}" in trial.user_attrs]
        assert [r["epochs"] for r in rungs] == [1, 3, 9][:len(rungs)]
        trainings += len(rungs)
        for index, rung in enumerate(rungs[:-1] if trial.user_attrs["full_budget"] else rungs):
            seen = [(t.number, t.user_attrs[f"rung_{index}"]["values"], t.user_attrs[f"rung_{index}"]["constraints"])
                    for t in trials if t.number <= trial.number and f"rung_{index}" in t.user_attrs]
            went_on = index < len(rungs) - 1
            assert halving.goes_on(seen, trial.number, ["metric", "latency", "size"], None, 3) == went_on
        assert trial.user_attrs["epochs"] == rungs[-1]["epochs"]
    assert document["float_models"]["built"] == trainings  # each rung trained once, nothing more
    full = {t.number for t in trials if t.user_attrs["full_budget"]}
    assert set(document["front"]) <= full and document["winner"]["number"] in full


def _quantize_project(folder: Path, budgets: str) -> Path:
    """The digits ONNX model: quantization only, the number of sensitive groups kept float searched."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "edgeopt.toml").write_text(f"""[pipeline]
source = "{DIGITS / 'digits_cnn.onnx'}"
output = "out"

[pipeline.quantize]
calib = "{DIGITS / 'calib.npz'}"
eval = "{DIGITS / 'eval.npz'}"
mode = "static"
force_int8 = true
speed_fallback = false

[tune]
sampler = "grid"
trials = 2

[tune.space]
"quantize.keep_float" = [0, 2]
"quantize.activation_type" = "u8"
"quantize.per_channel" = true
"quantize.calibration_method" = "minmax"

{budgets}""")
    return folder / "edgeopt.toml"


def test_measure_times_every_trial_here_and_keep_float_is_a_dimension(cli, tmp_path):
    """--measure: each trial's model is profiled on this machine (its profile.json beside it), the latency
    objective is that measurement and a `source = "measured"` budget is met by it; without --measure the same
    budget has no figure and nothing is feasible. keep_float = 2 keeps fewer nodes quantized than 0."""
    budget = '[[budgets]]\nartifact = "out/model.onnx"\ntarget = "host"\nsource = "measured"\nmax_latency_ms = 1000\n'
    config = _quantize_project(tmp_path / "measured", budget)
    result = cli("tune", "--config", config, "--measure", "--json")
    assert result.code == 0, result.stderr
    document = json.loads(result.stdout)
    rows = {row["params"]["quantize.keep_float"]: row for row in document["trials"] if row["state"] == "complete"}
    assert set(rows) == {0, 2} and all(row["feasible"] for row in rows.values())
    quantized = {}
    for kept, row in rows.items():
        folder = Path(row["model"]).parent
        profile = json.loads((folder / "profile.json").read_text())
        (run,) = profile["measurements"]["host"]
        assert row["values"]["latency"] == pytest.approx(run["latency_ms"]["p50"])
        assert row["values"]["memory"] == run["memory"]["peak_rss_increase_bytes"]
        report = json.loads((folder / "report.json").read_text())
        stage = next(s for s in report["stages"] if s["name"] == "quantize")["details"]
        chosen = next(c for c in stage["candidates"] if c["name"] == stage["chosen"])
        assert bool(chosen["kept_float_by_setting"]) == (kept == 2)
        quantized[kept] = chosen["quantized_nodes"]
    assert quantized[2] < quantized[0]

    unmeasured = cli("tune", "--config", _quantize_project(tmp_path / "estimated", budget), "--json")
    assert unmeasured.code == 1, unmeasured.stderr
    document = json.loads(unmeasured.stdout)
    assert not any(row["feasible"] for row in document["trials"])
    assert all("no measurement on host" in " ".join(row["checks"]) for row in document["trials"]
               if row["state"] == "complete")
    assert not list((tmp_path / "estimated" / "out" / "trials").glob("*/profile.json"))


def test_measure_refuses_a_target_that_is_not_this_machine(cli, tmp_path):
    config = _quantize_project(tmp_path, "")
    result = cli("tune", "--config", config, "--measure", "-t", "rpi4b")
    assert result.code == 2 and "--measure times trials on this machine, which is not the target 'rpi4b'" in \
        result.stderr, result.stderr
    assert not (tmp_path / "out" / "tune.db").exists()
