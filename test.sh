#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds and runs forksafe's whole test suite: g++, clang++, and g++ under
# AddressSanitizer + UndefinedBehaviorSanitizer, each with -Werror. Installs
# missing build dependencies with apt-get first. Ends with "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")"
source tools/deps.sh
ensure_deps

common=(-Dwerror=true -Dtests=enabled -Dexamples=enabled -Dbenchmarks=enabled)
mkdir -p build
configure_and_build build/gcc g++ "${common[@]}"
configure_and_build build/clang clang++ "${common[@]}"
configure_and_build build/asan g++ "${common[@]}" -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug

status=0
for dir in build/gcc build/clang build/asan; do
  echo "==> testing $dir"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    meson test -C "$dir" --print-errorlogs --num-processes 2 >"$dir.test.log" 2>&1 || { status=1; tail -80 "$dir.test.log"; }
done
python3 tools/count_results.py build/gcc build/clang build/asan
exit $status
