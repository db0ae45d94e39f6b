"""Weekly / retrain pipelines end to end on the real stack: gating, failure, resume, concurrency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import query
from mlops_cli import db, registry, store
from mlops_cli.runs import StepFailed, Trigger

FAST_ENV = {"INITIAL_LOAD_FRACTION": "0.5", "MIN_F1_THRESHOLD": "0.3"}


@pytest.fixture
def source(small_catalogue, monkeypatch):
    x, y = small_catalogue
    monkeypatch.setenv("MLOPS_X_PATH", str(x))
    monkeypatch.setenv("MLOPS_Y_PATH", str(y))
    for k, v in FAST_ENV.items():
        monkeypatch.setenv(k, v)
    return x, y


def steps_of(conn, parent):
    return query(conn, "SELECT step, status FROM pipeline_runs WHERE parent_run_id = %s ORDER BY id", (parent,))


@pytest.mark.slow
def test_weekly_pipeline_ends_with_a_champion_and_a_rerun_resumes(source, cli, conn, settings, monkeypatch, tmp_path):
    # A failure injected in train stops the chain: promote never runs, the pipeline exits 1.
    monkeypatch.setenv("MLOPS_FAULT", "train:fail")
    r = cli("pipeline", "weekly", "--as-of", "2026-03-02")
    assert r.exit_code == 1
    assert "weekly pipeline (run #1) failed: step train failed" in r.output
    assert "not run: evaluate, promote" in r.output
    assert steps_of(conn, 1) == [("load", "succeeded"), ("train", "failed")]
    assert query(conn, "SELECT status FROM pipeline_runs WHERE id = 1")[0][0] == "failed"
    assert query(conn, "SELECT count(*) FROM pipeline_runs WHERE step IN ('evaluate', 'promote')")[0][0] == 0
    # the failure was notified (log channel always on)
    log_lines = settings.notification_log_path.read_text().splitlines()
    failure = json.loads(log_lines[-1])
    assert failure["event"] == "pipeline_failed"
    # ...naming the pipeline's run and the failed step's run, both pipeline_runs ids
    [(train_run,)] = query(conn, "SELECT id FROM pipeline_runs WHERE parent_run_id = 1 AND step = 'train'")
    assert (failure["context"]["pipeline_run_id"], failure["context"]["step_run_id"]) == (1, train_run)
    assert "Run:        pipeline_runs id 1  (see `mlops runs`)" in failure["text"]

    # The rerun for the same week resumes: load is not redone, train runs, then evaluate and promote.
    monkeypatch.delenv("MLOPS_FAULT")
    r = cli("pipeline", "weekly", "--as-of", "2026-03-04", "--json")
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert [(line["step"], line["status"]) for line in lines[:-1]] == [
        ("load", "skipped"), ("train", "succeeded"), ("evaluate", "succeeded"), ("promote", "succeeded")]
    assert lines[-1]["status"] == "succeeded"
    # the pipeline row's outputs name each step's row as the step lines do
    assert query(conn, "SELECT outputs->'steps' FROM pipeline_runs WHERE id = %s", (lines[-1]["pipeline_run_id"],)) \
        == [({line["step"]: {"status": line["status"], "pipeline_run_id": line["pipeline_run_id"]}
              for line in lines[:-1]},)]
    assert query(conn, "SELECT count(*) FROM load_batches")[0][0] == 1
    champion = registry.version_by_alias(settings, "champion")
    assert champion is not None and champion["version"] == "1"
    # lineage: each step consumed the one before it
    rows = query(conn, """SELECT c.step, u.step FROM pipeline_runs c JOIN pipeline_runs u ON u.id = c.upstream_run_id
                          WHERE c.parent_run_id = %s ORDER BY c.id""", (lines[-1]["pipeline_run_id"],))
    assert rows == [("train", "load"), ("evaluate", "train"), ("promote", "evaluate")]

    # Same week once more: nothing to do, every step skipped by its gate.
    r = cli("pipeline", "weekly", "--as-of", "2026-03-05")
    assert r.exit_code == 0 and "done: nothing to do" in r.output

    # A human's retrain trains without a new load; an identical model does not beat the champion.
    r = cli("pipeline", "retrain", "--by", "alice")
    assert r.exit_code == 0, r.output
    assert len(registry.list_versions(settings)) == 2
    assert registry.version_by_alias(settings, "champion")["version"] == "1"
    assert query(conn, "SELECT actor, triggered_by FROM pipeline_runs WHERE step = 'pipeline' ORDER BY id DESC LIMIT 1") == \
        [("alice", "cli")]


def _spawn(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "mlops_cli.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or dict(os.environ))


def test_a_step_that_runs_twice_in_a_pipeline_keeps_both_rows_in_its_summary():
    """The daily pipeline runs promote twice when an auto retrain follows the shadow's decision:
    the pipeline row's outputs name both runs. Before, the second replaced the first."""
    from mlops_cli.pipeline import step_summary
    from mlops_cli.runs import StepResult

    ran = [StepResult("drift", "succeeded", 1, ""), StepResult("promote", "skipped", 2, ""),
           StepResult("train", "succeeded", 3, ""), StepResult("promote", "succeeded", 5, "")]
    assert step_summary(ran) == {"drift": {"status": "succeeded", "pipeline_run_id": 1},
                                 "promote": {"status": "skipped", "pipeline_run_id": 2},
                                 "train": {"status": "succeeded", "pipeline_run_id": 3},
                                 "promote (2)": {"status": "succeeded", "pipeline_run_id": 5}}


