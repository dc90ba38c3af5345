#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# usage: header_warnings.sh SOURCE_ROOT CXX [CXX_ARGS...]
#
# The headers under a consumer's strictest warnings, with CXX (run once per
# compiler): -std=c++20 -Wall -Wextra -Wpedantic -Wshadow -Wconversion
# -Wsign-conversion -Wold-style-cast -Wnon-virtual-dtor -Werror
# -fsyntax-only, over one TU per public header (include/forksafe/*.hpp,
# generated in a temporary directory and including only that header), over
# examples/*.cpp and tests/consumers/app.cpp (which instantiate the
# templates), and over the umbrella header with -std=c++23 (-std=c++2b for a
# compiler that does not know c++23 yet: clang++ 14). Any warning fails.
# Negative control: a temporary header whose block declares a variable that
# shadows a parameter, compiled the same way, must fail with -Wshadow.
# TUs compile two at a time (xargs -P2).
# Prints "[release] 1 passed, 0 failed" or "[release] 0 passed, 1 failed"
# (summed by tools/count_results.py) and exits 0 or 1 accordingly. Set
# KEEP_TMP=1 to keep the temporary directory (the TUs, each one's output).
# shellcheck disable=SC2317 # the step functions are called from the subshell
set -uo pipefail
# shellcheck source=tests/release/common.sh
source "$(dirname "$0")/common.sh"
release_begin "SOURCE_ROOT CXX [CXX_ARGS...]" 2 "$@"
shift
printf '%s\n' "$@" >"$tmp/cxx" # the compiler command, one word a line (read back by compile_one)

# compile_one INCLUDE_ROOT STD TU: compiles TU with every warning flag;
# writes its output to $tmp/out/NAME.log and its exit status to NAME.rc.
compile_one() {
  local include=$1 std=$2 tu=$3 name cxx rc=0
  mapfile -t cxx <"$tmp/cxx"
  name=$(basename "$(dirname "$tu")")_$(basename "$tu" .cpp)_${std#-std=}
  "${cxx[@]}" "$std" -I"$include" -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion \
    -Wold-style-cast -Wnon-virtual-dtor -Werror -fsyntax-only "$tu" >"$tmp/out/$name.log" 2>&1 || rc=$?
  echo $rc >"$tmp/out/$name.rc"
}
# compile_line "STD<tab>TU": compile_one with the source's headers.
compile_line() {
  compile_one "$src/include" "${1%%$'\t'*}" "${1#*$'\t'}"
}
export -f compile_one compile_line
export src tmp

steps() {
  local cxx std23=-std=c++23 count rc
  mapfile -t cxx <"$tmp/cxx"
  "${cxx[@]}" --version | head -1
  mkdir -p "$tmp/out"
  header_tus "$tmp/tu"
  printf 'int main() {}\n' >"$tmp/empty.cpp"
  "${cxx[@]}" "$std23" -fsyntax-only "$tmp/empty.cpp" || std23=-std=c++2b
  {
    printf -- '-std=c++20\t%s\n' "$tmp"/tu/*.cpp "$src"/examples/*.cpp "$src/tests/consumers/app.cpp"
    printf -- '%s\t%s\n' "$std23" "$tmp/tu/forksafe.cpp"
  } >"$tmp/tus"
  count=$(wc -l <"$tmp/tus")
  [ "$count" -gt 10 ] # every public header, the examples, the consumer's app
  # shellcheck disable=SC2016 # expanded by the bash that xargs runs
  xargs -P2 -n1 -d '\n' bash -c 'compile_line "$1"' _ <"$tmp/tus"
  [ "$(find "$tmp/out" -name '*.rc' | wc -l)" -eq "$count" ] # each ran
  : >"$tmp/verdict"
  for rc in "$tmp"/out/*.rc; do
    if [ "$(cat "$rc")" -ne 0 ] || [ -s "${rc%.rc}.log" ]; then
      { echo "$(basename "$rc" .rc): status $(cat "$rc")"; sed 's/^/  /' "${rc%.rc}.log"; } >>"$tmp/verdict"
    fi
  done
  cat "$tmp/verdict" # after the loop's trace, so the log's tail shows it
  [ ! -s "$tmp/verdict" ]
  echo "header warnings: $count TUs without a warning (${std23#-std=} for the umbrella header too)"

  # The negative control: the same flags must reject a header's shadowing.
  control_tu $'inline int twice(int x) {\n  int r = x;\n  {\n    int x = r;\n    r += x;\n  }\n  return r;\n}'
  compile_one "$tmp/control/include" -std=c++20 "$tmp/control/control.cpp"
  if [ "$(cat "$tmp/out/control_control_c++20.rc")" -eq 0 ]; then
    echo "negative control: a header with a shadowing declaration compiled"
    return 1
  fi
  grep -q 'control.hpp:5:.*shadow' "$tmp/out/control_control_c++20.log"
  echo "negative control: the header with a shadowing declaration failed (-Wshadow), as it must"
}

release_end "header-warnings ($*)" "^header warnings:\|^negative control:"
