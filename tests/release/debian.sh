#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# usage: debian.sh SOURCE_ROOT CXX [CXX_ARGS...]
#
# The Debian package, end to end, in a fresh temporary directory: copies the
# source tree (git's tracked and untracked-but-not-ignored files, never a
# build directory) to forksafe-VERSION (VERSION from debian/changelog), builds
# it with dpkg-buildpackage -us -uc, runs lintian on the .changes (any error
# or warning fails), checks that libforksafe-dev ships exactly the source's
# headers, forksafe.pc and the two CMake package files, installs it with
# dpkg -i, and builds and runs tests/consumers/app.cpp against it twice, with
# CXX: with pkg-config's flags (no PKG_CONFIG_PATH) and with CMake's
# find_package (no CMAKE_PREFIX_PATH), each finding the files in /usr.
#
# It installs a package on this machine: as root, or with sudo -n. It removes
# it on exit, and refuses to start if a libforksafe-dev is installed already
# (it would replace it, then remove it). Needs dpkg-dev, debhelper, lintian
# and the package's Build-Depends (tools/deps.sh installs them all).
# Prints "[release] 1 passed, 0 failed" or "[release] 0 passed, 1 failed"
# (summed by tools/count_results.py) and exits 0 or 1 accordingly. Set
# KEEP_TMP=1 to keep the temporary directory (the build, its log) for a look.
# shellcheck disable=SC2317 # the step functions are called from the subshell
set -uo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 SOURCE_ROOT CXX [CXX_ARGS...]" >&2
  exit 2
fi
src=$(cd "$1" && pwd) || exit 2
shift
cxx=("$@")
warnings=(-Wall -Wextra -Wpedantic -Werror)
package=libforksafe-dev
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo -n)

# fail MESSAGE: the count line a refusal still owes tools/count_results.py.
fail() {
  echo "release debian-package: $1"
  echo "[release] 0 passed, 1 failed"
  exit 1
}

# The package's state as dpkg knows it (empty or not-installed if unknown).
package_status() {
  dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null
}

case $(package_status) in
  "" | not-installed) ;;
  *) fail "$package is already installed ($(dpkg-query -W -f='${Version}' "$package")): this test would replace it and then remove it; remove it first (dpkg -r $package)" ;;
esac

