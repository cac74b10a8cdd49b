"""Search on a real-sized library: N transcripts of W words each (default 10,000 of 1,000)
stored as the daemon stores them (Deepgram-shaped results with word times, packed), then
indexed one by one through the same call the finisher makes. Prints, per store, against the
goals: the median time of a one-word and of a phrase query (the store's search and the
finding of the hits, as ``sttwatch search`` runs them, without the process start), the
size the index adds to the state, and the CPU time indexing takes per transcript.

The words follow Zipf's law over a vocabulary of everyday English (bench/corpus.py) and
invented rarer words (names, terms), so queries have the spread of hit counts real ones
have: a one-word query picks a word found in about 0.1 to 2% of the transcripts, a phrase
two consecutive words of a stored transcript.

Run:  python bench/search.py [--store sqlite|postgres|both] [--transcripts 10000]
      [--words 1000] [--queries 40]     (PostgreSQL: STTWATCH_TEST_PG, as for the tests)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from corpus import PARAGRAPHS  # noqa: E402

from sttwatch.search.entries import document_of_job  # noqa: E402
from sttwatch.search.hits import find_hits  # noqa: E402
from sttwatch.search.query import parse  # noqa: E402
from sttwatch.store import Plan  # noqa: E402
from sttwatch.store.packing import pack  # noqa: E402
from sttwatch.store.search import SearchSpec  # noqa: E402
from sttwatch.store.sql import SqlStore  # noqa: E402

GOAL_MS = 100.0
GOAL_SIZE = 0.30
SEARCH_TABLES = ("search_docs",)
MODEL = "#g1_nova-2"
SYLLABLES = ["ka", "lo", "mi", "ren", "sa", "tor", "vel", "dun", "bri", "hal", "pe", "zu",
             "mar", "ost", "qui", "fen", "gal", "ur", "nis", "tal"]


def vocabulary(rng: random.Random, rare: int) -> list[str]:
    common = list(dict.fromkeys(w.lower().strip(".,:;") for p in PARAGRAPHS for w in p.split()))
    made = {"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
            for _ in range(rare * 2)}
    return common + sorted(made - set(common))[:rare]


def transcript(rng: random.Random, vocab: list[str], cum: list[float], n: int) -> dict[str, Any]:
    """A result as the local engine and Deepgram give it: text and timed words."""
    picks = rng.choices(vocab, cum_weights=cum, k=n)
    words, t = [], 0.0
    for i, w in enumerate(picks):
        first = i % 12 == 0
        shown = (w.capitalize() if first else w) + ("." if i % 12 == 11 else "")
        d = 0.18 + 0.04 * len(w) / 3
        words.append({"word": w, "punctuated_word": shown, "start": round(t, 3),
                      "end": round(t + d, 3), "confidence": 0.95})
        t += d + (0.5 if i % 12 == 11 else 0.08)
    text = " ".join(x["punctuated_word"] for x in words)
    return {"metadata": {"duration": round(t, 3), "channels": 1, "models": [MODEL]},
            "results": {"channels": [{"alternatives": [{"transcript": text, "confidence": 0.95,
                                                        "words": words}]}]}}


def fill(store: SqlStore, n: int, words: int, seed: int) -> list[list[str]]:
    """N done jobs with their results, written in big transactions (a bench shortcut through
    the store's own transaction; the daemon writes them one at a time). Returns a sample of
    texts for picking phrases."""
    rng = random.Random(seed)
    vocab = vocabulary(rng, 20_000)
    cum = list(itertools.accumulate(1.0 / (r + 1) for r in range(len(vocab))))
    plan = json.dumps(Plan("aimlapi", MODEL, {}, ("txt",), "/library").to_json())
    sample: list[list[str]] = []
    for start in range(0, n, 500):
        rows = []
        for i in range(start, min(n, start + 500)):
            result = transcript(rng, vocab, cum, words)
            if i % 50 == 0:
                sample.append([w["word"] for w in
                               result["results"]["channels"][0]["alternatives"][0]["words"]])
            mtime = (1_700_000_000 + i * 3600) * 1_000_000_000
            rows.append((f"/library/{i // 100:03}/rec{i:05}.mp3", 10_000_000 + i, mtime,
                         pack(result)[0], plan))
        with store._tx() as x:
            for row in rows:
                store._x(x, "INSERT INTO jobs (path, size, mtime_ns, state, result, backend, "
                            "plan, created_at, updated_at, finished_at) VALUES (?, ?, ?, "
                            "'done', ?, 'aimlapi', ?, 1, 1, 1)", row)
    return sample


def index_all(store: SqlStore) -> tuple[list[float], list[float]]:
    """CPU seconds per transcript: reading it into cues, and the store's insert."""
    prepare, insert = [], []
    after = 0
    while batch := store.done_with_results(after, 200):
        for job in batch:
            after = job.id
            assert job.plan is not None
            c0 = time.process_time()
            doc = document_of_job(job, job.plan)
            c1 = time.process_time()
            store.index_transcript(doc)
            c2 = time.process_time()
            prepare.append(c1 - c0)
            insert.append(c2 - c1)
    return prepare, insert


def timed(store: SqlStore, text: str) -> tuple[float, int]:
    q = parse(text)
    t0 = time.perf_counter()
    hits = find_hits(store.search(SearchSpec(q.terms, q.speakers)), q, 20)
    return (time.perf_counter() - t0) * 1000, len(hits)


def doc_freq(sample: list[list[str]]) -> dict[str, int]:
    freq: dict[str, int] = {}
    for words in sample:
        for w in set(words):
            freq[w] = freq.get(w, 0) + 1
    return freq


def queries(sample: list[list[str]], n: int, rng: random.Random) -> tuple[list[str], list[str]]:
    freq = doc_freq(sample)
    mid = sorted(w for w, f in freq.items() if 0.001 * len(sample) <= f <= 0.02 * len(sample)
                 or f == 1)
    words = rng.sample(mid, min(n, len(mid)))
    phrases = []
    for _ in range(n):
        doc = rng.choice(sample)
        i = rng.randrange(len(doc) - 1)
        phrases.append(f'"{doc[i]} {doc[i + 1]}"')
    return words, phrases


def server_cpu(store: Any) -> float:
    """CPU seconds of the PostgreSQL backend serving this (one-thread) bench, when the
    server runs on this machine; 0 for SQLite, which runs in this process."""
    if not hasattr(store, "_pool"):
        return 0.0
    with store._pool.connection() as c:
        pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median_ms(store: SqlStore, texts: list[str]) -> tuple[float, float, int, float]:
    """Median and p90 wall ms, queries with hits, and the mean CPU ms a query (this process
    and the server's): wall times move with the machine's load, CPU much less."""
    for t in texts[:3]:
        timed(store, t)  # warm the caches, as a second search would find them
    c0, s0 = time.process_time(), server_cpu(store)
    runs = [timed(store, t) for t in texts]
    cpu = (time.process_time() - c0 + server_cpu(store) - s0) / len(texts) * 1000
    ms = sorted(r[0] for r in runs)
    return (statistics.median(ms), ms[int(0.9 * (len(ms) - 1))], sum(r[1] > 0 for r in runs),
            cpu)


def sqlite_size(store: Any) -> int:
    store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page, count, free = (store._db.execute(f"PRAGMA {p}").fetchone()[0]
                         for p in ("page_size", "page_count", "freelist_count"))
    return int(page * (count - free))


def pg_size(store: Any, tables: tuple[str, ...]) -> int:
    with store._tx() as x:
        total = 0
        for t in tables:
            total += int(x.execute("SELECT pg_total_relation_size(%s)", (t,)).fetchone()[0])
    return total


def pg_breakdown(store: Any) -> None:
    """Where PostgreSQL's bytes are, after VACUUM: each search table's heap, its TOAST
    (with the TOAST index) and each of its indexes."""
    with store._pool.connection() as x:  # autocommit: VACUUM runs outside a transaction
        x.execute("VACUUM ANALYZE")
        rows = x.execute(
            "SELECT c.relname, pg_relation_size(c.oid), pg_total_relation_size(c.oid) - "
            "pg_relation_size(c.oid) - pg_indexes_size(c.oid), pg_indexes_size(c.oid) "
            "FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace AND "
            "c.relkind = 'r' AND c.relname LIKE 'search%' ORDER BY 1").fetchall()
        for name, heap, toast, idx in rows:
            print(f"  {name}: heap {heap / 1e6:.1f} MB, TOAST {toast / 1e6:.1f} MB, "
                  f"indexes {idx / 1e6:.1f} MB")
        for name, size in x.execute(
                "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c WHERE "
                "c.relnamespace = current_schema()::regnamespace AND c.relkind = 'i' AND "
                "c.relname LIKE 'search%' ORDER BY 1").fetchall():
            print(f"    index {name}: {size / 1e6:.1f} MB")
        for col, avg in x.execute(
                "SELECT attname, avg_width FROM pg_stats WHERE schemaname = current_schema() "
                "AND tablename = 'search_docs' ORDER BY 1").fetchall():
            print(f"    search_docs.{col}: {avg} bytes a row on average (as stored)")


def scaled(store: Any, k: int, words: list[str], phrases: list[str]) -> None:
    """The same pages K times over, as a library K times larger indexes them (a shortcut:
    the copies share their jobs' results, which only the pages read need)."""
    with store._tx() as x:
        x.execute("INSERT INTO search_docs (path, page, job_id, model, recorded_at, speakers, "
                  "cues, pairs, sig, nwords) SELECT path || '#' || n, page, job_id, model, "
                  "recorded_at, speakers, cues, pairs, sig, nwords FROM search_docs, "
                  "generate_series(2, %s) n", (k,))
    with store._pool.connection() as x:
        x.execute("VACUUM ANALYZE search_docs")
    for label, texts in (("one-word", words), ("phrase", phrases)):
        med, p90, _found, cpu = median_ms(store, texts)
        print(f"[postgres] x{k} pages: {label} query, median (p90): {med:.1f} ms ({p90:.1f}), "
              f"CPU {cpu:.1f} ms a query")


def stores(kind: str, tmp: Path) -> Iterator[tuple[str, SqlStore, Callable[[], None]]]:
    if kind in ("sqlite", "both"):
        from sttwatch.store.sqlite import SqliteStore
        s = SqliteStore(tmp / "state.db")
        yield "sqlite", s, s.close
    if kind in ("postgres", "both"):
        import uuid

        from sttwatch.store.postgres import PostgresStore
        url = os.environ.get("STTWATCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
        pg = PostgresStore(url, schema=f"bench_{uuid.uuid4().hex[:8]}")

        def done() -> None:
            pg.drop_schema()
            pg.close()
        yield "postgres", pg, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--store", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--transcripts", type=int, default=10_000)
    parser.add_argument("--words", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--scale", type=int, default=0, metavar="K",
                        help="PostgreSQL: then copy the index's pages K-1 times over (under "
                             "other paths) and time the queries again: how the scan grows")
    parser.add_argument("--sizes", action="store_true",
                        help="PostgreSQL: each search table's and index's size after VACUUM")
    args = parser.parse_args()
    print(f"{args.transcripts} transcripts of {args.words} words, {args.queries} queries of "
          f"each kind; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="sttwatch-search-") as tmp:
        for name, store, close in stores(args.store, Path(tmp)):
            try:
                run(name, store, args)
            finally:
                close()


def run(name: str, store: SqlStore, args: argparse.Namespace) -> None:
    t0 = time.monotonic()
    sample = fill(store, args.transcripts, args.words, args.seed)
    jobs_tables = ("jobs", "meta", "daemons", "spend_ledger", "outbox")
    if name == "postgres":
        with store._tx() as x:
            x.execute("ANALYZE")
        before = pg_size(store, jobs_tables)
    else:
        before = sqlite_size(store)
    print(f"[{name}] stored in {time.monotonic() - t0:.0f} s; state {before / 1e6:.1f} MB")
    t1 = time.monotonic()
    prepare, insert = index_all(store)
    if name == "postgres":
        with store._tx() as x:
            x.execute("ANALYZE")
        after = before + pg_size(store, SEARCH_TABLES)
    else:
        after = sqlite_size(store)
    print(f"[{name}] indexed in {time.monotonic() - t1:.0f} s; state {after / 1e6:.1f} MB")
    if name == "postgres" and args.sizes:
        pg_breakdown(store)
    print(f"[{name}] load average {os.getloadavg()[0]:.1f} before the queries")
    rng = random.Random(args.seed + 1)
    words, phrases = queries(sample, args.queries, rng)
    rows = [("one-word query, median (p90)", *median_ms(store, words)),
            ("phrase query, median (p90)", *median_ms(store, phrases)),
            ("prefix query, median (p90)", *median_ms(store, [w[:4] + "*" for w in words])),
            ('a word in every transcript ("the"), median (p90)',
             *median_ms(store, ["the"] * 10))]
    for label, med, p90, found, cpu in rows:
        ok = "yes" if med < GOAL_MS else "no"
        print(f"[{name}] {label}: {med:.1f} ms ({p90:.1f}), goal < {GOAL_MS:.0f} ms: {ok}"
              f"  [{found} of the queries had hits; CPU {cpu:.1f} ms a query]")
    if name == "postgres" and args.scale > 1:
        scaled(store, args.scale, words, phrases)
    grow = (after - before) / before
    print(f"[{name}] index size: +{grow:.1%} of the state ({(after - before) / 1e6:.1f} MB), "
          f"goal <= {GOAL_SIZE:.0%}: {'yes' if grow <= GOAL_SIZE else 'no'}")
    print(f"[{name}] indexing CPU per {args.words}-word transcript: reading the cues "
          f"{statistics.median(prepare) * 1000:.1f} ms, the store's insert "
          f"{statistics.median(insert) * 1000:.1f} ms (medians)")


if __name__ == "__main__":
    main()
