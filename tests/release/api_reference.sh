#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# usage: api_reference.sh SOURCE_ROOT
#
# The API reference check. In a fresh temporary directory, runs doxygen with
# SOURCE_ROOT's Doxyfile (the version passed in from meson.build's project()
# line, which is the only place it is written) and fails if doxygen exits
# non-zero or prints anything: every public entity must be documented and
# every comment must parse. Then checks that index.html and the pages of the
# main public names exist, and that no page of a forksafe::detail entity or a
# detail/ header was generated. Two negative controls, so that each check can
# fail: a copy of the tree with one public member's `///` comment removed
# must make doxygen fail, and a run that does not exclude forksafe::detail
# must make the detail check fail.
# Prints "[release] 1 passed, 0 failed" or "[release] 0 passed, 1 failed"
# (summed by tools/count_results.py) and exits 0 or 1 accordingly. Set
# KEEP_TMP=1 to keep the temporary directory (the HTML and the log).
# shellcheck disable=SC2317 # the step functions are called from the subshell
set -uo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 SOURCE_ROOT" >&2
  exit 2
fi
src=$(cd "$1" && pwd) || exit 2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/forksafe-api.XXXXXX") || exit 2
trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"' EXIT

# The version: the first `version: 'X.Y.Z'` line of meson.build's project()
# call (as tools/check_version.py reads it).
project_version() {
  sed -n "/^project(/,\$ s/^[[:space:]]*version: *'\([^']*\)'.*/\1/p" "$src/meson.build" | head -n 1
}

# Runs doxygen in $1 (a tree with Doxyfile, include/ and docs/), writing into
# $2; extra Doxyfile lines from $3. Its output (warnings) goes to $2.out.
run_doxygen() {
  local root=$1 out=$2 extra=${3:-}
  mkdir -p "$out"
  { cat "$root/Doxyfile"; echo "PROJECT_NUMBER=$version"; echo "OUTPUT_DIRECTORY=$out"; echo "$extra"; } |
    (cd "$root" && doxygen - >"$out.out" 2>&1)
}

