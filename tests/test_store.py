"""The store contract: every test runs against a real SQLite file and a real PostgreSQL
server, through the one interface the stages use (huey's idea: one suite, every backend)."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import stat
import threading
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from stores import (
    PG_URL,
    STORE_KINDS,
    contract_store,
    new_schema,
    pg_url_with_schema,
    require_pg,
)

from sttwatch.store import (
    Admission,
    Job,
    Plan,
    Spend,
    State,
    Store,
    StoreError,
    StoreLocked,
    StoreMissing,
    open_store,
)
from sttwatch.store.sql import SCHEMA_VERSION
from sttwatch.store.sqlite import SqliteStore

A, B, C = "/rec/a.mp3", "/rec/b.mp3", "/rec/c.mp3"
RESULT = {"results": {"channels": [{"alternatives": [{"transcript": "hello"}]}]}}
API = Plan("aimlapi", "#g1_whisper-tiny", {"language": "en"}, ("txt", "srt"), "/rec")
LOCAL = Plan("local", "tiny.en", {}, ("txt",), "/rec")
ME, OTHER = "host-a", "host-b"
LEASE = 60.0


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with contract_store(request.param, tmp_path) as s:
        yield s


def offer(path: str = A, size: int = 10, mtime: int = 1000, plan: Plan = API,
          keys: tuple[str, ...] | None = None, done: str | None = None) -> Admission:
    stem = path.rsplit(".", 1)[0]
    return Admission(path, size, mtime, plan,
                     keys if keys is not None else (f"{stem}.{{format}}",
                                                    f"{path}.{{format}}"), done)


def get(store: Store, path: str) -> Job:
    job = store.get(path)
    assert job is not None
    return job


def admitted(store: Store, path: str = A, plan: Plan = API, now: float = 50.0) -> Job:
    (job,) = store.admit([offer(path, plan=plan)], now)
    return job


def submitted(store: Store, path: str = A, gen: str = "gen-A", now: float = 100.0,
              plan: Plan = API, owner: str = ME) -> Job:
    admitted(store, path, plan)
    job = store.claim_submit(owner, now, LEASE, [plan.backend])
    assert job is not None and job.path == path
    pending = store.set_pending(job, gen, now, now + 1.0, {"x-aimlapi-usd-spent": "0.001"})
    assert pending is not None
    return pending


def fetched(store: Store, path: str = A, gen: str = "gen-A") -> Job:
    submitted(store, path, gen)
    (claimed,) = store.claim_poll(ME, 101.0, LEASE, 10, ["local"], ["aimlapi"])
    got = store.set_fetched(claimed, RESULT, 102.0, 2.0)
    assert got is not None and got.state is State.FETCHED
    return got


# --- admission -----------------------------------------------------------------------------

def test_admit_queues_a_new_file_with_its_plan_and_output_name(store: Store) -> None:
    job = admitted(store)
    assert (job.path, job.size, job.mtime_ns, job.state) == (A, 10, 1000, State.SEEN)
    assert job.plan == API and job.backend == "aimlapi"
    assert job.output_key == "/rec/a.{format}"
    assert job.owner is None


def test_admit_leaves_an_unchanged_file_alone_and_restarts_a_changed_one(store: Store) -> None:
    job = fetched(store)
    assert store.admit([offer()], 60.0) == []
    assert get(store, A).state is State.FETCHED
    assert store.admit([offer(size=11)], 70.0, OTHER) == []  # never reset under its holder
    assert get(store, A).state is State.FETCHED
    (again,) = store.admit([offer(size=11)], 70.0, ME)
    assert again.id == job.id and again.state is State.SEEN and again.size == 11
    assert (again.generation_id, again.result, again.owner, again.attempts) == (
        None, None, None, 0)
    assert store.versions([A, B]) == {A: (11, 1000)}


def test_hosts_admitting_one_batch_at_once_queue_each_file_once(store: Store) -> None:
    """Daemons watching one folder offer its new files together: each file is queued by one
    of them, and a batch mixing files already queued with a newer version and a new file
    queues only those two."""
    batch = [offer(f"/rec/{i:03}.mp3") for i in range(100)]
    got: list[list[Job]] = []
    lock = threading.Lock()

    def host(owner: str) -> None:
        jobs = store.admit(batch, 1.0, owner)
        with lock:
            got.append(jobs)

    threads = [threading.Thread(target=host, args=(f"h{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [j.id for jobs in got for j in jobs]
    assert len(ids) == len(set(ids)) == 100
    assert store.counts()["seen"] == 100
    mixed = [batch[0], offer("/rec/001.mp3", size=11, mtime=2000), offer("/rec/new.mp3")]
    again = store.admit(mixed, 2.0, OTHER)
    assert sorted(j.path for j in again) == ["/rec/001.mp3", "/rec/new.mp3"]
    assert get(store, "/rec/001.mp3").size == 11 and store.counts()["seen"] == 101


def test_admit_records_an_up_to_date_file_as_done(store: Store) -> None:
    assert store.admit([offer(done="transcript already up to date")], 1.0) == []
    job = get(store, A)
    assert job.state is State.DONE and job.error == "transcript already up to date"


def test_two_sources_never_share_an_output_name(store: Store) -> None:
    keys = ("/rec/talk.{format}", "/rec/talk.wav.{format}")
    first, second = store.admit([offer("/rec/talk.mp3", keys=keys),
                                 offer("/rec/talk.wav", keys=keys)], 1.0)
    assert (first.output_key, second.output_key) == keys
    assert store.output_holder(keys[0]) == "/rec/talk.mp3"
    # A new version keeps the name it had.
    (again,) = store.admit([offer("/rec/talk.mp3", size=99, keys=keys)], 2.0)
    assert again.output_key == keys[0]


def test_an_output_name_is_held_by_one_row_only_done_rows_included(store: Store) -> None:
    keys = ("/rec/talk.{format}", "/rec/talk.mp3.{format}")
    # A file found already transcribed holds the name of the transcripts found.
    assert store.admit([offer("/rec/talk.mp3", keys=keys, done="up to date")], 1.0) == []
    assert get(store, "/rec/talk.mp3").output_key == keys[0]
    assert store.output_holders([keys[0], keys[1]]) == {keys[0]: "/rec/talk.mp3"}
    # Offered nothing but a held name, a file is not admitted at all (tried again later).
    assert store.admit([offer("/rec/talk.wav", keys=(keys[0],))], 2.0) == []
    assert store.get("/rec/talk.wav") is None
    (wav,) = store.admit([offer("/rec/talk.wav", keys=(keys[0], "/rec/talk.wav.{format}"))],
                         3.0)
    assert wav.output_key == "/rec/talk.wav.{format}"
    # Found "done" under a name another row holds: those transcripts are the other's, so
    # this file is queued under its next free name instead.
    (m4a,) = store.admit([offer("/rec/talk.m4a", keys=(keys[0], "/rec/talk.m4a.{format}"),
                                done="up to date")], 4.0)
    assert (m4a.state, m4a.output_key) == (State.SEEN, "/rec/talk.m4a.{format}")
    held = store.output_holders([keys[0], "/rec/talk.wav.{format}", "/rec/talk.m4a.{format}"])
    assert sorted(held.values()) == ["/rec/talk.m4a", "/rec/talk.mp3", "/rec/talk.wav"]


def test_versions_move_forward_only_and_the_same_bytes_keep_their_result(
        store: Store) -> None:
    job = fetched(store)
    assert store.mark_done(job, 103.0)
    with store._tx() as x:  # type: ignore[attr-defined]
        x.execute(store.dialect.q("UPDATE jobs SET sha256='abc' WHERE path=?"), (A,))  # type: ignore[attr-defined]
    assert store.known_sha256([A, B]) == {A: "abc"}
    assert store.admit([offer(mtime=999)], 110.0) == []  # an older view: not a version
    assert store.admit([offer(mtime=999, size=11)], 110.0) == []
    assert get(store, A).state is State.DONE
    # A newer mtime over the same bytes: the row takes the version and keeps its result.
    same = Admission(A, 10, 2000, API, ("/rec/a.{format}",), None, "abc")
    assert store.admit([same], 111.0) == []
    kept = get(store, A)
    assert (kept.state, kept.mtime_ns, kept.result) == (State.DONE, 2000, RESULT)
    # Other bytes, newer (or the same mtime with another size): a new version.
    (again,) = store.admit([offer(mtime=2000, size=12)], 112.0)
    assert (again.state, again.sha256, again.result) == (State.SEEN, None, None)


def test_an_offer_read_before_the_row_learned_its_digest_never_resets_it(
        store: Store) -> None:
    """Another host finishes the file (and learns its digest) between this host's read of
    the store and its offer: the offer, unhashed, proves no new bytes, so the done row and
    its result stay (resetting it would send the file a second time)."""
    job = fetched(store)
    assert store.mark_done(job, 103.0)
    with store._tx() as x:  # type: ignore[attr-defined]
        x.execute(store.dialect.q("UPDATE jobs SET sha256='abc' WHERE path=?"), (A,))  # type: ignore[attr-defined]
    late = Admission(A, 10, 2000, API, ("/rec/a.{format}",), None, None, digest_read=True)
    assert store.admit([late], 111.0) == []
    kept = get(store, A)
    assert (kept.state, kept.sha256, kept.result) == (State.DONE, "abc", RESULT)
    # Hashed at the next scan, other bytes: a new version.
    (again,) = store.admit([replace(late, sha256="def")], 112.0)
    assert (again.state, again.result) == (State.SEEN, None)


def test_a_newer_view_never_resets_a_create_in_flight_even_its_own(store: Store) -> None:
    """A host's own rescan sees its newer mtime of the file whose create it is sending: the
    row has no digest yet, so the view proves nothing, and resetting it would orphan the
    create and send the file again."""
    admitted(store)
    claimed = store.claim_submit(ME, 50.0, 60.0, ["aimlapi"])
    assert claimed is not None and claimed.state is State.SUBMITTING
    newer = Admission(A, 10, 2000, API, ("/rec/a.{format}",), None, None, digest_read=True)
    assert store.admit([newer], 51.0, ME) == []
    assert store.admit([newer], 51.0, OTHER) == []
    assert get(store, A).state is State.SUBMITTING
    # Its lease gone (the host died mid-create): the newer view is queued as before.
    (again,) = store.admit([newer], 200.0, OTHER)
    assert (again.state, again.mtime_ns) == (State.SEEN, 2000)


def test_a_result_is_reused_only_for_the_same_request(store: Store) -> None:
    french = Plan("aimlapi", API.model, {"language": "fr"}, API.formats, "/rec")
    first = fetched(store)
    assert store.mark_done(first, 103.0)
    with store._tx() as x:  # type: ignore[attr-defined]
        x.execute(store.dialect.q("UPDATE jobs SET sha256='abc' WHERE path=?"), (A,))  # type: ignore[attr-defined]
    assert get(store, A).request_key == API.reuse_key()
    assert store.find_result_for("abc", API.reuse_key(), 0) is not None
    assert store.find_result_for("abc", french.reuse_key(), 0) is None
    reordered = Plan("aimlapi", API.model, {"language": "en"}, ("json",), "/elsewhere")
    assert reordered.reuse_key() == API.reuse_key()  # formats and folders shape files only
    task = Plan("local", "tiny", {}, engine={"task": "translate"})
    assert task.reuse_key() != Plan("local", "tiny", {}, engine={"task": "transcribe"}
                                    ).reuse_key()


def test_a_batch_of_many_files_is_one_call(store: Store) -> None:
    jobs = store.admit([offer(f"/rec/{i:04}.mp3") for i in range(1200)], 1.0)
    assert len(jobs) == 1200
    assert store.counts()["seen"] == 1200
    assert len(store.versions([f"/rec/{i:04}.mp3" for i in range(1200)])) == 1200


def test_a_listing_is_compared_with_its_files_rows_only(store: Store) -> None:
    """A scan asks about whole folders' listings: a folder of many files may be read as one
    range (SQLite), which must not reach a folder whose name extends it, one below it, or a
    file it was not asked about. New files, changed ones and names that cannot be stored
    come back; files known at their size and mtime do not."""
    from sttwatch.store.keys import WatchKeys
    mine = [f"/rec/d1/{i:03}.mp3" for i in range(40)] + [f"/rec/é/{i:03}.mp3" for i in range(40)]
    others = ["/rec/d10/x.mp3", "/rec/d1/sub/y.mp3", "/rec/d1.mp3", "/rec/d1-a/z.mp3",
              "/rec/é0/w.mp3"]
    store.admit([offer(p, size=i) for i, p in enumerate(mine + others)], 1.0)
    odd = "/rec/d1/\udcff.mp3"  # a name that is not UTF-8
    listed = [[(p, i, 1000) for i, p in enumerate(mine[:40]) if i],
              [(p, i + 40, 1000) for i, p in enumerate(mine[40:])]]
    listed[0] += [("/rec/d1/new.mp3", 1, 1000), (odd, 1, 1000), (mine[0], 7, 1000)]
    listed[1][5] = (mine[45], 45, 2000)  # changed since
    listed[1].append(("/rec/é/new.mp3", 1, 1000))
    want = [("/rec/d1/new.mp3", 1, 1000), (odd, 1, 1000), (mine[0], 7, 1000),
            (mine[45], 45, 2000), ("/rec/é/new.mp3", 1, 1000)]
    alone = [[(p, i + len(mine), 1000)] for i, p in enumerate(others)]
    gone = [[(p, 1, 1000)] for p in others]
    assert store.unknown(listed) == want
    assert store.unknown(alone) == []
    assert store.unknown(gone) == [f for files in gone for f in files]
    # Keyed by watch (a shared store), a folder nested as its own watch included.
    store.key_by_watch(WatchKeys.of([("rec", "/rec"), ("deep", "/rec/d1/sub")]), migrate=True)
    assert store.unknown(listed) == want
    assert store.unknown([[("/rec/d1/sub/y.mp3", len(mine) + 1, 1000)]]) == []
    assert store.versions(["/rec/d1/sub/y.mp3", mine[3]]) == {
        "/rec/d1/sub/y.mp3": (len(mine) + 1, 1000), mine[3]: (3, 1000)}


# --- submitting ----------------------------------------------------------------------------

def test_claim_submit_takes_one_due_job_of_the_ready_backends(store: Store) -> None:
    admitted(store, A, API)
    admitted(store, B, LOCAL)
    assert store.claim_submit(ME, 100.0, LEASE, ["elsewhere"]) is None
    job = store.claim_submit(ME, 100.0, LEASE, ["local"])
    assert job is not None and job.path == B
    assert (job.state, job.attempts, job.owner, job.lease_until) == (
        State.SUBMITTING, 1, ME, 100.0 + LEASE)
    job2 = store.claim_submit(OTHER, 100.0, LEASE, ["aimlapi", "local"])
    assert job2 is not None and job2.path == A and job2.owner == OTHER
    assert store.claim_submit(ME, 100.0, LEASE, ["aimlapi", "local"]) is None
    assert store.in_flight(ME) == {"local": 1} and store.in_flight(OTHER) == {"aimlapi": 1}


def test_requeue_puts_it_back_and_a_refund_does_not_count_the_attempt(store: Store) -> None:
    admitted(store)
    job = store.claim_submit(ME, 100.0, LEASE, ["aimlapi"])
    assert job is not None
    assert store.requeue(job, 101.0, 150.0, "outage", refund_attempt=True)
    back = get(store, A)
    assert (back.state, back.attempts, back.next_at, back.error, back.owner) == (
        State.SEEN, 0, 150.0, "outage", None)
    assert store.claim_submit(ME, 149.0, LEASE, ["aimlapi"]) is None
    assert store.claim_submit(ME, 150.0, LEASE, ["aimlapi"]) is not None


def test_set_pending_commits_the_id_and_cost(store: Store) -> None:
    job = submitted(store)
    assert (job.state, job.generation_id, job.owner) == (State.PENDING, "gen-A", ME)
    assert job.cost == {"x-aimlapi-usd-spent": "0.001"}
    assert store.spend() == {"x-aimlapi-usd-spent": pytest.approx(0.001)}


def test_a_trimmed_uploads_timeline_outlives_the_store_and_goes_with_a_changed_file(
        store: Store) -> None:
    timeline = ((0.0, 59.5, 7.25), (7.25, 127.0, 3.5))
    admitted(store)
    job = store.claim_submit(ME, 100.0, LEASE, ["aimlapi"])
    assert job is not None
    pending = store.set_pending(job, "gen-A", 100.0, 101.0, None, timeline=timeline)
    assert pending is not None and pending.timeline == timeline
    (claimed,) = store.claim_poll(ME, 101.0, LEASE, 10, ["local"], ["aimlapi"])
    assert claimed.timeline == timeline  # read back from the row, as after a restart
    store.admit([offer(size=11)], 110.0, ME)  # the file changed: its next upload is another
    assert get(store, A).timeline is None


def test_a_daemon_that_lost_its_lease_changes_nothing(store: Store) -> None:
    admitted(store)
    mine = store.claim_submit(ME, 100.0, LEASE, ["aimlapi"])
    assert mine is not None
    # ME stalls past its lease; OTHER takes the create back and claims it itself.
    assert store.reap(OTHER, 100.0 + LEASE + 1, ["local"])["creates"] == 1
    theirs = store.claim_submit(OTHER, 100.0 + LEASE + 1, LEASE, ["aimlapi"])
    assert theirs is not None and theirs.owner == OTHER
    assert store.set_pending(mine, "gen-stale", 170.0, 171.0, None) is None
    assert not store.requeue(mine, 170.0, 0.0, "late")
    assert not store.mark_failed(mine, "late", 170.0)
    assert get(store, A).owner == OTHER and get(store, A).state is State.SUBMITTING


# --- polling -------------------------------------------------------------------------------

def test_claim_poll_takes_own_due_jobs_and_pushes_them_a_lease_ahead(store: Store) -> None:
    submitted(store)  # first poll due at 101
    assert store.claim_poll(ME, 100.5, LEASE, 10, [], ["aimlapi"]) == []
    (job,) = store.claim_poll(ME, 101.0, LEASE, 10, [], ["aimlapi"])
    assert job.next_at == 101.0 + LEASE
    assert store.claim_poll(ME, 102.0, LEASE, 10, [], ["aimlapi"]) == []
    assert store.schedule_poll(job, 105.0, 102.0)
    assert get(store, A).next_at == 105.0 and get(store, A).polls == 1


def test_set_pending_books_the_spend_with_the_id_even_for_an_orphaned_task(
        store: Store) -> None:
    admitted(store)
    job = store.claim_submit(ME, 100.0, LEASE, ["aimlapi"])
    assert job is not None
    spend = Spend("2025-03-10", 0.25, 60.0, 1)
    assert store.set_pending(job, "gen-A", 100.0, 101.0, None, spend=spend) is not None
    # The same job again (its state moved on): fenced out, and still booked, once more.
    assert store.set_pending(job, "gen-B", 102.0, 103.0, None, spend=spend) is None
    assert store.spend_by_day("2025-03-01")["2025-03-10"] == (pytest.approx(0.5), 120.0, 2)
    assert get(store, A).generation_id == "gen-A"


def test_a_claim_says_when_the_next_job_is_due_in_its_own_transaction(store: Store) -> None:
    submitted(store, A, "gen-A")  # first poll due at 101
    early = store.claim_poll_due(ME, 100.5, LEASE, 10, [], ["aimlapi"])
    assert early.jobs == [] and early.next_due == 101.0
    taken = store.claim_poll_due(ME, 101.0, LEASE, 10, [], ["aimlapi"])
    assert [j.path for j in taken.jobs] == [A] and taken.next_due == 101.0 + LEASE
    # Another daemon counts this one's row from when the lease runs out.
    assert store.claim_poll_due(OTHER, 102.0, LEASE, 10, [], ["aimlapi"]).next_due == \
        101.0 + LEASE
    assert store.claim_poll_due(ME, 102.0, LEASE, 10, [], []).next_due is None
    assert store.claim_finish_due(ME, 102.0, LEASE, 10).next_due is None
    (job,) = taken.jobs
    assert store.set_fetched(job, RESULT, 103.0, 2.0) is not None
    done = store.claim_finish_due(ME, 103.0, LEASE, 10)
    assert [j.path for j in done.jobs] == [A] and done.next_due == 103.0 + LEASE
    assert store.claim_finish_due(ME, 104.0, LEASE, 10).jobs == []


def test_another_daemon_takes_over_durable_ids_only_when_the_lease_ran_out(
        store: Store) -> None:
    submitted(store, A, "gen-A", plan=API)
    submitted(store, B, "local-B", plan=LOCAL)
    assert store.claim_poll(OTHER, 120.0, LEASE, 10, ["local"], ["aimlapi", "local"]) == []
    later = 100.0 + LEASE + 1
    taken = store.claim_poll(OTHER, later, LEASE, 10, ["local"], ["aimlapi", "local"])
    assert [j.path for j in taken] == [A] and taken[0].owner == OTHER
    # The local id died with its daemon: reaping queues that file again, uncounted.
    assert store.reap(OTHER, later, ["local"]) == {"creates": 0, "local_ids": 1}
    b = get(store, B)
    assert (b.state, b.generation_id, b.attempts, b.owner) == (State.SEEN, None, 0, None)


def test_renew_keeps_a_live_daemons_jobs(store: Store) -> None:
    submitted(store)
    assert store.renew(ME, 150.0, LEASE) == 1
    assert store.claim_poll(OTHER, 100.0 + LEASE + 1, LEASE, 10, [], ["aimlapi"]) == []
    assert store.reap(OTHER, 100.0 + LEASE + 1, []) == {"creates": 0, "local_ids": 0}


def test_by_generation_id_finds_only_own_pending_jobs(store: Store) -> None:
    submitted(store, A, "local-1", plan=LOCAL)
    assert store.by_generation_id(ME, "local-1") is not None
    assert store.by_generation_id(OTHER, "local-1") is None


def test_fetched_then_done(store: Store) -> None:
    job = fetched(store)
    assert job.result == RESULT and job.polls == 1
    assert store.recent_service_seconds() == [2.0]
    # Due for the finisher at once (it takes results from the store), and only once.
    (claimed,) = store.claim_finish(ME, 103.0, LEASE, 10)
    assert store.claim_finish(ME, 103.0, LEASE, 10) == []
    assert store.claim_finish(OTHER, 103.0, LEASE, 10) == []
    assert store.mark_done(claimed, 104.0)
    done = get(store, A)
    assert (done.state, done.finished_at, done.owner) == (State.DONE, 104.0, None)


def test_a_stale_generation_id_changes_nothing(store: Store) -> None:
    job = submitted(store)
    (claimed,) = store.claim_poll(ME, 101.0, LEASE, 10, [], ["aimlapi"])
    assert store.requeue(claimed, 102.0, 0.0, "expired")
    assert store.set_fetched(claimed, RESULT, 103.0, 1.0) is None
    assert not store.schedule_poll(job, 200.0, 103.0)
    assert get(store, A).state is State.SEEN


def test_a_failed_write_is_deferred_in_the_row(store: Store) -> None:
    job = fetched(store)
    assert store.defer(job, 200.0, "disk full", 103.0)
    (again,) = store.claim_finish(ME, 200.0, LEASE, 10)
    assert again.defers == 1 and again.error == "disk full"
    assert store.mark_done(again, 201.0)


def test_another_daemon_finishes_a_stored_result_after_the_lease(store: Store) -> None:
    fetched(store)
    assert store.claim_finish(OTHER, 150.0, LEASE, 10) == []
    (taken,) = store.claim_finish(OTHER, 102.0 + LEASE + 1, LEASE, 10)
    assert taken.owner == OTHER and taken.result == RESULT


def test_mark_failed_from_every_unfinished_state(store: Store) -> None:
    admitted(store, A)
    assert store.mark_failed(get(store, A), "bad file", 5.0)
    job = submitted(store, B, "gen-B")
    assert store.mark_failed(job, "service failed", 6.0)
    failed = store.failed()
    assert {j.path for j in failed} == {A, B} and get(store, B).owner is None
    assert not store.mark_failed(get(store, A), "again", 7.0)


# --- start-up --------------------------------------------------------------------------------

def test_recover_takes_back_only_own_rows(store: Store) -> None:
    admitted(store, A)
    mine = store.claim_submit(ME, 100.0, LEASE, ["aimlapi"])
    submitted(store, B, "gen-B", owner=OTHER)
    submitted(store, C, "local-C", plan=LOCAL)
    assert mine is not None
    got = store.recover(ME, 110.0, LEASE, ["local"])
    assert got == {"resubmit": 2, "resume": 0}
    a, b, c = get(store, A), get(store, B), get(store, C)
    assert (a.state, a.attempts, a.owner) == (State.SEEN, 1, None)  # counted: may be billed
    assert (b.state, b.owner) == (State.PENDING, OTHER)  # another daemon's: untouched
    assert (c.state, c.attempts, c.generation_id) == (State.SEEN, 0, None)


def test_recover_polls_own_durable_ids_at_once(store: Store) -> None:
    submitted(store)
    assert store.recover(ME, 300.0, LEASE, ["local"]) == {"resubmit": 0, "resume": 1}
    job = get(store, A)
    assert (job.state, job.next_at, job.lease_until) == (State.PENDING, 300.0, 300.0 + LEASE)


# --- operators -----------------------------------------------------------------------------

def test_retry_and_forget(store: Store) -> None:
    admitted(store, A)
    assert store.mark_failed(get(store, A), "bad", 1.0)
    fetched(store, B, "gen-B")
    assert store.retry(2.0) == 1
    assert get(store, A).state is State.SEEN and get(store, B).state is State.FETCHED
    assert store.retry(3.0, [B]) == 1
    assert get(store, B).state is State.SEEN and get(store, B).result is None
    assert store.forget([A, "/nope"]) == 1 and store.get(A) is None


def test_retry_plans_again_and_leaves_a_job_with_a_task_out_alone(store: Store) -> None:
    sent = submitted(store, A)
    assert store.retry(2.0, [A]) == 0  # its task is out, owned by a live daemon
    assert get(store, A).generation_id == sent.generation_id
    admitted(store, B)
    assert store.mark_failed(get(store, B), "bad", 1.0)
    assert store.retry(3.0, [B], keep_plan=True) == 1 and get(store, B).plan == API
    assert store.mark_failed(get(store, B), "bad", 4.0)
    assert store.retry(5.0, [B]) == 1
    again = get(store, B)
    assert (again.plan, again.backend, again.error, again.finished_at) == (None, None, None,
                                                                           None)
    assert [j.path for j in store.stranded(["aimlapi"])] == [B]
    assert store.replan(again, LOCAL, 6.0) and get(store, B).plan == LOCAL
    assert not store.replan(again, API, 7.0)  # planned meanwhile: fenced by the old backend
    assert store.waiting_for_backend(["aimlapi"]) == {"local": 1}


def test_a_failed_job_with_its_result_is_rendered_again_without_a_create(
        store: Store) -> None:
    job = fetched(store)
    assert store.mark_failed(job, "cannot render transcript", 103.0)
    admitted(store, B)
    assert store.mark_failed(get(store, B), "bad file", 104.0)
    assert store.rerender(105.0) == 1  # B has no result: a retry, not a render
    (again,) = store.claim_finish(ME, 105.0, LEASE, 10)
    assert again.path == A and again.result == RESULT and again.generation_id == "gen-A"


def test_the_same_bytes_take_the_paid_result(store: Store) -> None:
    first = fetched(store)
    assert store.mark_done(first, 103.0)
    admitted(store, B)
    job = store.claim_submit(ME, 110.0, LEASE, ["aimlapi"])
    assert job is not None
    assert store.find_result("abc", "aimlapi", job.id) is None  # no hash recorded yet
    with store._tx() as x:  # type: ignore[attr-defined]
        x.execute(store.dialect.q("UPDATE jobs SET sha256='abc' WHERE path=?"), (A,))  # type: ignore[attr-defined]
    donor = store.find_result("abc", "aimlapi", job.id)
    assert donor is not None and donor.path == A
    assert store.find_result("abc", "local", job.id) is None
    got = store.adopt(job, donor, "abc", 111.0)
    assert got is not None and got.state is State.FETCHED and got.result == RESULT
    assert (got.reused_from, got.sha256, got.attempts, got.cost) == (A, "abc", 0, None)
    assert store.reused() == 1


def test_a_taken_result_keeps_the_timeline_of_the_trimmed_upload_it_came_from(
        store: Store) -> None:
    timeline = ((0.0, 60.0, 5.0),)
    admitted(store)
    job = store.claim_submit(ME, 100.0, LEASE, ["aimlapi"])
    assert job is not None
    assert store.set_pending(job, "gen-A", 100.0, 101.0, None, "abc", timeline=timeline)
    (claimed,) = store.claim_poll(ME, 101.0, LEASE, 10, ["local"], ["aimlapi"])
    donor = store.set_fetched(claimed, RESULT, 102.0, 2.0)
    assert donor is not None and store.mark_done(donor, 103.0)
    admitted(store, B)
    copy = store.claim_submit(ME, 110.0, LEASE, ["aimlapi"])
    assert copy is not None
    found = store.find_result("abc", "aimlapi", copy.id)
    assert found is not None
    got = store.adopt(copy, found, "abc", 111.0)
    assert got is not None and got.timeline == timeline


def test_counts_and_the_oldest_unfinished(store: Store) -> None:
    fetched(store, B, "gen-B")
    admitted(store, A, now=10.0)
    assert store.counts() == {"seen": 1, "submitting": 0, "pending": 0, "fetched": 1,
                              "done": 0, "failed": 0}
    assert store.counts([State.FETCHED, State.DONE]) == {
        "seen": 0, "submitting": 0, "pending": 0, "fetched": 1, "done": 0, "failed": 0}
    oldest = store.oldest_unfinished()
    assert oldest is not None and oldest.path == A


def test_concurrent_claims_never_hand_out_a_job_twice(store: Store) -> None:
    store.admit([offer(f"/rec/{i:03}.mp3") for i in range(60)], 1.0)
    got: list[int] = []
    lock = threading.Lock()

    def worker(owner: str) -> None:
        while (job := store.claim_submit(owner, 100.0, LEASE, ["aimlapi"])) is not None:
            with lock:
                got.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"h{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(set(got)) and len(got) == 60


# --- SQLite only: the file ----------------------------------------------------------------

OLD_DDL = """CREATE TABLE jobs (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, state TEXT NOT NULL, generation_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, polls INTEGER NOT NULL DEFAULT 0, submitted_at REAL,
    next_at REAL NOT NULL DEFAULT 0, error TEXT, result TEXT, cost TEXT, service_seconds REAL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, finished_at REAL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO jobs (path, size, mtime_ns, state, generation_id, created_at, updated_at)
    VALUES ('/rec/old.mp3', 5, 6, 'pending', 'gen-old', 1, 1);"""


def test_a_state_file_from_0_1_0_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_DDL)
    s = SqliteStore(path)
    job = get(s, "/rec/old.mp3")
    assert (job.state, job.generation_id, job.plan, job.owner) == (
        State.PENDING, "gen-old", None, None)
    # An unowned pending id of the old daemon is polled by whoever comes; a queued file of
    # the old daemon goes to this daemon's default backend.
    assert [j.path for j in s.claim_poll(ME, 10.0, LEASE, 5, [], ["aimlapi"])] == [
        "/rec/old.mp3"]
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO jobs (path, size, mtime_ns, state, created_at, updated_at) "
                   "VALUES ('/rec/queued.mp3', 1, 1, 'seen', 1, 1)")
    s.recover(ME, 20.0, LEASE, ["local"], default_backend="local")
    queued = s.claim_submit(ME, 20.0, LEASE, ["local"])
    assert queued is not None and queued.path == "/rec/queued.mp3" and queued.plan is None
    s.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == (
            str(SCHEMA_VERSION),)


def test_a_newer_state_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(StoreError, match=r"newer sttwatch \(schema 99"):
        SqliteStore(path)


@pytest.mark.parametrize("content", [b"this is not a database" * 100,
                                     b"SQLite format 3\x00" + b"\xff" * 200])
def test_a_damaged_state_file_names_itself_and_the_way_out(tmp_path: Path,
                                                           content: bytes) -> None:
    path = tmp_path / "broken.db"
    path.write_bytes(content)
    with pytest.raises(StoreError) as caught:
        SqliteStore(path)
    text = str(caught.value)
    assert str(path) in text and "mv " in text and ".broken" in text


def test_commands_never_create_a_state_file(tmp_path: Path) -> None:
    path = tmp_path / "nothing" / "here.db"
    with pytest.raises(StoreMissing, match="no state file"):
        open_store(path, None, create=False)
    assert not path.exists() and not path.parent.exists()


def test_the_state_file_is_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        s = SqliteStore(tmp_path / "s.db")
        admitted(s)
    finally:
        os.umask(old)
    for f in tmp_path.glob("s.db*"):
        if f.name.endswith((".db", "-wal")):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    s.close()


def test_one_daemon_per_state_file(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    first, second = SqliteStore(path), SqliteStore(path)
    first.lock_for_daemon("host-a")
    with pytest.raises(StoreLocked) as caught:
        second.lock_for_daemon("host-b")
    assert f"pid {os.getpid()}" in str(caught.value) and "host-a" in str(caught.value)
    first.close()
    second.lock_for_daemon("host-b")  # released with its holder
    second.close()


# --- PostgreSQL only ---------------------------------------------------------------------------

def test_postgres_schema_version_is_checked(tmp_path: Path) -> None:
    require_pg()
    from sttwatch.store.postgres import PostgresStore
    schema = new_schema()
    s = PostgresStore(PG_URL, schema=schema)
    try:
        with s._tx() as x:
            x.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
        with pytest.raises(StoreError, match="newer sttwatch"):
            PostgresStore(PG_URL, schema=schema)
        with pytest.raises(StoreMissing):
            PostgresStore(PG_URL, schema=new_schema(), create=False)
    finally:
        s.drop_schema()
        s.close()


def test_a_schema_url_reaches_the_same_rows(tmp_path: Path) -> None:
    require_pg()
    schema = new_schema()
    from sttwatch.store.postgres import PostgresStore
    s = PostgresStore(PG_URL, schema=schema)
    try:
        admitted(s)
        other = open_store(tmp_path / "unused.db", pg_url_with_schema(schema), create=False)
        assert get(other, A).plan == API
        other.close()
    finally:
        s.drop_schema()
        s.close()


# --- the local fallback ----------------------------------------------------------------------

def test_a_charge_is_taken_only_within_the_caps(store: Store) -> None:
    day, month = "2025-03-10", "2025-03-01"
    store.add_spend("2025-03-02", 0.5, 0.0, 1.0)  # earlier this month
    assert store.charge_within(day, month, 0.2, 60.0, 2.0, usd_per_day=0.3) is None
    assert store.charge_within(day, month, 0.2, 60.0, 3.0, usd_per_day=0.3) == "usd_per_day"
    assert store.charge_within(day, month, 0.2, 60.0, 4.0, usd_per_month=0.8) == \
        "usd_per_month"
    assert store.charge_within(day, month, 0.0, 60.0, 5.0,
                               audio_seconds_per_day=100.0) == "audio_hours_per_day"
    assert store.spend_by_day(month)[day] == (pytest.approx(0.2), 60.0, 1)
    # The service's word corrects the estimate; a create never made gives it all back.
    store.adjust_spend(day, 0.05, 0.0, 0, 6.0)
    assert store.spend_by_day(month)[day] == (pytest.approx(0.25), 60.0, 1)
    store.adjust_spend(day, -0.25, -60.0, -1, 7.0)
    assert store.spend_by_day(month)[day] == (pytest.approx(0.0), 0.0, 0)
    # Nothing known to add (a URL): sent until the cap is reached, not after.
    assert store.charge_within(day, month, 0.0, 0.0, 8.0, usd_per_month=0.5) == "usd_per_month"


def test_hosts_charging_at_once_stop_at_the_cap_together(store: Store) -> None:
    taken: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def host(i: int) -> None:
        start.wait()
        for _ in range(10):
            if store.charge_within("2025-03-10", "2025-03-01", 0.01, 1.0, 1.0,
                                   usd_per_day=0.05) is None:
                with lock:
                    taken.append(i)

    threads = [threading.Thread(target=host, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(taken) == 5  # 6 hosts x 10 tries at one cent under a five-cent cap
    usd, _secs, creates = store.spend_by_day("2025-03-01")["2025-03-10"]
    assert usd == pytest.approx(0.05) and creates == 5


def test_switch_backend_requeues_a_claimed_job_with_the_new_plan(store: Store) -> None:
    admitted(store)
    job = store.claim_submit(ME, 100.0, LEASE, ["aimlapi"])
    assert job is not None and job.attempts == 1
    assert store.switch_backend(job, LOCAL, 101.0)
    moved = get(store, A)
    assert (moved.state, moved.backend, moved.plan, moved.attempts, moved.owner) == (
        State.SEEN, "local", LOCAL, 0, None)
    assert not store.switch_backend(job, LOCAL, 102.0)  # fenced: no longer the claimed job
    again = store.claim_submit(ME, 103.0, LEASE, ["local"])
    assert again is not None and again.path == A


def test_an_event_is_marked_delivered_once_by_the_deliverer_that_holds_it(
        store: Store) -> None:
    job = fetched(store)
    store.mark_done(job, 200.0, event={"event_id": "ev-1", "source": A})
    assert store.claim_event(ME, 300.0, 60.0) is not None
    taken = store.claim_event(OTHER, 361.0, 60.0)  # ME outlived its lease: taken over
    assert taken is not None
    assert not store.event_delivered("ev-1", owner=ME)  # the stale one marks nothing
    assert not store.event_retry("ev-1", 500.0, "late", owner=ME)
    assert store.event_delivered("ev-1", owner=OTHER)
    assert not store.event_delivered("ev-1", owner=OTHER)
    assert store.outbox()["undelivered"] == 0


def test_jobs_keyed_by_watch_are_one_library_under_any_mount_path(store: Store) -> None:
    from sttwatch.store.keys import WatchKeys
    old = "/srv/rec/talk.mp3"
    store.admit([offer(old, keys=("/srv/rec/talk.{format}",))], 1.0)  # kept by absolute path
    here = WatchKeys.of([("rec", "/srv/rec"), ("deep", "/srv/rec/sub")])
    assert store.key_by_watch(here, migrate=True) == 1  # an existing store is migrated
    job = get(store, old)  # this host still sees its own paths
    assert (job.path, job.output_key) == (old, "/srv/rec/talk.{format}")
    (sub,) = store.admit([offer("/srv/rec/sub/a.mp3", keys=("/srv/rec/sub/a.{format}",))], 2.0)
    assert sub.path == "/srv/rec/sub/a.mp3"
    # Another host with the share elsewhere sees the same rows under its own paths.
    store.key_by_watch(WatchKeys.of([("rec", "/mnt/nas/rec"), ("deep", "/mnt/deep")]))
    there = get(store, "/mnt/nas/rec/talk.mp3")
    assert there.id == job.id and there.output_key == "/mnt/nas/rec/talk.{format}"
    assert there.plan is not None and there.plan.root == "/rec"  # the plan's own root
    assert get(store, "/mnt/deep/a.mp3").id == sub.id
    assert store.versions(["/mnt/nas/rec/talk.mp3"]) == {"/mnt/nas/rec/talk.mp3": (10, 1000)}
    assert store.output_holder("/mnt/nas/rec/talk.{format}") == "/mnt/nas/rec/talk.mp3"
    assert store.admit([offer("/mnt/nas/rec/talk.mp3")], 3.0) == []  # the same version
    assert store.forget(["/mnt/deep/a.mp3"]) == 1


def test_a_version_2_state_file_with_shared_output_names_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as db:  # what version 2 allowed: one name, two rows
        db.execute("DROP INDEX jobs_output_key_unique")
        for name in ("talk.wav.mp3", "talk.wav"):
            db.execute("INSERT INTO jobs (path, size, mtime_ns, state, output_key, plan, "
                       "created_at, updated_at) VALUES (?, 1, 1, 'done', "
                       "'/rec/talk.wav.{format}', ?, 1, 1)",
                       (f"/rec/{name}", '{"backend": "aimlapi", "model": "m"}'))
        db.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    s = SqliteStore(path)
    older, newer = get(s, "/rec/talk.wav.mp3"), get(s, "/rec/talk.wav")
    assert (older.output_key, newer.output_key) == ("/rec/talk.wav.{format}", None)
    assert older.request_key == Plan("aimlapi", "m").reuse_key()
    (again,) = s.admit([offer("/rec/talk.wav", size=2, mtime=2,
                              keys=("/rec/talk.wav.{format}", "/rec/talk.wav.2.{format}"))],
                       5.0)
    assert again.output_key == "/rec/talk.wav.2.{format}"
    s.close()
    with sqlite3.connect(path) as db, pytest.raises(sqlite3.IntegrityError):
        db.execute("UPDATE jobs SET output_key='/rec/talk.wav.{format}' WHERE "
                   "path='/rec/talk.wav'")


# --- done results kept compact ---------------------------------------------------------------

GOLDEN = Path(__file__).parent / "golden"


def thousand_words(seed: int) -> dict[str, Any]:
    """A Deepgram-shaped answer of 1,000 words with times in 10 ms steps, as the service
    sends them: the shape whose size issue 24 is about."""
    vocab = ("alpha", "bravo", "meeting", "budget", "quarter", "customer", "review", "über")
    words, t = [], 0.0
    for k in range(1000):
        w = vocab[(seed * 7 + k * 3 + k // 5) % len(vocab)]
        shown = w.capitalize() if k % 12 == 0 else w + ("." if k % 12 == 11 else "")
        start, end = round(t, 2), round(t + 0.31, 2)
        words.append({"word": w, "start": start, "end": end,
                      "confidence": round(0.9 + (k % 10) / 100, 4), "punctuated_word": shown})
        t = end + 0.05
    alt = {"transcript": " ".join(w["punctuated_word"] for w in words), "confidence": 0.97,
           "words": words}
    return {"metadata": {"request_id": f"req-{seed}", "duration": round(t, 2), "channels": 1},
            "results": {"channels": [{"alternatives": [alt], "detected_language": "en"}]}}


ODD = {
    "marker key in the data": {"\u0000": "c", "k": ["a"], "v": [[1, 2]]},
    "negative zero and whole floats": {"t": [-0.0, 0.0, 1.0, 2.5], "n": [1, 2.0, True, None]},
    "transcript not from its words": {"transcript": "other", "words": [
        {"punctuated_word": "a"}, {"punctuated_word": "b"}]},
    "dicts with keys in another order": {"w": [{"a": 1, "b": 2}, {"b": 2, "a": 1}]},
    "empty and unicode": {"text": "naïve 日本語 \U0001f600", "segments": [], "x": {}},
}


def stored(store: Store, path: str) -> str:
    with store._read() as x:  # type: ignore[attr-defined]
        (text,) = x.execute(store.dialect.q("SELECT result FROM jobs WHERE path=?"),  # type: ignore[attr-defined]
                            (path,)).fetchone()
    return str(text)


def finish_with(store: Store, path: str, gen: str, result: dict[str, Any],
                done: bool = True) -> Job:
    submitted(store, path, gen)
    claimed = next(j for j in store.claim_poll(ME, 101.0, LEASE, 10, [], ["aimlapi"])
                   if j.path == path)
    got = store.set_fetched(claimed, result, 102.0, 2.0)
    assert got is not None
    if done:
        assert store.mark_done(got, 103.0)
    return get(store, path)


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.glob("*.json")))
def test_a_golden_result_comes_back_exactly_for_renders_and_copies(
        store: Store, name: str) -> None:
    result = json.loads((GOLDEN / name).read_text())
    done = finish_with(store, A, "gen-A", result)
    assert json.dumps(done.result) == json.dumps(result)  # keys, order and types alike
    # A copy of the same bytes takes it ...
    with store._tx() as x:  # type: ignore[attr-defined]
        x.execute(store.dialect.q("UPDATE jobs SET sha256='abc' WHERE path=?"), (A,))  # type: ignore[attr-defined]
    admitted(store, B)
    job = store.claim_submit(ME, 110.0, LEASE, ["aimlapi"])
    donor = store.find_result("abc", "aimlapi", -1)
    assert job is not None and donor is not None
    copy = store.adopt(job, donor, "abc", 111.0)
    assert copy is not None and json.dumps(copy.result) == json.dumps(result)
    # ... and ``retry --render`` renders it again from the row.
    assert store.mark_failed(copy, "cannot render transcript", 112.0)
    assert store.rerender(113.0) == 1
    (again,) = store.claim_finish(ME, 113.0, LEASE, 10)
    assert again.path == B and json.dumps(again.result) == json.dumps(result)


def test_a_thousand_word_result_is_kept_in_a_fifteenth_of_its_json(store: Store) -> None:
    result = thousand_words(1)
    done = finish_with(store, A, "gen-A", result)
    assert json.dumps(done.result) == json.dumps(result)
    size = len(json.dumps(result, separators=(",", ":")))
    assert len(stored(store, A)) < size / 15, (len(stored(store, A)), size)


@pytest.mark.parametrize("name", sorted(ODD))
def test_a_result_the_compact_form_cannot_carry_is_kept_whole(store: Store, name: str) -> None:
    done = finish_with(store, A, "gen-A", ODD[name])
    assert json.dumps(done.result) == json.dumps(ODD[name])


@pytest.mark.parametrize("form", ["zlib", "plain"])
def test_results_stored_by_an_older_version_still_read(store: Store, form: str) -> None:
    result = json.loads((GOLDEN / "deepgram_speakers.json").read_text())
    finish_with(store, A, "gen-A", {"placeholder": True}, done=False)
    raw = json.dumps(result)
    old = ("z:" + base64.b64encode(zlib.compress(raw.encode(), 6)).decode("ascii")
           if form == "zlib" else raw)
    with store._tx() as x:  # type: ignore[attr-defined]
        x.execute(store.dialect.q("UPDATE jobs SET result=? WHERE path=?"), (old, A))  # type: ignore[attr-defined]
    assert get(store, A).result == result
    assert store.mark_failed(get(store, A), "cannot render transcript", 112.0)
    assert store.rerender(113.0) == 1
    (again,) = store.claim_finish(ME, 113.0, LEASE, 10)
    assert json.dumps(again.result) == json.dumps(result)


def test_sqlite_syncs_what_was_paid_for_and_not_the_bookkeeping(tmp_path: Path) -> None:
    """A claim and a done job commit without a sync of their own (a power cut may take
    them back; redoing them costs nothing); a task's id and its result are synced, and
    each sync carries the commits before it. Read from the statements SQLite ran."""
    store = SqliteStore(tmp_path / "state.db")
    seen: list[str] = []
    store._db.set_trace_callback(seen.append)  # type: ignore[attr-defined]

    def setting_at_commit_of(step: Any) -> str:
        seen.clear()
        step()
        sync = [s for s in seen if s.startswith("PRAGMA synchronous")]
        assert "COMMIT" in seen
        return "unchanged" if not sync else sync[-1].split("=")[1]

    admitted(store)
    assert setting_at_commit_of(lambda: store.claim_submit(ME, 100.0, LEASE,
                                                           ["aimlapi"])) == "NORMAL"
    job = store.claim_submit(ME, 100.0, LEASE, ["aimlapi"]) or get(store, A)
    assert setting_at_commit_of(lambda: store.set_pending(job, "gen-A", 100.0, 101.0,
                                                          None)) == "FULL"
    pending = get(store, A)
    assert setting_at_commit_of(lambda: store.claim_poll(ME, 101.0, LEASE, 10, [],
                                                         ["aimlapi"])) == "NORMAL"
    assert setting_at_commit_of(lambda: store.set_fetched(
        get(store, A), {"text": "hi"}, 102.0, 2.0)) == "FULL"
    assert pending.generation_id == "gen-A"
    assert setting_at_commit_of(lambda: store.claim_finish(ME, 103.0, LEASE, 5)) == "NORMAL"
    assert setting_at_commit_of(lambda: store.mark_done(get(store, A), 104.0)) == "unchanged"
    assert get(store, A).state is State.DONE
    store.close()


def test_postgres_waits_for_the_log_flush_only_for_what_was_paid_for() -> None:
    require_pg()
    from sttwatch.store.postgres import PostgresStore
    schema = new_schema()
    s = PostgresStore(PG_URL, schema=schema)
    try:
        with s._tx(durable=False) as x:
            assert x.execute("SHOW synchronous_commit").fetchone()[0] == "off"
        with s._tx() as x:
            assert x.execute("SHOW synchronous_commit").fetchone()[0] == "on"
        with s._tx(durable=False) as x:  # SET LOCAL: the next transaction is lazy again
            assert x.execute("SHOW synchronous_commit").fetchone()[0] == "off"
    finally:
        s.drop_schema()
        s.close()
