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
#   meson-subproject        the README's [wrap-git] as subprojects/forksafe.wrap
#   meson-wrap-file         `meson dist`'s tarball through the README's [wrap-file]
#   pkg-config              meson install into a prefix; flags from pkg-config
#   cmake-find-package      cmake --install into a prefix; find_package(forksafe CONFIG REQUIRED)
#   meson-install-cmake     meson install; found by CMake's find_package
#   cmake-install-pkg-config  cmake --install; flags from pkg-config
#   cmake-add-subdirectory  add_subdirectory of the source tree
# Every installing kind checks that the install holds exactly the expected
# files, and builds the program as C++20 and as C++23 (the standard is the
# consumer's: the package must not set it).
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

version=$(sed -n "s/^  version: '\([0-9.]*\)'.*/\1/p" "$src/meson.build")
IFS=. read -r major minor patch <<<"$version"
numeric_version="($major*10000+$minor*100+$patch)"

# What an install must hold, whichever tool installed it: the source's headers
# (one missing from the install rules breaks every installed consumer),
# forksafe.pc, the CMake package files and LICENSE, and nothing else.
same_install() {
  diff <({ (cd "$src/include" && find forksafe -name '*.hpp' | sed 's|^|include/|')
           printf '%s\n' share/cmake/forksafe/forksafeConfig.cmake share/cmake/forksafe/forksafeConfigVersion.cmake \
             share/licenses/forksafe/LICENSE share/pkgconfig/forksafe.pc; } | sort) \
       <(cd "$1" && find . -type f | sed 's|^\./||' | sort)
}

