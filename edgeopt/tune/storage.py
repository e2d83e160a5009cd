"""Where a study lives: SQLite in the output folder by default (resumable; `optuna-dashboard OUT/tune.db` opens
it as it is), or any Optuna RDB URL (``postgresql://...``) that workers on many machines share.

Both use Optuna's RDB storage with heartbeats: a worker that dies stops beating, and the next worker to start
marks its trial failed and queues it again (RetryFailedTrialCallback), so nothing stays "running" for ever.
A worker killed on this machine is recognised at once by its process id (recorded on each trial), without
waiting for the heartbeat's grace period.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeopt.errors import InputError
from edgeopt.fsutil import process_alive

HEARTBEAT_S = 20
GRACE_S = 60
WORKER_ATTR = "edgeopt_worker"  # "host:pid" of the process running the trial


def storage_url(url: str | None, out_dir: Path) -> str:
    return url or f"sqlite:///{(out_dir / 'tune.db').resolve()}"


@contextlib.contextmanager
def claim_lock(url: str) -> Iterator[None]:
    """Held while a worker takes its next trial from a SQLite study: Optuna moves a queued trial to "running"
    with a read then a write, which SQLite does not lock between (PostgreSQL's SELECT ... FOR UPDATE does), so
    two local workers starting together could both take trial 0 and the second to finish fail on telling it.
    SQLite studies are local files: an advisory lock beside the file serializes the workers that share it."""
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks
        fcntl = None  # type: ignore[assignment]
    if path is None or fcntl is None or not Path(path).parent.is_dir():
        yield
        return
    with open(f"{path}.claim-lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna marks heartbeats and their callbacks experimental and warns on every use: not the user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="optuna")
        warnings.filterwarnings("ignore", message=".*(experimental|Heartbeat|deprecated).*")
        yield


def open_storage(url: str) -> Any:
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if not url.startswith(("sqlite:", "postgresql", "mysql")):
        raise InputError(f"unsupported study storage {url!r}",
                         "use sqlite:///path/tune.db or postgresql://user:password@host/database")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url.startswith("postgresql://"):  # SQLAlchemy's default driver is psycopg2; edgeopt[tune] brings psycopg 3
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            url = "postgresql+psycopg://" + url[len("postgresql://"):]
    kwargs: dict[str, Any] = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S}
    if url.startswith("sqlite:"):
        # several local workers write the same file: wait for the lock instead of failing at once
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    failure: Exception | None = None
    for attempt in range(4):
        try:
            with quiet_optuna():
                return RDBStorage(url, heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
                                  **kwargs)
        except Exception as exc:  # sqlalchemy / driver errors: one line, never a traceback
            failure = exc
            # workers starting together on a new storage race to create its tables: the loser tries again
            if not any(word in str(exc) for word in ("already exists", "locked", "UNIQUE constraint",
                                                     "UniqueViolation", "duplicate key")):
                break
            time.sleep(0.5 * (attempt + 1))
    text = str(failure).strip()
    reason = text.splitlines()[0] if text else type(failure).__name__
    raise InputError(f"cannot open the study storage {redacted(url)}: {reason}",
                     "check the URL, that the server runs and accepts this user")


def redacted(url: str) -> str:
    """The URL without its password."""
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def recover_dead_trials(study: Any, storage: Any) -> list[int]:
    """Trials left "running" by workers that are gone: on this host, those whose process has exited; anywhere,
    those whose heartbeat stopped (Optuna's own check). Each is marked failed and queued again with its
    parameters. Returns their numbers."""
    import optuna
    from optuna.trial import TrialState

    host = socket.gethostname()
    study_id = storage.get_study_id_from_name(study.study_name)
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(trial.user_attrs.get(WORKER_ATTR, ""))
        name, _, pid = worker.rpartition(":")
        if name == host and pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            if storage.set_trial_state_values(trial_id, TrialState.FAIL):
                study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
                recovered.append(trial.number)
    with quiet_optuna():
        optuna.storages.fail_stale_trials(study)
    return recovered


@contextlib.contextmanager
def heartbeat(storage: Any, study: Any, number: int) -> Iterator[None]:
    """Beat for the trial while it runs (ask-and-tell gets no heartbeat thread from Optuna): a worker that dies
    stops beating, and the next worker's `fail_stale_trials` queues its trial again."""
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name),
                                                               number)
    done = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception), quiet_optuna():  # a missed beat only risks a retry
                storage.record_heartbeat(trial_id)
            if done.wait(HEARTBEAT_S):
                return

    thread = threading.Thread(target=beat, name=f"edgeopt-tune-heartbeat-{number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)
