#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# usage: run.sh KIND SOURCE_ROOT CXX [CXX_ARGS...]
#
# One consumer test. In a fresh temporary directory, takes forksafe from
# SOURCE_ROOT the way a user would, builds tests/consumers/app.cpp (fork_call
# and fork_safe_mutex) with -Wall -Wextra -Wpedantic -Werror and runs it; the
# program exits 0 only if fork_call's child returned the right value. KIND:
#   vendored                only include/forksafe copied; -I, -std=c++20 -pthread
#                           (plus a negative control: with std::mutex it must fail)
#   meson-subproject        subprojects/forksafe.wrap with [provide] (the README's)
#   pkg-config              meson install into a prefix; flags from pkg-config
#   cmake-find-package      cmake --install into a prefix; find_package(forksafe CONFIG REQUIRED)
#   cmake-add-subdirectory  add_subdirectory of the source tree
# Prints "[consumer] 1 passed, 0 failed" or "[consumer] 0 passed, 1 failed"
# (summed by tools/count_results.py) and exits 0 or 1 accordingly. Set
# KEEP_TMP=1 to keep the temporary directory (and its log) for a look.
# shellcheck disable=SC2317 # the step functions are called through $steps
set -uo pipefail

if [ $# -lt 3 ]; then
  echo "usage: $0 KIND SOURCE_ROOT CXX [CXX_ARGS...]" >&2
  exit 2
fi
kind=$1
src=$(cd "$2" && pwd) || exit 2
shift 2
cxx=("$@")
consumers=$src/tests/consumers
warnings=(-Wall -Wextra -Wpedantic -Werror)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/forksafe-consumer.XXXXXX") || exit 2
trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"' EXIT

# The installed header tree must be the source's: a header missing from
# meson.build's install_headers() breaks every installed consumer.
same_headers() {
  diff <(cd "$src/include" && find forksafe -name '*.hpp' | sort) \
       <(cd "$1" && find forksafe -name '*.hpp' | sort)
}

# The project in $consumers/$1 (if any) and app.cpp, copied to $tmp/app.
new_app() {
  mkdir -p "$tmp/app"
  if [ -n "${1:-}" ]; then cp -r "$consumers/$1/." "$tmp/app/"; fi
  cp "$consumers/app.cpp" "$tmp/app/"
}

vendored() {
  new_app
  mkdir -p "$tmp/app/third_party"
  cp -r "$src/include/forksafe" "$tmp/app/third_party/"
  cd "$tmp/app"
  "${cxx[@]}" -std=c++20 -pthread "${warnings[@]}" -Ithird_party app.cpp -o app
  ./app
  "${cxx[@]}" -std=c++20 -pthread "${warnings[@]}" -Ithird_party -DCONSUMER_NEGATIVE_CONTROL app.cpp -o app-negative
  if ./app-negative 2>&1 | sed 's/^/(negative control) /'; then
    echo "negative control: exited 0 with std::mutex, so the check cannot fail"
    return 1
  fi
  echo "negative control: with std::mutex the program failed, as it must"
}

meson_subproject() {
  new_app meson_subproject
  ln -s "$src" "$tmp/app/subprojects/forksafe" # where the wrap would have fetched it
  CXX="${cxx[*]}" meson setup "$tmp/build" "$tmp/app" --wrap-mode=nodownload --force-fallback-for=forksafe
  grep -q "Executing subproject forksafe" "$tmp/build/meson-logs/meson-log.txt"
  meson compile -C "$tmp/build"
  "$tmp/build/app"
}

pkg_config() {
  CXX="${cxx[*]}" meson setup "$tmp/forksafe-build" "$src" --prefix="$tmp/prefix" \
    -Dtests=disabled -Dexamples=disabled -Dbenchmarks=disabled
  meson install -C "$tmp/forksafe-build"
  same_headers "$tmp/prefix/include"
  new_app
  cd "$tmp/app"
  export PKG_CONFIG_PATH=$tmp/prefix/share/pkgconfig
  local version flags
  version=$(pkg-config --modversion forksafe)
  flags=$(pkg-config --cflags --libs forksafe)
  echo "forksafe $version: $flags"
  IFS=. read -r major minor patch <<<"$version"
  # shellcheck disable=SC2086 # pkg-config's flags are a word list
  "${cxx[@]}" "${warnings[@]}" "-DCONSUMER_EXPECTED_VERSION=($major*10000+$minor*100+$patch)" app.cpp $flags -o app
  ./app
}

cmake_find_package() {
  CXX="${cxx[*]}" cmake -S "$src" -B "$tmp/forksafe-build"
  cmake --install "$tmp/forksafe-build" --prefix "$tmp/prefix"
  same_headers "$tmp/prefix/include"
  new_app cmake_find_package
  CXX="${cxx[*]}" cmake -S "$tmp/app" -B "$tmp/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
    -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON
  grep -qx "forksafe_DIR:PATH=$tmp/prefix/share/cmake/forksafe" "$tmp/build/CMakeCache.txt" # the installed one
  cmake --build "$tmp/build" --verbose
  "$tmp/build/app"
}

cmake_add_subdirectory() {
  new_app cmake_add_subdirectory
  mkdir -p "$tmp/app/third_party"
  ln -s "$src" "$tmp/app/third_party/forksafe" # a git submodule, say
  CXX="${cxx[*]}" cmake -S "$tmp/app" -B "$tmp/build"
  cmake --build "$tmp/build" --verbose
  "$tmp/build/app"
  # Added as a subdirectory, forksafe must not add itself to the parent's install.
  cmake --install "$tmp/build" --prefix "$tmp/prefix"
  [ ! -e "$tmp/prefix" ] || { echo "add_subdirectory(forksafe) installed files:"; find "$tmp/prefix"; return 1; }
}

case $kind in
  vendored) steps=vendored ;;
  meson-subproject) steps=meson_subproject ;;
  pkg-config) steps=pkg_config ;;
  cmake-find-package) steps=cmake_find_package ;;
  cmake-add-subdirectory) steps=cmake_add_subdirectory ;;
  *) echo "unknown consumer kind: $kind" >&2; exit 2 ;;
esac

# The steps run with set -e in a subshell (not inside an if, which would turn
# set -e off); the log is shown only when they fail.
start=$SECONDS
( set -e -x; "$steps" ) >"$tmp/log" 2>&1
status=$?
if [ $status -eq 0 ]; then
  grep "^consumer:\|^(negative control)" "$tmp/log"
  echo "consumer $kind: built and ran in $((SECONDS - start)) s"
  echo "[consumer] 1 passed, 0 failed"
  exit 0
fi
tail -n 80 "$tmp/log"
echo "consumer $kind: failed (status $status)"
echo "[consumer] 0 passed, 1 failed"
exit 1
