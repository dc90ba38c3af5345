#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""What including forksafe costs a translation unit, against the standard
headers a threaded program includes anyway.

usage: bench/compile_time.py [--rounds N] [--smoke] [CXX [FLAGS...]]   (default: g++)

Each round compiles, with -std=c++20 -fsyntax-only and in interleaved order,
one file per public header (each including only that header), the umbrella
<forksafe/forksafe.hpp>, and the anchor: <thread>, <mutex> and <future>.
Prints per file the median compiler time (user + system CPU seconds of the
compiler, so a busy machine changes it less than wall time would), the
preprocessed line count, and the ratio to the anchor. Target: the umbrella
header at most 1.5x the anchor.
"""
import os
import resource
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ANCHOR = "<thread>, <mutex>, <future>"


def sources():
    public = sorted(f for f in os.listdir(f"{ROOT}/include/forksafe") if f.endswith(".hpp"))
    files = {ANCHOR: "#include <future>\n#include <mutex>\n#include <thread>\n"}
    for header in ["forksafe.hpp"] + [h for h in public if h != "forksafe.hpp"]:
        files[f"<forksafe/{header}>"] = f"#include <forksafe/{header}>\n"
    return files


def cpu_seconds(cmd):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv):
    rounds = 7
    if argv and argv[0] == "--smoke":
        rounds, argv = 1, argv[1:]
    if argv and argv[0] == "--rounds":
        rounds, argv = int(argv[1]), argv[2:]
    cxx = argv or ["g++"]
    flags = ["-std=c++20", f"-I{ROOT}/include", "-fsyntax-only"]
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for i, (name, text) in enumerate(sources().items()):
            paths[name] = f"{tmp}/tu{i}.cpp"
            with open(paths[name], "w") as f:
                f.write(text)
        lines = {}
        for name, path in paths.items():
            out = subprocess.run(cxx + flags[:-1] + ["-E", "-P", path], check=True, capture_output=True, text=True)
            lines[name] = sum(1 for line in out.stdout.splitlines() if line.strip())
        times = {name: [] for name in paths}
        for _ in range(rounds):
            for name, path in paths.items():
                times[name].append(cpu_seconds(cxx + flags + [path]))
    anchor = statistics.median(times[ANCHOR])
    print(f"{' '.join(cxx)}, {rounds} rounds, median compiler CPU time of -fsyntax-only")
    print(f"| includes | median | min-max | preprocessed lines | ratio to anchor | target |")
    print(f"|---|---|---|---|---|---|")
    for name, samples in times.items():
        median = statistics.median(samples)
        target = "≤ 1.5" if name == "<forksafe/forksafe.hpp>" else ""
        print(f"| {name} | {median:.2f} s | {min(samples):.2f}-{max(samples):.2f} s | {lines[name]:,} | "
              f"{median / anchor:.2f} | {target} |")


if __name__ == "__main__":
    main(sys.argv[1:])
