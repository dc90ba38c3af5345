#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Checks the layout rules of include/forksafe: ROOT (the source tree).

- detail/ includes only detail/ headers and the vocabulary headers
  (child_error.hpp, trivially_serializable.hpp): the detail layer never
  reaches up into the public API it serves;
- no header is longer than 600 lines;
- every header is in tests/meson.build's public_headers or detail_headers
  list, so each gets its self-containment test.

Prints one line per broken rule, then "[layout] 1 passed, 0 failed" (the
rules hold) or "[layout] 0 passed, 1 failed": one check, for the count line.
"""
import os
import re
import sys

VOCABULARY = {"child_error.hpp", "trivially_serializable.hpp"}
MAX_LINES = 600
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def main(root):
    inc = os.path.join(root, "include", "forksafe")
    meson = open(os.path.join(root, "tests", "meson.build")).read()
    listed = set(re.findall(r"'((?:detail/)?[A-Za-z0-9_]+\.hpp)'", meson))
    headers = sorted(f for f in os.listdir(inc) if f.endswith(".hpp"))
    headers += sorted("detail/" + f for f in os.listdir(os.path.join(inc, "detail")) if f.endswith(".hpp"))
    passed = failed = 0

    def check(ok, what):
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
            print("layout: " + what)

    for h in headers:
        lines = open(os.path.join(inc, h)).read().split("\n")
        check(len(lines) - 1 <= MAX_LINES, f"{h} has {len(lines) - 1} lines (at most {MAX_LINES})")
        check(h in listed, f"{h} is in neither public_headers nor detail_headers of tests/meson.build")
        if h.startswith("detail/"):
            for n, line in enumerate(lines, 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                target = m.group(1)
                ok = "/" not in target or (target.startswith("../") and target[3:] in VOCABULARY)
                check(ok, f"{h}:{n} includes \"{target}\": detail/ may include only detail/ and {sorted(VOCABULARY)}")
    print(f"layout: {passed + failed} rules checked over {len(headers)} headers, {failed} broken")
    print("[layout] 1 passed, 0 failed" if failed == 0 else "[layout] 0 passed, 1 failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
