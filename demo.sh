#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs forksafe's demo: the fork-while-locked deadlock caught, and each
# component preventing it; then one small example program per component
# (examples/*.cpp), each with a line saying what it shows. Installs missing
# build dependencies with apt-get first. Exits non-zero if an example failed.
set -euo pipefail
cd "$(dirname "$0")"
source tools/deps.sh
ensure_deps
mkdir -p build
configure_and_build build/demo g++ -Dtests=disabled -Dbenchmarks=disabled -Dexamples=enabled -Dbuildtype=release
echo
build/demo/examples/demo

status=0
# example NAME WHAT: says what examples/NAME.cpp shows, runs it, notes a failure.
example() {
  echo "==> examples/$1.cpp: $2"
  "build/demo/examples/$1" || { echo "    examples/$1 FAILED (exit code $?)"; status=1; }
  echo
}
echo "Then one small program per component (examples/; CI runs each as a test):"
echo
example atfork_registry \
  "two libraries guard their own locks with guard() against a thread taking A then B; a removed handler stops running"
example fork_safe_mutex \
  "children lock a mutex a thread is busy with (quiesce), meet a poisoned one, use a condition variable"
example fork_call \
  "a struct back from a child; a crash, a throw and a timeout, each reported as a child_error"
example process_pool \
  "two pre-forked workers run 8 tasks; the one that throws fails alone, the others return values"
example nested_pool \
  "a pool of thread pools: each task runs an inner thread pool and returns a list of strings, not futures"
if [ -x build/demo/examples/doctest_death_tests ]; then # built where doctest is installed
  example doctest_death_tests \
    "death, exit, signal and hang tests for doctest, while a logging thread holds its lock; an isolated test case"
fi
exit $status