# Fails when $1/api (HTML_OUTPUT) holds a page of a forksafe::detail entity
# (class, namespace, concept: forksafe_1_1detail in doxygen's file names; a
# title naming forksafe::detail) or of a detail/ header or directory.
no_detail_pages() {
  local html=$1/api found h
  found=$(
    cd "$html" || exit 1
    find . -name '*_1_1detail_1_1*' -o -name '*_1_1detail.*' -o -name '*_1_1detail-*'
    grep -l '<title>.*\(forksafe::detail\|detail Directory Reference\|forksafe/detail/\)' ./*.html
    for h in "$src"/include/forksafe/detail/*.hpp; do
      h=$(basename "$h" .hpp)
      find . -name "${h//_/__}_8hpp*" # doxygen doubles '_' and writes '.' as _8
    done
    true
  )
  if [ -n "$found" ]; then
    echo "api_reference: $(wc -l <<<"$found") pages of detail entities or headers, the first: $(head -n 1 <<<"$found")"
    return 1
  fi
}

# The reference itself: no warning, the main pages there, nothing of detail.
reference() {
  version=$(project_version)
  [[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "no version in meson.build's project(): '$version'"; return 1; }
  doxygen --version
  local out=$tmp/api
  if ! run_doxygen "$src" "$out"; then
    cat "$out.out"
    echo "api_reference: doxygen failed"
    return 1
  fi
  if [ -s "$out.out" ]; then
    cat "$out.out"
    echo "api_reference: doxygen printed $(wc -l <"$out.out") lines (warnings); every one must be fixed"
    return 1
  fi
  # The pages of the main public names (ls fails naming any that is missing).
  local html=$out/api # HTML_OUTPUT
  local pages=(index.html namespaceforksafe.html
    classforksafe_1_1atfork__registry.html classforksafe_1_1atfork__handle.html
    structforksafe_1_1atfork__handlers.html structforksafe_1_1fork__report.html
    classforksafe_1_1basic__fork__safe__mutex.html classforksafe_1_1basic__fork__safe__shared__mutex.html
    classforksafe_1_1fork__safe__condition__variable.html classforksafe_1_1fork__poisoned.html
    structforksafe_1_1fork__options.html classforksafe_1_1process__result.html
    classforksafe_1_1child__error.html classforksafe_1_1process__pool.html
    structforksafe_1_1pool__options.html conceptforksafe_1_1trivially__serializable.html)
  (cd "$html" && ls "${pages[@]}" >/dev/null)
  grep -q "<title>forksafe: forksafe API reference</title>" "$html/index.html"
  grep -q "id=\"projectnumber\">[^<]*$version<" "$html/index.html" # PROJECT_NUMBER reached the page
  # The namespace-level names, listed on the namespace page: both fork_call
  # overloads, fork_generation(), the fork_safe_mutex aliases.
  [ "$(grep -o '>fork_call</[ab]> (' "$html/namespaceforksafe.html" | wc -l)" -eq 2 ]
  grep -q '>fork_generation</[ab]> (' "$html/namespaceforksafe.html"
  grep -q '>fork_safe_mutex</[ab]> =' "$html/namespaceforksafe.html"
  grep -q '>fork_safe_shared_mutex</[ab]> =' "$html/namespaceforksafe.html"
  no_detail_pages "$out"
  echo "api_reference: doxygen $(doxygen --version), forksafe $version: no warning," \
    "$(find "$html" -name '*.html' | wc -l) pages, none of forksafe::detail"
}

# Negative controls: the checks above must be able to fail.
negative_controls() {
  # 1. One public member's comment removed (child_error::exit_code(), the
  #    whole /// block before it) in a copy of the tree: doxygen must fail
  #    and name it.
  local copy=$tmp/undocumented
  mkdir -p "$copy/docs"
  cp "$src/Doxyfile" "$copy/"
  cp "$src/docs/api_mainpage.md" "$copy/docs/"
  cp -r "$src/include" "$copy/"
  local header=$copy/include/forksafe/child_error.hpp
  awk '/^ *\/\/\// { held = held $0 "\n"; next }
       /int exit_code\(\) const noexcept/ { held = "" }
       { printf "%s", held; held = ""; print }' "$src/include/forksafe/child_error.hpp" >"$header"
  if diff -q "$src/include/forksafe/child_error.hpp" "$header" >/dev/null; then
    echo "api_reference: negative control: no comment before exit_code() to remove"
    return 1
  fi
  if run_doxygen "$copy" "$copy/api"; then
    sed 's/^/(negative control) /' "$copy/api.out"
    echo "api_reference: negative control: doxygen passed with exit_code() undocumented"
    return 1
  fi
  grep "exit_code" "$copy/api.out" | sed 's/^/(negative control) /'
  grep -q "exit_code.*not documented" "$copy/api.out"
  # 2. forksafe::detail not excluded: the detail check must fail.
  run_doxygen "$src" "$tmp/with_detail" "EXCLUDE_SYMBOLS = FORKSAFE_DETAIL_*
WARN_AS_ERROR = NO" || true
  if no_detail_pages "$tmp/with_detail" >/dev/null; then
    echo "api_reference: negative control: forksafe::detail documented, yet no detail page was found"
    return 1
  fi
  echo "(negative control) forksafe::detail not excluded: its pages were found, as they must"
}

# The steps run with set -e in a subshell (not inside an if, which would turn
# set -e off); the log is shown only when they fail.
start=$SECONDS
(
  set -e -x
  reference
  negative_controls
) >"$tmp/log" 2>&1
status=$?
if [ $status -eq 0 ]; then
  grep "^api_reference:\|^(negative control)" "$tmp/log"
  echo "api_reference: checked in $((SECONDS - start)) s"
  echo "[release] 1 passed, 0 failed"
  exit 0
fi
tail -n 80 "$tmp/log"
echo "api_reference: failed (status $status)"
echo "[release] 0 passed, 1 failed"
exit 1