# The ```ini block of the README that holds $1 ([wrap-git] or [wrap-file]).
readme_wrap() {
  awk -v want="$1" '/^```ini$/ { block = ""; inside = 1; next }
    /^```$/ { if (inside && index(block, want "\n") == 1) printf "%s", block; inside = 0; next }
    inside { block = block $0 "\n" }' "$src/README.md"
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
  mkdir -p "$tmp/app/subprojects"
  readme_wrap '[wrap-git]' >"$tmp/app/subprojects/forksafe.wrap"
  grep -q '^\[provide\]' "$tmp/app/subprojects/forksafe.wrap"
  ln -s "$src" "$tmp/app/subprojects/forksafe" # where the wrap would have fetched it
  CXX="${cxx[*]}" meson setup "$tmp/build" "$tmp/app" --wrap-mode=nodownload --force-fallback-for=forksafe
  grep -q "Executing subproject forksafe" "$tmp/build/meson-logs/meson-log.txt"
  meson compile -C "$tmp/build"
  "$tmp/build/app"
}

# The release tarball, made by `meson dist` from the committed tree, consumed
# through the README's [wrap-file] with its hash filled in; the tarball sits
# in subprojects/packagecache/, where meson looks before it downloads.
meson_wrap_file() {
  meson setup "$tmp/dist-build" "$src" -Dtests=disabled -Dexamples=disabled -Dbenchmarks=disabled
  meson dist -C "$tmp/dist-build" --no-tests --allow-dirty --formats xztar
  local tarball=forksafe-$version.tar.xz hash
  hash=$(cut -d' ' -f1 "$tmp/dist-build/meson-dist/$tarball.sha256sum")
  tar -tJf "$tmp/dist-build/meson-dist/$tarball" >"$tmp/tarball.list"
  grep -qx "forksafe-$version/LICENSE" "$tmp/tarball.list"
  new_app meson_subproject
  mkdir -p "$tmp/app/subprojects/packagecache"
  cp "$tmp/dist-build/meson-dist/$tarball" "$tmp/app/subprojects/packagecache/"
  readme_wrap '[wrap-file]' | sed "s/^source_hash = .*/source_hash = $hash/" >"$tmp/app/subprojects/forksafe.wrap"
  cat "$tmp/app/subprojects/forksafe.wrap"
  grep -qx "source_filename = $tarball" "$tmp/app/subprojects/forksafe.wrap"
  CXX="${cxx[*]}" meson setup "$tmp/build" "$tmp/app" --wrap-mode=nodownload --force-fallback-for=forksafe
  grep -q "Executing subproject forksafe" "$tmp/build/meson-logs/meson-log.txt"
  meson compile -C "$tmp/build"
  "$tmp/build/app"
  # C++23: Meson 1.0 (Debian 12's) has no cpp_std=c++23, so the standard is
  # given as a compiler argument, as the README says.
  CXX="${cxx[*]}" meson setup "$tmp/build23" "$tmp/app" --wrap-mode=nodownload --force-fallback-for=forksafe \
    -Dcpp_std=none "-Dcpp_args=-std=c++23 -DCONSUMER_CXX23"
  meson compile -C "$tmp/build23"
  "$tmp/build23/app"
  # The hash is checked: a tarball that differs from it is refused.
  rm -rf "$tmp/build" "$tmp/app/subprojects/forksafe-$version"
  sed -i "s/^source_hash = .*/source_hash = $(printf '0%.0s' {1..64})/" "$tmp/app/subprojects/forksafe.wrap"
  if meson setup "$tmp/build" "$tmp/app" --wrap-mode=nodownload --force-fallback-for=forksafe >"$tmp/refused.log" 2>&1; then
    echo "meson took a tarball whose hash differs from the wrap's"
    return 1
  fi
  grep -i "hash" "$tmp/refused.log" | head -2 | sed 's/^/consumer: refused as it must: /'
}

meson_install() {
  CXX="${cxx[*]}" meson setup "$tmp/forksafe-build" "$src" --prefix="$tmp/prefix" \
    -Dtests=disabled -Dexamples=disabled -Dbenchmarks=disabled
  meson install -C "$tmp/forksafe-build"
  same_install "$tmp/prefix"
}

cmake_install() {
  CXX="${cxx[*]}" cmake -S "$src" -B "$tmp/forksafe-build"
  cmake --install "$tmp/forksafe-build" --prefix "$tmp/prefix"
  same_install "$tmp/prefix"
  # A packager's staged install: the files under DESTDIR, forksafe.pc naming the real prefix.
  DESTDIR=$tmp/stage cmake --install "$tmp/forksafe-build" --prefix /usr
  same_install "$tmp/stage/usr"
  grep -qx 'prefix=/usr' "$tmp/stage/usr/share/pkgconfig/forksafe.pc"
}

# The flags pkg-config gives, with -std=c++20 and then -std=c++23.
build_with_pkg_config() {
  new_app
  cd "$tmp/app"
  export PKG_CONFIG_PATH=$tmp/prefix/share/pkgconfig
  local flags
  [ "$(pkg-config --modversion forksafe)" = "$version" ]
  flags=$(pkg-config --cflags --libs forksafe)
  echo "consumer: pkg-config says forksafe $version: $flags"
  case " $flags " in *" -std="*) echo "forksafe.pc sets the C++ standard"; return 1 ;; esac
  # shellcheck disable=SC2086 # pkg-config's flags are a word list
  "${cxx[@]}" -std=c++20 "${warnings[@]}" "-DCONSUMER_EXPECTED_VERSION=$numeric_version" app.cpp $flags -o app20
  ./app20
  # shellcheck disable=SC2086
  "${cxx[@]}" -std=c++23 "${warnings[@]}" -DCONSUMER_CXX23 "-DCONSUMER_EXPECTED_VERSION=$numeric_version" app.cpp $flags -o app23
  ./app23
}

# find_package(forksafe X.Y CONFIG REQUIRED) from the prefix: C++20 from the
# target's usage requirement, then CMAKE_CXX_STANDARD=23. A newer minor
# version than the one installed (and, SameMinorVersion, an older one) must
# not be found.
build_with_cmake() {
  new_app cmake_find_package
  local std build
  for std in 20 23; do
    build=$tmp/build$std
    CXX="${cxx[*]}" cmake -S "$tmp/app" -B "$build" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
      -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON -DWANTED_VERSION="$major.$minor" \
      $([ $std = 23 ] && echo "-DCMAKE_CXX_STANDARD=23 -DCONSUMER_CXX23=ON")
    grep -qx "forksafe_DIR:PATH=$tmp/prefix/share/cmake/forksafe" "$build/CMakeCache.txt" # the installed one
    cmake --build "$build" --verbose
    "$build/app"
  done
  local refused=("$major.$((minor + 1))")
  [ "$minor" -eq 0 ] || refused+=("$major.$((minor - 1))")
  for wanted in "${refused[@]}"; do
    if cmake -S "$tmp/app" -B "$tmp/build-$wanted" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
      -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON -DWANTED_VERSION="$wanted" >"$tmp/refused.log" 2>&1; then
      echo "find_package(forksafe $wanted) accepted forksafe $version"
      return 1
    fi
    grep -q "considered but not accepted" "$tmp/refused.log" # refused for its version, not for another reason
    echo "consumer: find_package(forksafe $wanted) refuses forksafe $version, as it must"
  done
}

# Two commands, not `a && b`: set -e does not stop inside the left of &&.
pkg_config() {
  meson_install
  build_with_pkg_config
}
cmake_find_package() {
  cmake_install
  build_with_cmake
}
meson_install_cmake() {
  meson_install
  build_with_cmake
}
cmake_install_pkg_config() {
  cmake_install
  build_with_pkg_config
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

# meson dist takes the tarball's files from git: outside a git work tree (an
# unpacked tarball) there is nothing to make it from, so the check is skipped.
if [ "$kind" = meson-wrap-file ] && [ "$(git -C "$src" rev-parse --show-toplevel 2>/dev/null)" != "$src" ]; then
  echo "consumer $kind: skipped: $src is not a git work tree, which meson dist needs"
  exit 77
fi

case $kind in
  vendored) steps=vendored ;;
  meson-subproject) steps=meson_subproject ;;
  meson-wrap-file) steps=meson_wrap_file ;;
  pkg-config) steps=pkg_config ;;
  cmake-find-package) steps=cmake_find_package ;;
  meson-install-cmake) steps=meson_install_cmake ;;
  cmake-install-pkg-config) steps=cmake_install_pkg_config ;;
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
