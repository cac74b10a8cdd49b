"""Peak memory of the AI/ML API client while it uploads a large recording.

For each size, a sparse file of that size is created (``truncate``: no disk space used) and a
child process runs ``AimlApiBackend.create`` on it against the fake service
(tests/fake_service.py, in this process; it reads large bodies in chunks and keeps none of
them). Reported per size: the child's peak RSS (the larger of ``VmHWM`` from its
``/proc/self/status`` and ``ru_maxrss`` from ``os.wait4``), the same for a 1 KB upload (the
interpreter and its imports), the upload's wall time and rate, against the goal of a peak
under 100 MB (issue 13). Holding the body in memory, as requests' ``files=`` does, would
show a peak of about twice the file's size.

Run:  .venv/bin/python bench/upload_memory.py [--sizes-mb 1024 2048] [--goal-mb 100]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


@dataclass(frozen=True)
class Upload:
    size: int
    peak_bytes: int  # the child's peak resident memory
    seconds: float  # the create call, upload included
    body_bytes: int  # what the fake received


def child(base_url: str, path: str) -> None:
    """Upload ``path`` once, then print the peak RSS as this process saw it."""
    from sttwatch.backends import Request
    from sttwatch.backends.aimlapi import AimlApiBackend

    backend = AimlApiBackend(base_url, "bench-key", "#g1_whisper-tiny", read_timeout=60)
    start = time.monotonic()
    backend.create(Request(job_id=1, model="#g1_whisper-tiny", path=Path(path)))
    seconds = time.monotonic() - start
    backend.close()
    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    print(json.dumps({"vmhwm_kb": hwm, "seconds": seconds}), flush=True)


def sparse_file(folder: Path, size: int) -> Path:
    path = folder / f"upload-{size}.wav"
    with path.open("wb") as fh:
        fh.write(b"RIFF")
        fh.truncate(size)
    return path


def measure(base_url: str, path: Path) -> tuple[int, float]:
    """Run the child on ``path``: (peak RSS in bytes, seconds of the create call)."""
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child",
                             base_url, str(path)], stdout=subprocess.PIPE,
                            cwd=ROOT)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, code, _usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(code)
    if proc.returncode != 0:
        raise RuntimeError(f"upload child exited {proc.returncode}")
    report = json.loads(out.decode().strip().splitlines()[-1])
    # The child's own high-water mark after exec: wait4's ru_maxrss also counts the moment
    # between fork and exec, when the child still shares its parent's pages (a test run's
    # pytest process of 100 MB and more would be measured, not the upload).
    peak_kb = int(report["vmhwm_kb"])
    return peak_kb * 1024, float(report["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--goal-mb", type=float, default=100.0)
    parser.add_argument("--child", nargs=2, metavar=("BASE_URL", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_service import FakeConfig, FakeService

    with FakeService(FakeConfig(key="bench-key")) as svc, \
            tempfile.TemporaryDirectory() as tmp:
        base_peak, _ = measure(svc.base_url, sparse_file(Path(tmp), 1024))
        print(f"baseline (1 KB upload): peak RSS {base_peak / MB:.1f} MB")
        print(f"{'size':>8} {'peak RSS':>10} {'over base':>10} {'seconds':>8} {'MB/s':>7}"
              f" {'goal':>8}  verdict")
        for size_mb in args.sizes_mb:
            path = sparse_file(Path(tmp), size_mb * MB)
            before = len(svc.creates())
            peak, seconds = measure(svc.base_url, path)
            path.unlink()
            (record,) = svc.creates()[before:]
            assert record.body_bytes >= size_mb * MB, "the fake did not get the whole body"
            verdict = "ok" if peak < args.goal_mb * MB else "OVER"
            print(f"{size_mb:>6}MB {peak / MB:>8.1f}MB {(peak - base_peak) / MB:>8.1f}MB "
                  f"{seconds:>8.1f} {size_mb / seconds:>7.0f} {args.goal_mb:>6.0f}MB  {verdict}")


if __name__ == "__main__":
    main()
