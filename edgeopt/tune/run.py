"""`edgeopt tune`: an Optuna study over the pipeline's settings, with the budgets as the sampler's constraints.

Each trial runs the convert pipeline in two parts, so trials that share a prefix share its work:
1. the float model: export, pruning and fine-tuning (``quantize`` off), content-addressed in
   ``OUT/cache/float/<key>`` by the source, the float-side settings and the data they read; a second trial
   with the same width of pruning and training reuses it (counted in tune.json: built / reused);
2. the trial's own run on that float model (quantization, profiles) in ``OUT/trials/<number>``, with the
   stage cache of ``OUT/cache/stages``; a trial whose parameters equal a finished one's takes its result.

The study (storage.py) survives interruption: a rerun with the same ``--study`` continues it, and workers on
several machines can share one through PostgreSQL. At the end the feasible trials' Pareto front is copied
to ``OUT/pareto/<trial>/``, the best feasible model to ``OUT/model.onnx`` (with its report), and everything
to ``OUT/tune.json``; when no trial meets the budgets, the nearest miss goes to ``OUT/nearest-miss/`` and
the exit code is 1.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeopt.config.settings import Budget, ConvertConfig, TuneConfig
from edgeopt.errors import EdgeoptError, InputError
from edgeopt.events import Event, Events
from edgeopt.fsutil import ensure_writable_dir, sha256_file, write_text_atomic
from edgeopt.report.schema import Report
from edgeopt.tune import halving
from edgeopt.tune.objectives import DIRECTIONS, TrialScore, pareto_front, ranking_key, score
from edgeopt.tune.space import Space, apply, build_space
from edgeopt.tune.storage import (
    WORKER_ATTR, claim_lock, heartbeat, open_storage, quiet_optuna, recover_dead_trials, redacted, storage_url,
    this_worker,
)

TUNE_JSON = "tune.json"
SCHEMA_VERSION = 1
# timed runs of a trial's model under --measure (as `edgeopt profile --measure` does by default)
MEASURED_RUNS = 50
# settings that decide the float model (everything before quantization)
FLOAT_FIELDS = {"input_shapes", "input_dtypes", "dims", "fills", "state_pairs", "opset", "dynamic_batch", "simplify",
                "weights", "factory_args", "trust_pickle", "parity", "prune", "finetune", "targets", "targets_dir"}


@dataclass
class TunePlan:
    base: ConvertConfig
    settings: TuneConfig
    space: Space
    budgets: list[Budget]
    out_dir: Path
    storage: str
    command: list[str] = field(default_factory=list)

    @property
    def objectives(self) -> list[str]:
        return [self.settings.objective] if self.settings.objective else list(self.settings.objectives)


@dataclass
class TuneResult:
    document: dict[str, Any]
    exit_code: int  # 0: a feasible winner; 1: no trial met the budgets (the nearest miss was saved)
    model_path: Path | None


def plan_tune(base: ConvertConfig, settings: TuneConfig, budgets: list[Budget],
              space_error: Callable[[str, str, str], Exception] | None = None,
              command: list[str] | None = None) -> TunePlan:
    """Everything checked before the first trial: the space (a bad entry is one line), the sampler's needs."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise InputError("edgeopt tune needs Optuna", "pip install 'edgeopt[tune]'") from None
    if base.quantize.calib is None and base.prune is None and base.finetune is None:
        raise InputError("nothing to tune: no calibration data, no pruning and no training data",
                         "pass --calib DATA (quantization), --prune RATIO and/or --finetune DATA (pruning, "
                         "architecture trials)")
    if base.format != "onnx":
        raise InputError("tune searches the ONNX pipeline; --format tflite is not searched yet",
                         "tune without --format, then convert the winner's settings with --format tflite")
    space = build_space(base, settings.space, space_error)
    if not space.dimensions:
        raise InputError("the search space is empty (every entry of [tune.space] is fixed)",
                         "leave at least one setting with values or a range")
    if settings.sampler == "grid":
        space.grid()  # continuous dimensions are refused here, not at the first trial
    if settings.measure and base.targets[0] != "host":
        raise InputError(f"--measure times trials on this machine, which is not the target {base.targets[0]!r}",
                         "tune with -t host, or give --ssh DEVICE: every trial is then measured on the device")
    out_dir = Path(base.output_dir)
    return TunePlan(base, settings, space, budgets, out_dir, storage_url(settings.storage, out_dir), command or [])


