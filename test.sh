#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds and runs forksafe's whole test suite: g++, clang++, g++ under
# AddressSanitizer + UndefinedBehaviorSanitizer, clang++ under
# ThreadSanitizer, and clang++ with libc++, each with -Werror; build/gcc also
# runs the consumer tests (tests/consumers/). Installs missing build
# dependencies with apt-get first. Ends with "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")"
source tools/deps.sh
ensure_deps

common=(-Dwerror=true -Dtests=enabled -Dexamples=enabled)
# The benchmarks are built by both compilers (their code must stay warning-
# clean) and run, as a smoke run, in build/gcc only; the sanitizer and libc++
# builds, which would never run them, skip building them.
mkdir -p build
configure_and_build build/gcc g++ "${common[@]}" -Dbenchmarks=enabled
configure_and_build build/clang clang++ "${common[@]}" -Dbenchmarks=enabled
configure_and_build build/asan g++ "${common[@]}" -Dbenchmarks=disabled -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
configure_and_build build/tsan clang++ "${common[@]}" -Dbenchmarks=disabled -Db_sanitize=thread -Db_lundef=false
configure_and_build build/libcxx clang++ "${common[@]}" -Dbenchmarks=disabled -Dcpp_args=-stdlib=libc++ -Dcpp_link_args=-stdlib=libc++

status=0
configs=(build/gcc build/clang build/asan build/tsan build/libcxx)
# TSan: a forked child of a multithreaded process must go on (die_after_fork=0);
# its report of the parent's other threads as leaked is false there (they do
# not exist in the child), so thread-leak reports are off. Races are judged.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export TSAN_OPTIONS=die_after_fork=0:report_thread_leaks=0:halt_on_error=1:abort_on_error=1
for dir in "${configs[@]}"; do
  echo "==> testing $dir"
  meson test -C "$dir" --print-errorlogs --num-processes 2 >"$dir.test.log" 2>&1 || { status=1; tail -80 "$dir.test.log"; }
done
# The benchmarks, shrunk (--smoke): proves they build and run; their figures
# come from full runs by hand (see docs/benchmarks.md). Own log base: otherwise it would
# overwrite build/gcc's testlog.json, which count_results.py reads.
echo "==> benchmark smoke run (build/gcc)"
meson test -C build/gcc --benchmark --logbase benchlog >build/gcc.bench.log 2>&1 || { status=1; tail -40 build/gcc.bench.log; }
python3 tools/count_results.py "${configs[@]}"
exit $status
