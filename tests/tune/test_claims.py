"""Workers sharing a SQLite study take each queued trial once (tune.storage.claim_lock): Optuna moves a queued
trial to "running" with a read then a write, which SQLite does not lock between, so two workers asking at once
could both take the same trial (a two-worker grid study failed with "Trial#0 has already finished")."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

WORKER = r"""
import json, sys
import optuna
from edgeopt.tune.storage import claim_lock, open_storage, quiet_optuna
url = sys.argv[1]
study = optuna.load_study(study_name="claims", storage=open_storage(url))
taken = []
while True:
    with quiet_optuna(), claim_lock(url):
        trial = study.ask()
    if trial.number >= 60:  # the queue is empty: a fresh trial
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        break
    taken.append(trial.number)
    try:
        study.tell(trial, values=[0.0])
    except Exception as exc:  # the other worker finished it first
        taken.append(f"{type(exc).__name__}")
print(json.dumps(taken))
"""


def _run(url: str) -> list:
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, url],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    found = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        found.extend(json.loads(out.strip().splitlines()[-1]))
    return found


@pytest.mark.skipif(sys.platform == "win32", reason="advisory locks are POSIX")
def test_three_workers_take_each_queued_trial_of_a_sqlite_study_once(tmp_path):
    import optuna

    from edgeopt.tune.storage import open_storage

    url = f"sqlite:///{tmp_path / 'tune.db'}"
    study = optuna.create_study(study_name="claims", storage=open_storage(url), direction="maximize")
    for point in range(60):
        study.enqueue_trial({"point": point}, user_attrs={}, skip_if_exists=False)
    taken = _run(url)
    # none told twice (without the lock, three runs out of three here had a worker fail to tell a trial another
    # had finished), and every queued trial taken once
    assert not [item for item in taken if isinstance(item, str)]
    assert sorted(taken) == list(range(60))