def _sampler(plan: TunePlan, seed: int, constrained: bool) -> Any:
    import optuna

    def constraints(trial: Any) -> list[float]:
        return list(trial.user_attrs.get("constraints") or [1.0])

    kind = plan.settings.sampler
    func = constraints if constrained else None
    if kind in ("random", "grid"):  # the grid is queued into the study (_queue_grid); random only past its end
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=func,
                                             population_size=max(4, min(50, plan.settings.trials // 2)))
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed, constraints_func=func,
                                         n_startup_trials=max(3, min(10, plan.settings.trials // 3)))
    return optuna.samplers.TPESampler(seed=seed, constraints_func=func, multivariate=True,
                                      n_startup_trials=max(3, min(10, plan.settings.trials // 3)))


def _space_document(space: Space) -> dict[str, Any]:
    return {"dimensions": [{"path": d.path, "kind": d.kind, "values": list(d.values), "low": d.low, "high": d.high,
                            "log": d.log, "step": d.step} for d in space.dimensions],
            "fixed": dict(space.fixed), "size": space.size()}


def _open_study(plan: TunePlan) -> tuple[Any, Any]:
    import optuna

    storage = open_storage(plan.storage)
    names = {s.study_name for s in storage.get_all_studies()}
    if plan.settings.resume and plan.settings.study not in names:
        raise InputError(f"--resume: no study {plan.settings.study!r} in {plan.storage}",
                         "drop --resume to start it, or name the study with --study")
    directions = [DIRECTIONS[name] for name in plan.objectives]
    space = _space_document(plan.space)
    try:
        study = optuna.create_study(storage=storage, study_name=plan.settings.study, directions=directions,
                                    load_if_exists=True)
    except ValueError as exc:
        raise InputError(f"study {plan.settings.study!r} exists with other objectives ({exc})",
                         "name a new study with --study, or tune the same objectives") from None
    # each attribute set where missing and checked where present: a worker opening the study while another
    # is still writing them finds some set and some not
    stored, objectives = study.user_attrs.get("space"), study.user_attrs.get("objectives")
    if stored is None:
        study.set_user_attr("space", space)
    if objectives is None:
        study.set_user_attr("objectives", plan.objectives)
        with quiet_optuna():
            study.set_metric_names(plan.objectives)  # optuna-dashboard labels its axes with them
    if (stored is not None and stored != json.loads(json.dumps(space))) or \
            (objectives is not None and objectives != plan.objectives):
        raise InputError(f"study {plan.settings.study!r} was started with another search space or objectives",
                         "resume it with the same [tune.space] and objectives, or name a new study with --study")
    return study, storage


def _source_identity(config: ConvertConfig) -> str:
    """What the source is, by content where it is a file (a factory's .py file too)."""
    source = config.source
    path = Path(source.rsplit(":", 1)[0]) if ".py:" in source else Path(source)
    digest = sha256_file(path) if path.is_file() else "no-file"
    weights = sha256_file(Path(config.weights)) if config.weights and Path(config.weights).is_file() else None
    return json.dumps({"source": source, "content": digest, "weights": weights})


def _data_identity(path: str | None) -> str | None:
    if path is None:
        return None
    target = Path(path)
    if target.is_file():
        return sha256_file(target)
    if target.is_dir():
        listing = sorted((str(p.relative_to(target)), p.stat().st_size, p.stat().st_mtime_ns)
                         for p in target.rglob("*") if p.is_file())
        return hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    return path


class _Trials:
    """Runs one trial's two parts and keeps count of the float models built and reused."""

    def __init__(self, plan: TunePlan, events: Events) -> None:
        self.plan = plan
        self.events = events
        self.built = 0
        self.reused = 0
        self.float_root = plan.out_dir / "cache" / "float"
        from edgeopt.stages.common.cache import StageCache

        self.stage_cache = StageCache(plan.out_dir / "cache" / "stages")

    def _quiet(self, number: int) -> Events:
        def listener(event: Event) -> None:
            if event.kind == "started":
                self.events.note(f"trial {number}: {event.message}")

        return Events(listener)

    def float_model(self, config: ConvertConfig, number: int) -> tuple[Path, Report | None]:
        """The float model the trial quantizes: the source itself (an ONNX file, nothing pruned), or the
        float run for these settings, made once and reused."""
        from edgeopt.pipeline import REPORT, convert

        if config.prune is None and config.finetune is None and config.source.endswith(".onnx"):
            return Path(config.source), None
        settings = config.model_dump(mode="json", include=FLOAT_FIELDS)
        document = {"source": _source_identity(config), "settings": settings,
                    "finetune_data": _data_identity(config.finetune.data) if config.finetune else None,
                    "finetune_val": _data_identity(config.finetune.val) if config.finetune else None,
                    "eval": _data_identity(config.quantize.eval)}  # pruning reports accuracy on it
        key = hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:20]
        folder = self.float_root / key
        if (folder / "model.onnx").is_file() and (folder / REPORT).is_file():
            self.reused += 1
            return folder / "model.onnx", Report.model_validate_json((folder / REPORT).read_text(encoding="utf-8"))
        # convert publishes into the folder atomically, file by file, the report last: a folder without its
        # report (a killed run) is simply made again; two workers making the same model write the same files
        float_config = config.model_copy(update={
            "output_dir": str(folder), "device": None, "quantize": config.quantize.model_copy(update={"mode": "none"})})
        convert(float_config, self._quiet(number))
        self.built += 1
        report = Report.model_validate_json((folder / REPORT).read_text(encoding="utf-8"))
        return folder / "model.onnx", report

    def config(self, values: dict[str, Any]) -> ConvertConfig:
        return apply(self.plan.base, {**self.plan.space.fixed, **values})

    def run(self, number: int, values: dict[str, Any], epochs: int | None = None
            ) -> tuple[Path, Report, Report | None]:
        """The trial's model and reports; ``epochs``: train for this many (a cheaper rung of halving)."""
        from edgeopt.pipeline import convert

        config = self.config(values)
        if epochs is not None and config.finetune is not None:
            config = config.model_copy(update={"finetune": config.finetune.model_copy(update={"epochs": epochs})})
        float_path, float_report = self.float_model(config, number)
        out = self.plan.out_dir / "trials" / str(number)
        if out.exists():  # a cheaper rung's run of this trial: replaced by this one
            shutil.rmtree(out)
        if config.quantize.mode == "none" or config.quantize.calib is None:
            shutil.copytree(float_path.parent, out, dirs_exist_ok=True)
            return out / "model.onnx", Report.model_validate_json((out / "report.json").read_text()), None
        trial_config = config.model_copy(update={
            "source": str(float_path), "output_dir": str(out), "prune": None, "finetune": None, "weights": None,
            "factory_args": {}, "trust_pickle": False})
        result = convert(trial_config, self._quiet(number), command=self.plan.command, cache=self.stage_cache)
        return result.model_path, result.report, float_report


    def measure(self, number: int, model: Path, config: ConvertConfig) -> Any:
        """The trial's model timed on this machine (`edgeopt profile --measure` on its evaluation data), kept
        beside it as profile.json: its latency and peak memory are then measured figures."""
        from edgeopt.commands.profile import profile_model

        data = config.quantize.eval or config.quantize.calib
        profile = profile_model(
            model, [self.plan.base.targets[0]], input_shapes={k or None: tuple(v) for k, v in config.input_shapes.items()},
            dims=dict(config.dims), fills={k: str(v) for k, v in config.fills.items()},
            state_pairs=dict(config.state_pairs), measure=True, runs=MEASURED_RUNS, threads=[config.quantize.threads],
            targets_dir=Path(config.targets_dir) if config.targets_dir else None,
            inputs=Path(data) if data else None, inputs_preprocess=config.quantize.calib_preprocess,
            events=self._quiet(number))
        write_text_atomic(model.parent / "profile.json", profile.model_dump_json(indent=2) + "\n")
        return profile


def run_tune(plan: TunePlan, events: Events | None = None, should_stop: Callable[[], bool] = lambda: False
             ) -> TuneResult:
    """Run (or continue) the study until it holds ``settings.trials`` finished trials, the timeout passes or
    ``should_stop()`` says so after a trial; then publish the front and the winner."""
    from optuna.trial import TrialState

    events = (events or Events()).scoped("tune")
    local = plan.storage.removeprefix("sqlite:///") if plan.storage.startswith("sqlite:///") else None
    if plan.settings.resume and local is not None and not Path(local).is_file():  # before anything is created
        raise InputError(f"--resume: there is no study to resume ({local} does not exist)",
                         "drop --resume to start the study, or give the OUT (or --storage) of the earlier run")
    ensure_writable_dir(plan.out_dir)
    study, storage = _open_study(plan)
    recovered = recover_dead_trials(study, storage)
    if recovered:
        events.note(f"trial(s) {', '.join(map(str, recovered))} of a stopped worker queued again")
    if plan.settings.sampler == "grid":
        _queue_grid(study, plan)
    already = len(study.get_trials(deepcopy=False))
    study.sampler = _sampler(plan, plan.settings.seed + already, constrained=bool(plan.budgets))
    distributions = {d.path: d.distribution() for d in plan.space.dimensions}
    trials = _Trials(plan, events)
    started = time.monotonic()
    stopped = "trials"
    ran = 0
    while True:
        counted = _counted(study)
        events.progress(min(counted, plan.settings.trials), plan.settings.trials, _best_text(study, plan))
        if counted >= plan.settings.trials:
            break
        if plan.settings.timeout_s and time.monotonic() - started > plan.settings.timeout_s:
            stopped = "timeout"
            break
        if should_stop():
            stopped = "interrupted"
            break
        if plan.settings.sampler == "grid" and _grid_done(study, plan):
            stopped = "grid exhausted"
            break
        with quiet_optuna(), claim_lock(plan.storage):
            trial = study.ask(distributions)
            trial.set_user_attr(WORKER_ATTR, this_worker())
        if plan.settings.sampler == "grid" and _claimed_before(study, trial):
            continue  # another worker holds this grid point (both queued the grid at once): the point runs once
        if _counted(study) > plan.settings.trials:  # another worker took the last one meanwhile
            queued = any(t.number == trial.number and "fixed_params" in t.system_attrs
                         for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=TrialState.FAIL)
            if queued:  # a queued point (grid, retry) goes back into the queue for a later run
                study.enqueue_trial(trial.params)
            break
        try:
            with heartbeat(storage, study, trial.number), quiet_optuna():
                _one_trial(study, trial, plan, trials)
        except KeyboardInterrupt:
            study.tell(trial, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise
        ran += 1
    return _finish(plan, study, trials, stopped, ran)


def _queue_grid(study: Any, plan: TunePlan) -> None:
    """Every grid point queued once into the study, in a seeded order: workers take them one at a time from
    the storage (Optuna's GridSampler stops the study from inside `optimize`, which ask-and-tell has not)."""
    import itertools
    import random

    if study.user_attrs.get("grid_queued"):
        return
    grid = plan.space.grid()
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    random.Random(plan.settings.seed).shuffle(points)
    for point in points:
        study.enqueue_trial(point, skip_if_exists=True)
    study.set_user_attr("grid_queued", True)


def _claimed_before(study: Any, trial: Any) -> bool:
    """Whether a running or finished trial with a smaller number has ``trial``'s parameters; if so ``trial``
    is dropped (failed, marked a duplicate, not counted). Each worker checks after its own trial exists, so of
    two that took the same point at once the later one always sees the earlier and yields to it."""
    from optuna.trial import TrialState

    holder = next((t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE))
                   if t.number != trial.number and t.params == trial.params
                   and (t.state == TrialState.COMPLETE or t.number < trial.number)), None)
    if holder is None:
        return False
    trial.set_user_attr("duplicate_of", holder.number)
    study.tell(trial, state=TrialState.FAIL)
    return True


def _counted(study: Any) -> int:
    """Trials that count towards the total: finished, running, or failed on their own (not a dead worker's,
    which is queued again)."""
    from optuna.trial import TrialState

    count = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.state in (TrialState.COMPLETE, TrialState.RUNNING) or (
                trial.state == TrialState.FAIL and "error" in trial.user_attrs):
            count += 1
    return count


def _grid_done(study: Any, plan: TunePlan) -> bool:
    from optuna.trial import TrialState

    size = plan.space.size() or 0
    seen = {json.dumps(t.params, sort_keys=True) for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.RUNNING)}
    return len(seen) >= size


def _same_as(study: Any, params: dict[str, Any], number: int) -> Any:
    from optuna.trial import TrialState

    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if other.number != number and other.params == params and "values" in other.user_attrs:
            return other
    return None


def _one_trial(study: Any, trial: Any, plan: TunePlan, trials: _Trials) -> None:
    from optuna.trial import TrialState

    earlier = _same_as(study, trial.params, trial.number)
    if earlier is not None:  # identical settings are never recomputed
        for key, value in earlier.user_attrs.items():
            if key != WORKER_ATTR:
                trial.set_user_attr(key, value)
        trial.set_user_attr("same_as", earlier.number)
        study.tell(trial, values=list(earlier.values))
        return
    begun = time.monotonic()
    params = dict(trial.params)
    try:
        config = trials.config(params)
        rungs = halving.budgets(config.finetune.epochs, plan.settings.halving) if config.finetune else [None]
        for rung, epochs in enumerate(rungs):
            model, report, float_report = trials.run(trial.number, params, epochs if len(rungs) > 1 else None)
            profiles = [trials.measure(trial.number, model, config)] if plan.settings.measure else None
            result: TrialScore = score(model, report, float_report, plan.base.targets[0], plan.budgets,
                                       Path(plan.base.targets_dir) if plan.base.targets_dir else None, profiles)
            if len(rungs) == 1 or any(result.values.get(name) is None for name in plan.objectives):
                break
            trial.set_user_attr(f"rung_{rung}", {"epochs": epochs, "values": result.values,
                                                 "constraints": result.constraints})
            if rung == len(rungs) - 1 or not halving.goes_on(
                    halving.rung_results(study, rung), trial.number, plan.objectives, plan.settings.objective,
                    plan.settings.halving):
                break
        trial.set_user_attr("epochs", epochs)
        trial.set_user_attr("full_budget", rung == len(rungs) - 1)
    except EdgeoptError as exc:
        trial.set_user_attr("error", f"{exc.message}" + (f" ({exc.hint})" if exc.hint else ""))
        study.tell(trial, state=TrialState.FAIL)
        return
    except Exception as exc:  # one trial's crash (a training that diverges, a runtime error) ends only that trial
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        trial.set_user_attr("error", f"{type(exc).__name__}: {first} (not an input error: please report it with "
                                     "this trial's settings)")
        study.tell(trial, state=TrialState.FAIL)
        return
    missing = [name for name in plan.objectives if result.values.get(name) is None]
    trial.set_user_attr("values", result.values)
    trial.set_user_attr("constraints", result.constraints)
    trial.set_user_attr("checks", result.checks)
    trial.set_user_attr("metric_source", result.metric_source)
    trial.set_user_attr("model", str(model.resolve()))
    trial.set_user_attr("seconds", round(time.monotonic() - begun, 2))
    if report.summary.quantization.shipped:
        trial.set_user_attr("shipped", report.summary.quantization.shipped)
    if missing:
        trial.set_user_attr("error", f"the run produced no {', '.join(missing)} figure")
        study.tell(trial, state=TrialState.FAIL)
        return
    study.tell(trial, values=[float(result.values[name]) for name in plan.objectives])


def _best_text(study: Any, plan: TunePlan) -> str:
    rows = [r for r in _rows(study, plan) if r["feasible"] and r["full_budget"]]
    if not rows:
        return "no feasible trial yet"
    best = min(rows, key=lambda r: ranking_key(plan.objectives, plan.settings.objective)(r["values"]))
    return f"best feasible: trial {best['number']} ({_values_text(best['values'], plan.objectives)})"


def _values_text(values: dict[str, float], names: list[str]) -> str:
    units = {"metric": "{:.4f}", "latency": "{:.3g} ms", "size": "{:.0f} B", "memory": "{:.0f} B"}
    return ", ".join(f"{n} {units[n].format(values[n])}" for n in names if values.get(n) is not None)


def _rows(study: Any, plan: TunePlan) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.WAITING or "duplicate_of" in trial.user_attrs:
            continue  # queued grid points and retries are not trials yet; a dropped duplicate never ran
        attrs = trial.user_attrs
        row = {"number": trial.number, "state": trial.state.name.lower(), "params": trial.params,
               "values": attrs.get("values"), "constraints": attrs.get("constraints", []),
               "checks": attrs.get("checks", []), "model": attrs.get("model"), "worker": attrs.get(WORKER_ATTR),
               "error": attrs.get("error"), "same_as": attrs.get("same_as"), "seconds": attrs.get("seconds"),
               "shipped": attrs.get("shipped"), "metric_source": attrs.get("metric_source")}
        row["full_budget"] = bool(attrs.get("full_budget", True))
        row["epochs"] = attrs.get("epochs")
        row["feasible"] = bool(trial.state == TrialState.COMPLETE and row["values"] is not None
                               and all(c <= 0 for c in row["constraints"]))
        rows.append(row)
    return rows


def _here(row: dict[str, Any], trials: _Trials) -> None:
    """A trial another worker ran on another machine has its files there: its model is made again here from
    its settings (the same float model and quantization; a training run may differ in its last digits), and the
    row says so. A failure leaves the row unpublished."""
    if Path(row["model"] or "").is_file():
        return
    trials.events.note(f"trial {row['number']} ran on {row['worker']}: making its model here from its settings")
    try:
        epochs = row["epochs"] if not row["full_budget"] else None
        model, _report, _float_report = trials.run(row["number"], dict(row["params"]), epochs)
    except EdgeoptError as exc:
        row["rebuild_error"] = exc.message
        return
    row["rebuilt_here"], row["model"] = True, str(model.resolve())


def _publish(row: dict[str, Any], folder: Path) -> bool:
    """Copy a trial's model and report into ``folder`` (False where its files are on another machine)."""
    model = Path(row["model"] or "")
    if not model.is_file():
        return False
    staging = Path(tempfile.mkdtemp(prefix=".publish-", dir=folder.parent))
    try:
        for item in model.parent.iterdir():
            if item.is_file():
                shutil.copy2(item, staging / item.name)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def _finish(plan: TunePlan, study: Any, trials: _Trials, stopped: str, ran: int) -> TuneResult:
    names = plan.objectives
    rows = _rows(study, plan)
    # only full-budget results compete (a trial halving stopped early was trained for less)
    complete = [r for r in rows if r["state"] == "complete" and r["values"] is not None and r["full_budget"]]
    feasible = [r for r in complete if r["feasible"]]
    key = ranking_key(names, plan.settings.objective)
    front = pareto_front(feasible, names, lambda r: r["values"])
    front.sort(key=lambda r: key(r["values"]))
    pareto_dir = plan.out_dir / "pareto"
    pareto_dir.mkdir(parents=True, exist_ok=True)
    for row in front:
        _here(row, trials)
        row["published"] = str(pareto_dir / str(row["number"])) if _publish(row, pareto_dir / str(row["number"])) \
            else None
    winner = front[0] if front else None
    nearest = None
    exit_code = 0
    if winner is not None:
        _publish_final(plan.out_dir, winner)
        order = plan.settings.objective or " then ".join(names)
        winner = {**winner, "why": f"feasible under every budget ({len(plan.budgets)}), on the Pareto front of "
                                   f"{len(feasible)} feasible trial(s), best by {order}: "
                                   f"{_values_text(winner['values'], names)}"}
    elif complete:
        exit_code = 1
        miss = min(complete, key=lambda r: (sum(max(0.0, c) for c in r["constraints"]), key(r["values"])))
        _here(miss, trials)
        folder = plan.out_dir / "nearest-miss"
        nearest = {**miss, "published": str(folder) if _publish(miss, folder) else None,
                   "why": "no trial met the budgets; this one missed them by the least: "
                          + "; ".join([c for c in miss["checks"] if " exceeds " in c or " below " in c]
                                      or miss["checks"])}
    else:
        exit_code = 1
    document = {
        "kind": "tune", "schema_version": SCHEMA_VERSION, "study": plan.settings.study,
        "storage": redacted(plan.storage), "sampler": plan.settings.sampler, "seed": plan.settings.seed,
        "objectives": names, "directions": [DIRECTIONS[n] for n in names], "objective": plan.settings.objective,
        "space": _space_document(plan.space), "budgets": [b.label for b in plan.budgets],
        "trials_wanted": plan.settings.trials, "trials_run_here": ran, "stopped_by": stopped,
        "float_models": {"built": trials.built, "reused": trials.reused},
        "trials": rows, "front": [r["number"] for r in front], "winner": winner, "nearest_miss": nearest,
        "command": plan.command,
    }
    write_text_atomic(plan.out_dir / TUNE_JSON, json.dumps(document, indent=2, default=str) + "\n")
    model = plan.out_dir / "model.onnx" if winner is not None else None
    return TuneResult(document, exit_code, model)


def _publish_final(out_dir: Path, winner: dict[str, Any]) -> None:
    """OUT/model.onnx and OUT/report.json: the winner's files, each replaced atomically."""
    source = Path(winner["model"])
    if not source.is_file():
        return
    for item in source.parent.iterdir():
        if item.is_file():
            staging = out_dir / f".{item.name}.tmp"
            shutil.copy2(item, staging)
            staging.replace(out_dir / item.name)