# skip MESSAGE: this machine cannot run the check (meson shows it as SKIP).
skip() {
  echo "release debian-package: skipped: $1"
  exit 77
}
if [ ${#sudo[@]} -gt 0 ] && ! sudo -n true 2>/dev/null; then
  skip "installing the package needs root, or sudo without a password (sudo -n)"
fi
# The package is built from the files git knows (as a release would be).
[ "$(git -C "$src" rev-parse --show-toplevel 2>/dev/null)" = "$src" ] || skip "$src is not a git work tree"

version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version) || fail "cannot read the version from $src/debian/changelog"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/forksafe-release.XXXXXX") || exit 2
tree=$tmp/forksafe-$version

# Removes the package only if this run went as far as installing it (the
# marker is written just before dpkg -i, in the steps' subshell).
cleanup() {
  if [ -e "$tmp/installed" ] && ! [[ "$(package_status)" =~ ^(not-installed)?$ ]]; then
    # In a session of its own: meson's timeout kills this script's process
    # group 0.5 s after its SIGTERM, and the removal must outlive that.
    setsid -w "${sudo[@]}" dpkg -r "$package" >>"$tmp/log" 2>&1 || echo "release debian-package: could not remove $package (dpkg -r $package)"
  fi
  [ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM # meson's timeout: still remove the package

# The headers the package must ship: the source's, one path per line.
source_headers() {
  (cd "$src/include" && find forksafe -name '*.hpp' | sort)
}

# The tree as it stands, as a tarball of it would be: tracked (unless deleted)
# and untracked files, not what .gitignore ignores; never a build directory,
# nor what a dpkg-buildpackage run in the source tree left in debian/.
copy_tree() {
  mkdir -p "$tree"
  git -C "$src" ls-files -co --exclude-standard |
    grep -Ev '^(build|obj-[^/]*)/|^debian/(\.debhelper/|tmp/|libforksafe-dev/|files$|debhelper-build-stamp$|.*\.substvars$|.*\.log$)' |
    while IFS= read -r f; do
      if [ -e "$src/$f" ] || [ -L "$src/$f" ]; then printf '%s\n' "$f"; fi
    done >"$tmp/files"
  tar -C "$src" -cf - --no-recursion -T "$tmp/files" | tar -C "$tree" -xf -
  [ -f "$tree/debian/rules" ]
}

build() {
  cd "$tree"
  dpkg-buildpackage -us -uc
  cd "$tmp"
  ls -l "$tmp"
  deb=$tmp/${package}_${version}_all.deb
  changes=$(echo "$tmp"/forksafe_"$version"_*.changes)
  [ -f "$deb" ] && [ -f "$changes" ]
}

lint() {
  # Errors and warnings fail; info, pedantic and overridden tags are shown.
  lintian --fail-on error,warning --display-info --pedantic --show-overrides "$changes" | tee "$tmp/lintian"
}

contents() {
  # The files (not directories), as paths without the leading ./
  dpkg-deb -c "$deb" | awk '{ print $6 }' | sed -n 's|^\./\(.*[^/]\)$|\1|p' | sort >"$tmp/deb-files"
  cat "$tmp/deb-files"
  diff <(source_headers) <(sed -n 's|^usr/include/||p' "$tmp/deb-files")
  diff <(printf '%s\n' usr/share/cmake/forksafe/forksafeConfig.cmake \
    usr/share/cmake/forksafe/forksafeConfigVersion.cmake usr/share/pkgconfig/forksafe.pc) \
    <(grep -E '^usr/share/(cmake|pkgconfig)/' "$tmp/deb-files")
  grep -qx usr/share/doc/libforksafe-dev/copyright "$tmp/deb-files"
  # Nothing else but the package's documentation: no usr/share/licenses (the
  # licence is in its copyright).
  if grep -Ev '^usr/(include/forksafe|share/(cmake/forksafe|pkgconfig|doc/libforksafe-dev))/' "$tmp/deb-files"; then
    echo "the package ships files outside its layout (above)"
    return 1
  fi
}

install_package() {
  touch "$tmp/installed"
  "${sudo[@]}" dpkg -i "$deb"
  [ "$(dpkg-query -W -f='${db:Status-Abbrev} ${Version}' "$package")" = "ii  $version" ]
}

# The app and, if given, a consumer project of tests/consumers, in $tmp/$1.
new_app() {
  mkdir -p "$tmp/$1"
  if [ -n "${2:-}" ]; then cp -r "$src/tests/consumers/$2/." "$tmp/$1/"; fi
  cp "$src/tests/consumers/app.cpp" "$tmp/$1/"
}

consume_with_pkg_config() {
  unset PKG_CONFIG_PATH PKG_CONFIG_LIBDIR PKG_CONFIG_SYSROOT_DIR # its default path only
  [ "$(pkg-config --variable=pcfiledir forksafe)" = /usr/share/pkgconfig ]
  local pc_version flags major minor patch
  pc_version=$(pkg-config --modversion forksafe)
  [ "$pc_version" = "$version" ]
  flags=$(pkg-config --cflags --libs forksafe)
  echo "consumer: pkg-config: forksafe $pc_version: $flags"
  IFS=. read -r major minor patch <<<"$pc_version"
  new_app app-pkg-config
  cd "$tmp/app-pkg-config"
  # shellcheck disable=SC2086 # pkg-config's flags are a word list
  "${cxx[@]}" -std=c++20 "${warnings[@]}" "-DCONSUMER_EXPECTED_VERSION=($major*10000+$minor*100+$patch)" \
    app.cpp $flags -o app
  ./app
}

consume_with_cmake() {
  unset CMAKE_PREFIX_PATH
  new_app app-cmake cmake_find_package
  # This release's major.minor: with SameMinorVersion only 0.2.* satisfies 0.2.
  local major_minor=${version%.*}
  CXX="${cxx[*]}" cmake -S "$tmp/app-cmake" -B "$tmp/app-cmake/build" -DWANTED_VERSION="$major_minor" \
    -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON
  grep -qx "forksafe_DIR:PATH=/usr/share/cmake/forksafe" "$tmp/app-cmake/build/CMakeCache.txt" # the package's
  echo "consumer: cmake: find_package(forksafe $major_minor) found /usr/share/cmake/forksafe"
  cmake --build "$tmp/app-cmake/build" --verbose
  "$tmp/app-cmake/build/app"
}

steps() {
  copy_tree
  build
  lint
  contents
  install_package
  consume_with_pkg_config
  consume_with_cmake
}

# The steps run with set -e in a subshell (not inside an if, which would turn
# set -e off); the log is shown only when they fail.
start=$SECONDS
( set -e -x; steps ) >"$tmp/log" 2>&1
status=$?
if [ $status -eq 0 ]; then
  echo "lintian ($(lintian --version)) on forksafe_${version}: errors and warnings fail; the tags:"
  grep -E '^[A-Z]: ' "$tmp/lintian" | sed 's/^/  /' || echo "  (none)"
  grep "^consumer:" "$tmp/log"
  echo "release debian-package: $package $version built, lintian-clean, installed, used and removed in $((SECONDS - start)) s"
  echo "[release] 1 passed, 0 failed"
  exit 0
fi
tail -n 80 "$tmp/log"
echo "release debian-package: failed (status $status)"
echo "[release] 0 passed, 1 failed"
exit 1