def test_two_concurrent_weekly_pipelines_one_runs_one_says_already_running(source, conn):
    env = dict(os.environ, MLOPS_FAULT="train:fail")  # keep it short: load, then a failing train
    first = _spawn("pipeline", "weekly", "--as-of", "2026-03-09", env=dict(env, MLOPS_FAULT="load:hang"))
    deadline = time.time() + 60
    while not query(conn, "SELECT count(*) FROM pipeline_runs WHERE step = 'load' AND status = 'running'")[0][0]:
        assert time.time() < deadline, first.communicate()
        time.sleep(0.1)
    second = _spawn("pipeline", "weekly", "--as-of", "2026-03-09", env=env)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert "already running: another weekly pipeline is in progress (pipeline run #1)" in out
    first.kill()
    first.wait()
    assert query(conn, "SELECT count(*) FROM load_batches")[0][0] == 0
    assert query(conn, "SELECT status FROM pipeline_runs WHERE step = 'pipeline' ORDER BY id") == \
        [("running",), ("skipped",)]


def test_transient_error_in_a_step_is_retried_then_succeeds(source, cli, conn, monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_FAULT_COUNTER", str(tmp_path / "n"))
    monkeypatch.setenv("MLOPS_FAULT", "load:transient=1,train:fail")
    r = cli("pipeline", "weekly", "--as-of", "2026-03-16")
    assert r.exit_code == 1  # train fails on purpose to keep the test short
    assert query(conn, "SELECT step, status FROM pipeline_runs WHERE step = 'load' ORDER BY id") == \
        [("load", "failed"), ("load", "succeeded")]
    assert query(conn, "SELECT count(*) FROM load_batches")[0][0] == 1


def test_a_pipeline_exits_by_the_kind_of_its_failed_steps_cause(source, cli, conn, monkeypatch):
    """A step that cannot reach a service after its retries fails the pipeline with 75
    (EX_TEMPFAIL: worth retrying), as a command that cannot reach it does; another cause: 1."""
    monkeypatch.setenv("STEP_RETRIES", "2")
    monkeypatch.setenv("MLOPS_FAULT", "load:transient=99")
    r = cli("pipeline", "weekly", "--as-of", "2026-03-09", "--json")
    assert r.exit_code == 75, r.output
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert (last["status"], last["error_code"]) == ("failed", "UNAVAILABLE")
    assert query(conn, "SELECT status FROM pipeline_runs WHERE step = 'load' ORDER BY id") == [("failed",), ("failed",)]
    monkeypatch.setenv("MLOPS_FAULT", "load:fail")
    r = cli("pipeline", "weekly", "--as-of", "2026-03-09")
    assert r.exit_code == 1 and "step load failed" in r.output
    # what a connection lost mid-step raises is psycopg2's own error, not a domain error: the
    # kind is still Unavailable (75), by runs.is_transient
    import psycopg2

    from mlops_cli.errors import NotFound, TransientError
    from mlops_cli.pipeline import error_code

    assert error_code(psycopg2.OperationalError("server closed the connection unexpectedly")) == "UNAVAILABLE"
    assert error_code(psycopg2.InterfaceError("connection already closed")) == "UNAVAILABLE"
    assert error_code(TransientError("db down")) == "UNAVAILABLE" and error_code(NotFound("x")) == "NOT_FOUND"
    assert error_code(RuntimeError("a bug")) == error_code(None) == "ERROR"


def test_a_step_refused_before_it_starts_fails_the_pipeline_with_its_reason(cli, conn):
    """No source catalogue configured: the load is refused before its step starts (bad input
    writes no step row), and the weekly pipeline fails saying so, recorded on the pipeline's own
    row. Before, its message said `run #None`."""
    r = cli("pipeline", "weekly", "--as-of", "2026-03-09")
    assert r.exit_code == 1
    [(run_id, status, error)] = query(conn, "SELECT id, status, error FROM pipeline_runs")
    assert status == "failed" and error.startswith("step load failed (before it started): No source catalogue: ")
    assert error.endswith("; not run: train, evaluate, promote")
    assert r.stdout.splitlines()[-1] == f"weekly pipeline (run #{run_id}) failed: {error}"
    assert "run #None" not in r.output


def test_a_step_whose_connection_is_lost_fails_with_its_cause_and_is_retried(settings, conn, caplog):
    """The database ends the step's session mid-step (a restart, a failover, pg_terminate_backend):
    the step fails with that cause, not with the rollback's "connection already closed"; the
    retry runs on a new connection, and its start marks the row it could not finish; a command
    exits 75 for it (a psycopg2 error has no code of ours)."""
    import psycopg2

    from mlops_cli import store
    from mlops_cli.cli import DomainError, domain_errors
    from mlops_cli.runs import run_step, with_retries

    bodies = []

    def body(step):
        bodies.append(step.pipeline_run_id)
        if len(bodies) == 1:
            with db.connection(settings) as other:
                query(other, "SELECT pg_terminate_backend(%s)", (step.conn.get_backend_pid(),))
            store.ping(step.conn)
        step.message = "done"

    result = with_retries(settings, lambda c: run_step(c, Trigger(actor="pytest"), "load", body), attempts=2,
                          delay=0.01)
    assert result.status == "succeeded" and len(bodies) == 2
    [(first, status, error)] = query(conn, "SELECT id, status, error FROM pipeline_runs WHERE id = %s", (bodies[0],))
    assert (status, error) == ("failed", "abandoned: the database session running this step ended (its process "
                                         "died, or lost its connection before it could record the failure)")
    assert any(f"step load (run #{first}) failed: " in r.getMessage() and "could not be recorded" in r.getMessage()
               for r in caplog.records)

    @domain_errors
    def command():
        bodies.clear()
        with_retries(settings, lambda c: run_step(c, Trigger(actor="pytest"), "load", body), attempts=1)

    with pytest.raises(DomainError) as caught:
        command()
    assert caught.value.exit_code == 75
    assert caught.value.message.startswith(f"load failed (run #{bodies[0]}): ")
    assert f"(not recorded in run #{bodies[0]}: " in caught.value.message
    assert isinstance(caught.value.__context__.cause, psycopg2.OperationalError)


def test_step_timeout_fails_the_step(source, cli, conn, monkeypatch):
    monkeypatch.setenv("MLOPS_FAULT", "load:hang")
    monkeypatch.setenv("STEP_TIMEOUT", "1")
    monkeypatch.setenv("STEP_RETRIES", "1")
    r = cli("pipeline", "weekly", "--as-of", "2026-03-23")
    assert r.exit_code == 1
    assert "step load timed out after 1s (STEP_TIMEOUT)" in r.output
    assert query(conn, "SELECT status FROM pipeline_runs WHERE step = 'load'")[0][0] == "failed"


def test_step_timeout_stops_a_step_waiting_inside_postgresql(settings):
    """The alarm is a signal, run only between bytecodes: alone it cannot end a step that waits
    inside libpq (here on a lock another session holds, as a hung rollback would hold the
    champion's). The watchdog cancels the step's query at the limit: the step fails timed out,
    its run row says so, and the lock it waited for was never granted to it."""
    import threading

    from mlops_cli.pipeline import StepTimeout, time_limit
    from mlops_cli.runs import run_step

    holder, waiter, check = db.open_db(settings), db.open_db(settings), db.open_db(settings)
    holder.cursor().execute("SELECT pg_advisory_lock(424242)")
    # a bound for a broken watchdog: the holder lets go, the waiter then gets the lock
    release = threading.Timer(120, holder.close)
    release.start()
    try:
        with pytest.raises(StepFailed) as caught:
            with time_limit(1, "load", waiter):
                run_step(waiter, Trigger(actor="pytest"), "load",
                         lambda step: waiter.cursor().execute("SELECT pg_advisory_lock(424242)"))
        failed = caught.value
        assert isinstance(failed.cause, StepTimeout)
        assert failed.result.message == "step load timed out after 1s (STEP_TIMEOUT)"
        assert query(check, "SELECT status, error FROM pipeline_runs WHERE id = %s",
                     (failed.result.pipeline_run_id,)) == [("failed", "step load timed out after 1s (STEP_TIMEOUT)")]
        assert query(check, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 424242 "
                            "AND granted AND pid = %s", (waiter.get_backend_pid(),)) == [(0,)]
    finally:
        release.cancel()
        for c in (holder, waiter, check):
            c.close()


def test_launch_returns_its_childs_run_not_an_older_row_with_the_same_pid(source, conn, settings, monkeypatch):
    """pids are reused (a container's start again from 1 after each restart): an old `skipped`
    retrain row with the new child's pid and host must not be taken for the child's. Before,
    launch answered "a retrain pipeline is already running" (the API's 409) while it started."""
    import socket

    from mlops_cli import pipeline

    old = store.insert_run(conn, pipeline="retrain", step="pipeline", status="skipped", triggered_by="api",
                           actor="old", params={}, pid=1, hostname=socket.gethostname(),
                           outputs={"message": "already running: another retrain pipeline is in progress"})
    conn.commit()
    real, children = subprocess.Popen, []

    def popen(*args, **kwargs):  # the older row turns out to have the pid the child gets
        child = real(*args, **kwargs)
        children.append(child)
        with db.connection(settings) as c, c.cursor() as cur:
            cur.execute("UPDATE pipeline_runs SET pid = %s WHERE id = %s", (child.pid, old))
        return child

    monkeypatch.setattr(pipeline.subprocess, "Popen", popen)
    monkeypatch.setenv("MLOPS_FAULT", "train:hang")
    try:
        run_id = pipeline.launch(settings, "retrain", actor="bob", triggered_by="api")
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert run_id != old
    assert query(conn, "SELECT actor, pid FROM pipeline_runs WHERE id = %s", (run_id,)) == [("bob", children[0].pid)]


def test_launch_starts_a_background_retrain_and_refuses_a_second(source, conn, settings, cli):
    from mlops_cli.errors import AlreadyRunning
    from mlops_cli.pipeline import launch

    cli("load")
    os.environ["MLOPS_FAULT"] = "train:hang"
    try:
        run_id = launch(settings, "retrain", actor="bob", triggered_by="api")
    finally:
        del os.environ["MLOPS_FAULT"]
    row = query(conn, "SELECT step, status, actor, triggered_by, pipeline FROM pipeline_runs WHERE id = %s", (run_id,))
    assert row == [("pipeline", "running", "bob", "api", "retrain")]
    with pytest.raises(AlreadyRunning, match="a retrain pipeline is already running"):
        launch(settings, "retrain", actor="carol")
    pid = query(conn, "SELECT pid FROM pipeline_runs WHERE id = %s", (run_id,))[0][0]
    os.kill(pid, 9)
