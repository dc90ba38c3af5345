#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The Python anchor: what Python pays per tiny task in another process.

Times, per task, with python3:
  - concurrent.futures.ProcessPoolExecutor, warm pool of one worker,
    submit(tiny).result() (what the process-pool program used; the pool is
    started and used before timing, so process start-up is not counted);
  - os.fork per task: pipe, fork, the child writes an 8-byte result and
    calls os._exit, the parent reads it and reaps with waitpid (what
    fork_call does, in Python).
Prints median / p10 / p90 in microseconds, in the table format of the C++
benchmarks (bench/bench.hpp), so bench_fork_call's rows compare directly.
--smoke: a few samples, to prove the script runs.
"""
import concurrent.futures
import os
import struct
import sys
import time


def tiny():
    return 42


def summarize(ns):
    ns = sorted(ns)
    at = lambda q: ns[int(q * (len(ns) - 1))]
    return at(0.5), at(0.1), at(0.9), len(ns)


def row(name, stats, anchor=None):
    median, p10, p90, n = stats
    line = (f"  {name:<44} median {median / 1e3:10.3f} us  "
            f"(p10 {p10 / 1e3:10.3f}, p90 {p90 / 1e3:10.3f}, n={n})")
    if anchor is not None:
        line += f"  ratio {median / anchor[0]:.3f}"
    print(line)


def pool_task(pool):
    if pool.submit(tiny).result() != 42:
        raise SystemExit("pool returned a wrong value")


def fork_task():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, struct.pack("q", tiny()))
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while len(data) < 8:
        chunk = os.read(r, 8 - len(data))
        if not chunk:
            raise SystemExit("child died without a result")
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    if struct.unpack("q", data)[0] != 42:
        raise SystemExit("fork returned a wrong value")


def timed(fn, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out.append(time.perf_counter_ns() - t0)
    return out


def main():
    smoke = "--smoke" in sys.argv[1:]
    rounds, per_round = (2, 3) if smoke else (40, 50)
    pool_ns, fork_ns = [], []
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as pool:
        for _ in range(50):  # warm: the worker is started and has run tasks
            pool_task(pool)
        for _ in range(rounds):  # interleaved, like the C++ benchmarks
            pool_ns += timed(lambda: pool_task(pool), per_round)
            fork_ns += timed(fork_task, per_round)
    print(f"\nPython {sys.version.split()[0]}: a tiny task in another process, per task (µs)")
    pool_stats = summarize(pool_ns)
    row("ProcessPoolExecutor, warm pool, tiny task", pool_stats)
    row("os.fork + pipe + waitpid per task", summarize(fork_ns), pool_stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
