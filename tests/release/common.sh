# SPDX-License-Identifier: MIT
#
# Sourced by the release checks that judge the headers TU by TU
# (clang_tidy.sh, header_warnings.sh): what each does around its own steps.
#
#   release_begin USAGE MIN_ARGS "$@"   checks the argument count (else prints
#       "usage: SCRIPT USAGE" and exits 2), sets src to SOURCE_ROOT (the first
#       argument, made absolute) and makes the temporary directory $tmp,
#       removed on exit unless KEEP_TMP=1 is set.
#   header_tus DIR   writes DIR/NAME.cpp for each public header
#       (include/forksafe/NAME.hpp): a TU that includes only that header.
#   control_tu TEXT   writes the negative control's header,
#       $tmp/control/include/forksafe/control.hpp (#pragma once, then TEXT),
#       and $tmp/control/control.cpp, a TU that includes it.
#   release_end LABEL SUMMARY   runs the caller's `steps` with set -e -x in a
#       subshell (not inside an if, which would turn set -e off), logging to
#       $tmp/log. Passed: prints the log's lines that match the grep pattern
#       SUMMARY and "[release] 1 passed, 0 failed", exits 0. Failed: the
#       log's last 80 lines and "[release] 0 passed, 1 failed", exits 1.
#       (tools/count_results.py sums the count lines.)
# shellcheck shell=bash

release_begin() {
  local usage=$1 min=$2
  shift 2
  if [ $# -lt "$min" ]; then
    echo "usage: $(basename "$0") $usage" >&2
    exit 2
  fi
  src=$(cd "$1" && pwd) || exit 2
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/forksafe-$(basename "$0" .sh).XXXXXX") || exit 2
  trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"' EXIT
}

header_tus() {
  local h
  mkdir -p "$1"
  for h in "$src"/include/forksafe/*.hpp; do
    printf '#include <forksafe/%s>\n' "$(basename "$h")" >"$1/$(basename "$h" .hpp).cpp"
  done
}

control_tu() {
  mkdir -p "$tmp/control/include/forksafe"
  printf '#pragma once\n%s\n' "$1" >"$tmp/control/include/forksafe/control.hpp"
  printf '#include <forksafe/control.hpp>\n' >"$tmp/control/control.cpp"
}

release_end() {
  local label=$1 summary=$2 start=$SECONDS status
  ( set -e -x; steps ) >"$tmp/log" 2>&1
  status=$?
  if [ $status -eq 0 ]; then
    grep -- "$summary" "$tmp/log"
    echo "release $label: passed in $((SECONDS - start)) s"
    echo "[release] 1 passed, 0 failed"
    exit 0
  fi
  tail -n 80 "$tmp/log"
  echo "release $label: failed (status $status)"
  echo "[release] 0 passed, 1 failed"
  exit 1
}
