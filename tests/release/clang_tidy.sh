#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# usage: clang_tidy.sh SOURCE_ROOT
#
# The headers under clang-tidy, with the tree's .clang-tidy (bugprone-*,
# performance-*, modernize-*, less what it disables and says why; warnings
# are errors). The TUs: one per public header (include/forksafe/*.hpp),
# generated in a temporary directory and including only that header, and
# examples/*.cpp, which instantiate the templates. Only diagnostics in
# SOURCE_ROOT/include/forksafe count (an example's own lines are not
# judged); one there fails, and so does a TU that does not compile or a
# clang-tidy that crashes. Negative control: the same invocation over a
# temporary include/forksafe/ header that compares a pointer with 0
# (modernize-use-nullptr) must report it. TUs run two at a time (xargs -P2).
# CLANG_TIDY names the clang-tidy to run (default: clang-tidy). The
# .clang-tidy is written for clang-tidy 14, Debian 12's: other versions have
# other checks and misjudge other lines, so they skip (exit 77) rather than
# judge, as tools/format.sh does for clang-format.
# Prints "[release] 1 passed, 0 failed" or "[release] 0 passed, 1 failed"
# (summed by tools/count_results.py) and exits 0 or 1 accordingly. Set
# KEEP_TMP=1 to keep the temporary directory (the TUs, each one's output).
# shellcheck disable=SC2317 # the step functions are called from the subshell
set -uo pipefail
# shellcheck source=tests/release/common.sh
source "$(dirname "$0")/common.sh"
release_begin SOURCE_ROOT 1 "$@"
clang_tidy=${CLANG_TIDY:-clang-tidy}
major=$("$clang_tidy" --version 2>/dev/null | sed -n 's/.*LLVM version \([0-9]*\).*/\1/p' | head -1)
if [ "$major" != "14" ]; then
  echo "release clang-tidy: $clang_tidy is not clang-tidy 14 (${major:-not found}); not judged"
  exit 77
fi

# A string as a regex matching only itself (for --header-filter).
regex_quote() {
  printf '%s' "$1" | sed 's/[][\.*^$+?(){}|]/\\&/g'
}

# tidy_one INCLUDE_ROOT TU: runs clang-tidy on TU, judging only the headers
# in INCLUDE_ROOT/forksafe; writes its output to $tmp/out/NAME.log and its
# exit status to NAME.rc.
tidy_one() {
  local include=$1 tu=$2 name rc=0
  name=$(basename "$(dirname "$tu")")_$(basename "$tu" .cpp)
  "$clang_tidy" --quiet --config-file="$src/.clang-tidy" \
    --header-filter="^$(regex_quote "$include/forksafe/")" \
    "$tu" -- -std=c++20 -I"$include" -pthread >"$tmp/out/$name.log" 2>&1 || rc=$?
  echo $rc >"$tmp/out/$name.rc"
}
export -f tidy_one regex_quote
export src clang_tidy tmp

# judge INCLUDE_ROOT LOG...: prints what counts against the headers in
# INCLUDE_ROOT/forksafe (their diagnostics; a TU that did not compile; a
# crash), after the trace of its loop, and fails if anything does.
judge() {
  local include=$1 log rc
  shift
  : >"$tmp/verdict"
  for log in "$@"; do
    rc=$(cat "${log%.log}.rc")
    {
      awk -v p="$include/forksafe/" 'index($0, p) == 1 && /:[0-9]+:[0-9]+: (warning|error): /' "$log"
      grep -E 'error: .*\[clang-diagnostic-error\]|^Error while processing|Stack dump' "$log" || true
      if [ "$rc" -ge 128 ]; then echo "clang-tidy died (status $rc)"; fi
    } >"$log.counted"
    if [ -s "$log.counted" ]; then
      { echo "$(basename "$log" .log):"; sed 's/^/  /' "$log.counted"; } >>"$tmp/verdict"
    fi
  done
  cat "$tmp/verdict"
  [ ! -s "$tmp/verdict" ]
}

steps() {
  "$clang_tidy" --version
  [ -f "$src/.clang-tidy" ]
  mkdir -p "$tmp/out"
  header_tus "$tmp/tu"
  { printf '%s\n' "$tmp"/tu/*.cpp; printf '%s\n' "$src"/examples/*.cpp; } >"$tmp/tus"
  local count
  count=$(wc -l <"$tmp/tus")
  [ "$count" -gt 10 ] # every public header and the examples
  # shellcheck disable=SC2016 # expanded by the bash that xargs runs
  xargs -P2 -n1 -d '\n' bash -c 'tidy_one "$src/include" "$1"' _ <"$tmp/tus"
  [ "$(find "$tmp/out" -name '*.rc' | wc -l)" -eq "$count" ] # each ran
  judge "$src/include" "$tmp"/out/*.log
  echo "clang-tidy: $count TUs, no diagnostic in $src/include/forksafe"

  # The negative control: the same invocation must report a header's fault.
  control_tu 'inline bool is_null(const int* p) { return p == 0; }'
  tidy_one "$tmp/control/include" "$tmp/control/control.cpp"
  if judge "$tmp/control/include" "$tmp/out/control_control.log"; then
    echo "negative control: clang-tidy reported nothing in a header comparing a pointer with 0"
    return 1
  fi
  grep -q 'control.hpp:2:.*\[modernize-use-nullptr' "$tmp/out/control_control.log"
  echo "negative control: the header comparing a pointer with 0 was reported (modernize-use-nullptr), as it must"
}

release_end clang-tidy "^clang-tidy:\|^negative control:"
