# SPDX-License-Identifier: MIT
# Sourced by demo.sh and test.sh: installs, with apt-get and only when
# missing, the Debian 12 packages forksafe builds with.
forksafe_deps=(g++ clang clang-format meson ninja-build cmake doctest-dev pkg-config python3 libc++-dev libc++abi-dev valgrind git debhelper lintian dpkg-dev doxygen clang-tidy libgtest-dev)

ensure_deps() {
  local missing=()
  for p in "${forksafe_deps[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "==> build dependencies present"
    return 0
  fi
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "error: missing ${missing[*]}; run as root or install sudo" >&2; return 1; }
    sudo="sudo"
  fi
  echo "==> installing missing packages with apt-get: ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# configure DIR CXX [meson args...]: set up (once) and build a build directory.
configure_and_build() {
  local dir=$1 cxx=$2
  shift 2
  if [ ! -f "$dir/build.ninja" ]; then
    echo "==> configuring $dir with $cxx $*"
    CXX=$cxx meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; return 1; }
  fi
  echo "==> building $dir"
  meson compile -C "$dir" >"$dir.build.log" 2>&1 || { tail -60 "$dir.build.log"; return 1; }
}
