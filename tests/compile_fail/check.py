#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Compile one file that must NOT compile, and check the diagnostic.

usage: check.py SOURCE REGEX [--first-error] -- COMPILER [ARGS...]

Passes when the compiler rejects SOURCE and its output matches REGEX (so a
file that fails for an unrelated reason, such as a typo, does not pass).
With --first-error, REGEX must match the first line that says "error:",
the line a user reads first (REGEX may use lookaheads to require several
things on it in any order).
Prints "[compile-fail] 1 passed, 0 failed" or "... 0 passed, 1 failed" for
the suite's count line.
"""
import re
import subprocess
import sys


def main() -> int:
    sep = sys.argv.index("--")
    source, regex = sys.argv[1], sys.argv[2]
    first_error = "--first-error" in sys.argv[3:sep]
    compiler = sys.argv[sep + 1:]
    cmd = compiler + ["-fsyntax-only", "-fno-diagnostics-color", source]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    if first_error:
        errors = [line for line in out.splitlines() if "error:" in line]
        if errors:
            print(f"first error line: {errors[0]}")
            out = errors[0]
    if proc.returncode == 0:
        print(f"{source}: compiled, but it must be rejected")
        ok = False
    elif not re.search(regex, out):
        print(f"{source}: rejected, but the diagnostic does not match /{regex}/:\n{out}")
        ok = False
    else:
        match = re.search(regex, out)
        print(f"{source}: rejected as expected; diagnostic matched: {match.group(0)!r}")
        ok = True
    print(f"[compile-fail] {int(ok)} passed, {int(not ok)} failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
