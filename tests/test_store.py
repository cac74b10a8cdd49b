"""The state file's state machine, on a real SQLite file in tmp_path."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from sttwatch import config
from sttwatch.backends import Backend, Status, TaskState
from sttwatch.pipeline import JobSettings, Pipeline, PipelineSettings
from sttwatch.store import Job, State, Store

A, B, C = "/rec/a.mp3", "/rec/b.mp3", "/rec/c.mp3"
RESULT = {"results": {"channels": [{"alternatives": [{"transcript": "hello"}]}]}}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "jobs.db"  # the folder does not exist yet


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store(db_path)
    yield s
    s.close()


def get(store: Store, path: str) -> Job:
    job = store.get(path)
    assert job is not None
    return job


def submitted(store: Store, path: str = A, gen: str = "gen-A", now: float = 100.0,
              backend: str = "aimlapi") -> Job:
    """A job moved seen -> submitting -> pending with ``gen`` on ``backend``."""
    assert store.add_seen(path, 10, 1000, now) is not None
    (claimed,) = [j for j in store.claim_for_submit(now, 10) if j.path == path]
    assert store.set_pending(claimed.id, backend, gen, now, now + 1.0,
                             {"x-aimlapi-usd-spent": "0.001"})
    return get(store, path)


def done(store: Store, path: str = A, gen: str = "gen-A") -> Job:
    job = submitted(store, path, gen)
    assert store.set_fetched(job.id, gen, RESULT, 102.0, 2.0)
    assert store.mark_done(job.id, 103.0)
    return get(store, path)


# --- discovery -----------------------------------------------------------------------------

def test_add_seen_new_path_is_queued(store: Store) -> None:
    job = store.add_seen(A, 10, 1000, 50.0)
    assert job is not None
    assert (job.path, job.size, job.mtime_ns, job.state) == (A, 10, 1000, State.SEEN)
    assert (job.attempts, job.polls, job.generation_id, job.error) == (0, 0, None, None)
    assert job.created_at == job.updated_at == 50.0 and job.next_at == 0
    assert store.get(A) == job


def test_add_seen_unchanged_returns_none_and_leaves_the_job_alone(store: Store) -> None:
    before = submitted(store)
    assert store.add_seen(A, 10, 1000, 200.0) is None
    assert get(store, A) == before  # still pending with its id, nothing touched
    finished = done(store, B)
    assert store.add_seen(B, 10, 1000, 200.0) is None
    assert get(store, B) == finished


@pytest.mark.parametrize(("size", "mtime_ns"), [(11, 1000), (10, 2000)])
def test_new_version_of_a_done_job_starts_over(store: Store, size: int, mtime_ns: int) -> None:
    old = done(store)
    new = store.add_seen(A, size, mtime_ns, 300.0)
    assert new is not None and new.id == old.id
    assert (new.state, new.size, new.mtime_ns) == (State.SEEN, size, mtime_ns)
    assert (new.generation_id, new.result, new.finished_at, new.error) == (None, None, None, None)
    assert (new.attempts, new.polls, new.next_at) == (0, 0, 0)
    assert [j.path for j in store.claim_for_submit(300.0, 5)] == [A]


def test_new_version_of_a_pending_job_abandons_its_task(store: Store) -> None:
    job = submitted(store, gen="gen-old")
    assert store.by_generation_id("gen-old") == job
    new = store.add_seen(A, 99, 1000, 200.0)
    assert new is not None and new.state is State.SEEN and new.generation_id is None
    assert store.by_generation_id("gen-old") is None
    assert store.due_for_poll(1e9, 10) == []


# --- submitting ----------------------------------------------------------------------------

def test_claim_for_submit_counts_attempts_and_honours_limit_and_due_time(store: Store) -> None:
    for p in (A, B, C):
        store.add_seen(p, 1, 1, 10.0)
    assert store.claim_for_submit(20.0, 0) == []
    first = store.claim_for_submit(20.0, 2)
    assert sorted(j.path for j in first) == [A, B]
    assert all(j.state is State.SUBMITTING and j.attempts == 1 for j in first)
    assert get(store, C).state is State.SEEN
    assert [j.path for j in store.claim_for_submit(20.0, 5)] == [C]
    assert store.claim_for_submit(20.0, 5) == []
    assert store.in_flight() == 3

    # Put A back with a not-before time: it is not claimed early, and the retry is counted.
    a = get(store, A)
    assert store.requeue(a.id, 21.0, 60.0, "HTTP 503: down")
    assert get(store, A).error == "HTTP 503: down"
    assert store.next_due(State.SEEN) == 60.0
    assert store.claim_for_submit(59.0, 5) == []
    (again,) = store.claim_for_submit(60.0, 5)
    assert (again.path, again.state, again.attempts) == (A, State.SUBMITTING, 2)


def test_requeue_with_refund_does_not_count_the_attempt(store: Store) -> None:
    store.add_seen(A, 1, 1, 10.0)
    (job,) = store.claim_for_submit(10.0, 1)
    assert store.requeue(job.id, 11.0, 0, "HTTP 429", refund_attempt=True)
    assert get(store, A).attempts == 0
    assert not store.requeue(job.id, 12.0, 0, "again")  # seen is not in flight


def test_set_pending_only_from_submitting(store: Store) -> None:
    job = store.add_seen(A, 1, 1, 10.0)
    assert job is not None
    assert not store.set_pending(job.id, "aimlapi", "gen-A", 11.0, 12.0, None)
    assert get(store, A).state is State.SEEN and get(store, A).generation_id is None

    store.claim_for_submit(11.0, 1)
    assert store.set_pending(job.id, "aimlapi", "gen-A", 11.5, 12.5,
                             {"x-aimlapi-credits-used": "2100"})
    pending = get(store, A)
    assert (pending.state, pending.generation_id, pending.backend) == (
        State.PENDING, "gen-A", "aimlapi")
    assert (pending.submitted_at, pending.next_at) == (11.5, 12.5)
    assert pending.cost == {"x-aimlapi-credits-used": "2100"}
    assert store.by_generation_id("gen-A") == pending
    assert store.due_for_poll(12.4, 10) == [] and store.due_for_poll(12.5, 10) == [pending]

    # A second answer for the same job cannot overwrite the committed id.
    assert not store.set_pending(job.id, "local", "gen-B", 13.0, 14.0, None)
    assert get(store, A) == pending


# --- start-up ------------------------------------------------------------------------------

def test_recover_resubmits_submitting_and_repolls_pending(store: Store) -> None:
    store.add_seen(A, 1, 1, 10.0)
    store.claim_for_submit(10.0, 1)  # A crashed inside its create call
    b = submitted(store, B, "gen-B")
    store.schedule_poll(b.id, "gen-B", 500.0, 101.0)
    store.add_seen(C, 1, 1, 10.0)  # C is queued and stays so

    assert store.recover(200.0) == {"resubmit": 1, "repoll": 1}
    a = get(store, A)
    assert (a.state, a.attempts, a.next_at) == (State.SEEN, 1, 0)  # the lost call counted
    b2 = get(store, B)
    assert (b2.state, b2.generation_id, b2.next_at) == (State.PENDING, "gen-B", 200.0)
    assert [j.path for j in store.due_for_poll(200.0, 10)] == [B]
    assert get(store, C).state is State.SEEN
    assert store.recover(201.0) == {"resubmit": 0, "repoll": 1}


def test_recover_requeues_pending_ids_of_volatile_backends_without_counting(
        store: Store) -> None:
    local = submitted(store, A, "local-1", backend="local")  # ids die with the process
    remote = submitted(store, B, "gen-B", backend="aimlapi")
    assert local.attempts == remote.attempts == 1
    assert store.recover(200.0, volatile_backends=["local"]) == {"resubmit": 1, "repoll": 1}
    back = get(store, A)
    assert (back.state, back.generation_id, back.attempts) == (State.SEEN, None, 0)
    assert store.by_generation_id("local-1") is None
    assert get(store, B).state is State.PENDING and get(store, B).next_at == 200.0
    (again,) = store.claim_for_submit(200.0, 5)
    assert (again.path, again.attempts) == (A, 1)


# --- polling and endings -------------------------------------------------------------------

def test_fetched_then_done(store: Store) -> None:
    job = submitted(store)
    store.schedule_poll(job.id, "gen-A", 105.0, 101.0)
    assert get(store, A).polls == 1 and get(store, A).next_at == 105.0
    assert store.set_fetched(job.id, "gen-A", RESULT, 106.0, 4.5)
    fetched = get(store, A)
    assert (fetched.state, fetched.result, fetched.polls) == (State.FETCHED, RESULT, 2)
    assert store.fetched() == [fetched]
    assert store.recent_service_seconds() == [4.5]
    assert store.in_flight() == 0 and store.counts()["fetched"] == 1

    assert store.mark_done(job.id, 107.0, "ok")
    finished = get(store, A)
    assert (finished.state, finished.finished_at, finished.error) == (State.DONE, 107.0, "ok")
    assert finished.result == RESULT and finished.generation_id == "gen-A"
    assert store.fetched() == [] and store.counts()["done"] == 1
    assert not store.mark_done(job.id, 108.0)  # done once only
    assert not store.mark_failed(job.id, "late failure", 108.0)
    assert get(store, A) == finished


def test_stale_generation_id_changes_nothing(store: Store) -> None:
    job = submitted(store, gen="gen-A")
    assert not store.set_fetched(job.id, "gen-OLD", RESULT, 106.0, 1.0)
    store.schedule_poll(job.id, "gen-OLD", 999.0, 106.0)
    assert get(store, A) == job

    # The file changed and the new version was submitted as gen-B: gen-A answers are stale.
    store.add_seen(A, 20, 2000, 110.0)
    submitted_b = store.claim_for_submit(110.0, 1)
    assert store.set_pending(submitted_b[0].id, "aimlapi", "gen-B", 111.0, 112.0, None)
    current = get(store, A)
    assert not store.set_fetched(job.id, "gen-A", RESULT, 113.0, 1.0)
    store.schedule_poll(job.id, "gen-A", 999.0, 113.0)
    assert get(store, A) == current
    assert store.recent_service_seconds() == []


def test_mark_done_only_from_fetched(store: Store) -> None:
    job = submitted(store)
    assert not store.mark_done(job.id, 101.0)
    assert get(store, A) == job
    seen = store.add_seen(B, 1, 1, 1.0)
    assert seen is not None and not store.mark_done(seen.id, 2.0)
    assert get(store, B).state is State.SEEN


def test_mark_failed_from_every_unfinished_state(store: Store) -> None:
    pend = submitted(store, "/rec/pending.mp3", "gen-P")
    fet = submitted(store, "/rec/fetched.mp3", "gen-F")
    store.set_fetched(fet.id, "gen-F", RESULT, 102.0, 1.0)
    store.add_seen("/rec/submitting.mp3", 1, 1, 1.0)
    store.claim_for_submit(1.0, 10)
    store.add_seen("/rec/seen.mp3", 1, 1, 1.0)
    counts = store.counts()
    assert {st for st in State if counts[st.value]} == set(State) - {State.DONE, State.FAILED}
    assert get(store, pend.path).state is State.PENDING

    paths = ("/rec/pending.mp3", "/rec/fetched.mp3", "/rec/submitting.mp3", "/rec/seen.mp3")
    for job in [get(store, p) for p in paths]:
        assert store.mark_failed(job.id, f"bad {job.state.value}", 200.0)
        failed = get(store, job.path)
        assert failed.state is State.FAILED and failed.error == f"bad {job.state.value}"
        assert failed.finished_at == 200.0
        assert not store.mark_failed(job.id, "twice", 201.0)
        assert get(store, job.path).error == f"bad {job.state.value}"
    assert store.counts()["failed"] == 4
    assert {j.path for j in store.failed()} == {"/rec/seen.mp3", "/rec/submitting.mp3",
                                                "/rec/pending.mp3", "/rec/fetched.mp3"}


# --- operators -----------------------------------------------------------------------------

def test_retry_failed_requeues_only_failed_jobs(store: Store) -> None:
    for p in (A, B):
        job = submitted(store, p, f"gen-{p}")
        assert store.mark_failed(job.id, "service failed the task", 150.0)
    finished = done(store, C)
    assert store.retry(300.0) == 2
    for p in (A, B):
        job = get(store, p)
        assert (job.state, job.attempts, job.generation_id, job.next_at) == (
            State.SEEN, 0, None, 0)
    assert get(store, C) == finished
    assert store.retry(301.0) == 0
    assert sorted(j.path for j in store.claim_for_submit(302.0, 10)) == [A, B]


def test_retry_paths_requeues_named_files_whatever_their_state(store: Store) -> None:
    done(store, A)
    submitted(store, B, "gen-B")
    assert store.retry(300.0, [A, B, "/rec/unknown.mp3"]) == 2
    for p in (A, B):
        job = get(store, p)
        assert (job.state, job.attempts, job.generation_id, job.result) == (
            State.SEEN, 0, None, None)
    assert store.by_generation_id("gen-B") is None


def test_forget_drops_rows_and_a_forgotten_file_is_new_again(store: Store) -> None:
    done(store, A)
    store.add_seen(B, 1, 1, 1.0)
    assert store.forget([A, "/rec/unknown.mp3"]) == 1
    assert store.get(A) is None and store.get(B) is not None
    again = store.add_seen(A, 10, 1000, 400.0)
    assert again is not None and again.state is State.SEEN and again.created_at == 400.0


def test_counts_every_state(store: Store) -> None:
    assert store.counts() == {s.value: 0 for s in State}
    done(store, A)
    submitted(store, B)
    store.add_seen(C, 1, 1, 1.0)
    store.add_seen("/rec/d.mp3", 1, 1, 1.0)
    store.add_done("/rec/e.mp3", 1, 1, 1.0, "transcript already up to date")
    assert store.counts() == {"seen": 2, "submitting": 0, "pending": 1, "fetched": 0,
                              "done": 2, "failed": 0}
    assert get(store, "/rec/e.mp3").error == "transcript already up to date"


# --- the file itself -----------------------------------------------------------------------

def test_wal_mode_and_a_second_connection_reads_while_the_store_writes(
        store: Store, db_path: Path) -> None:
    done(store, A)
    reader = sqlite3.connect(str(db_path), timeout=1)
    try:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # A `status` reader holding a read transaction open does not block the daemon.
        reader.execute("BEGIN")
        assert reader.execute("SELECT path, state FROM jobs").fetchall() == [(A, "done")]
        assert store.add_seen(B, 1, 1, 500.0) is not None
        job = store.claim_for_submit(500.0, 1)
        assert [j.path for j in job] == [B]
        # The reader keeps its snapshot until it ends its transaction, then sees the write.
        assert reader.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
        reader.execute("COMMIT")
        assert sorted(reader.execute("SELECT path, state FROM jobs").fetchall()) == [
            (A, "done"), (B, "submitting")]
    finally:
        reader.close()


def test_reopening_the_file_keeps_everything(db_path: Path) -> None:
    store = Store(db_path)
    done(store, A)
    submitted(store, B, "gen-B")
    store.add_seen(C, 5, 6, 7.0)
    before = {p: store.get(p) for p in (A, B, C)}
    counts, seconds = store.counts(), store.recent_service_seconds()
    store.close()

    again = Store(db_path)
    try:
        assert {p: again.get(p) for p in (A, B, C)} == before
        assert again.counts() == counts and again.recent_service_seconds() == seconds == [2.0]
        assert again.by_generation_id("gen-B") == before[B]
    finally:
        again.close()


# --- a stale answer seen from the pipeline -------------------------------------------------

class ChangedWhileFetching(Backend):
    """Answers 'failed' for the old task, after the watcher has queued a new version."""

    def __init__(self, store: Store, path: str) -> None:
        self.store, self.path = store, path

    def fetch(self, generation_id: str) -> Status:
        assert self.store.add_seen(self.path, 20, 2000, 150.0) is not None  # file replaced
        return Status(TaskState.FAILED, error="Generation failed", raw_status="failed")


def test_a_stale_failure_answer_does_not_fail_the_new_version(store: Store,
                                                              tmp_path: Path) -> None:
    source = tmp_path / "talk.mp3"
    source.write_bytes(b"new version")
    submitted(store, str(source), "gen-old")
    js = JobSettings(backend="aimlapi", model="m", options={}, formats=("txt",), root=tmp_path)
    output = config.parse("{}", tmp_path / "sttwatch.yaml").output
    pipeline = Pipeline(store, {"aimlapi": ChangedWhileFetching(store, str(source))},
                        PipelineSettings(poll_workers=1), lambda _p: js, output,
                        clock=lambda: 150.0)
    try:
        pipeline.poll_once()
    finally:
        pipeline.close()  # waits for the fetch
    job = get(store, str(source))
    assert (job.size, job.mtime_ns) == (20, 2000)
    assert job.state is State.SEEN and job.error is None
    assert sorted(f.name for f in tmp_path.iterdir()) == ["state", "talk.mp3"]
