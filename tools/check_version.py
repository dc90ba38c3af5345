#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Checks that the version is written once: ROOT (the source tree).

meson.build's project version is the version. CMakeLists.txt reads it from
there; everything that must state it too is checked against it here:

- FORKSAFE_VERSION_MAJOR, _MINOR and _PATCH in include/forksafe/detail/config.hpp
  (the headers are used without a build step, so they cannot be generated);
- the newest release in CHANGELOG.md ("## [X.Y.Z]" after "## [Unreleased]");
- the newest entry of debian/changelog;
- the version the README's find_package() asks for (X.Y).

Prints one line per disagreement, then "[release] 1 passed, 0 failed" or
"[release] 0 passed, 1 failed".
"""
import re
import sys


def read(root, path):
    try:
        with open(f"{root}/{path}", encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        print(f"{path}: missing")
        return ""


def main(root):
    m = re.search(r"^project\('forksafe'.*?^\s*version: '(\d+)\.(\d+)\.(\d+)'", read(root, "meson.build"),
                  re.S | re.M)
    if not m:
        print("meson.build: no project version found")
        return 1
    version = ".".join(m.groups())
    found = {}
    config = read(root, "include/forksafe/detail/config.hpp")
    parts = [re.search(rf"^#define FORKSAFE_VERSION_{p} (\d+)$", config, re.M) for p in ("MAJOR", "MINOR", "PATCH")]
    found["include/forksafe/detail/config.hpp"] = ".".join(p.group(1) for p in parts) if all(parts) else None
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", read(root, "CHANGELOG.md"), re.M)
    found["CHANGELOG.md (newest release)"] = releases[0] if releases else None
    deb = re.match(r"^\S+ \(([^)]+)\)", read(root, "debian/changelog"))
    found["debian/changelog (newest entry)"] = deb.group(1) if deb else None
    wanted = re.findall(r"find_package\(forksafe (\S+) CONFIG", read(root, "README.md"))
    # X.Y: the README asks for this minor release (the CMake package accepts any X.Y.*).
    major_minor = version.rsplit(".", 1)[0]
    found["README.md find_package"] = version if set(wanted) == {major_minor} else ", ".join(wanted)
    bad = [f"{where}: {got or 'not found'}, but meson.build says {version}"
           for where, got in found.items() if got != version]
    for line in bad:
        print(line)
    if not bad:
        print(f"version {version}: stated alike in {', '.join(found)}")
    return 1 if bad else 0


if __name__ == "__main__":
    status = main(sys.argv[1] if len(sys.argv) > 1 else ".")
    print(f"[release] {1 - status} passed, {status} failed")
    sys.exit(status)
