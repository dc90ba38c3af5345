#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Sum test counts over meson test logs: BUILD_DIR [BUILD_DIR ...].

A doctest executable contributes doctest's own case counts; a compile-fail
check, a consumer test, an example (run by examples/run_as_test.sh), the
layout, format and release checks (tools/, tests/release/) or valgrind's control contributes its one
pass or fail (a memcheck run of a
doctest subset contributes doctest's counts, and fails if memcheck reports). A test that failed without printing its
counts (it crashed or timed out) counts as one failure, so a dead suite can
never look green. Prints one line per build dir, then the total.
"""
import json
import re
import sys

DOCTEST = re.compile(r"\[doctest\] test cases:\s*(\d+) \|\s*(\d+) passed \|\s*(\d+) failed")
PLAIN = re.compile(r"\[(?:compile-fail|consumer|example|valgrind|layout|format|release|doctest-report)\] (\d+) passed, (\d+) failed")


def count(build_dir):
    passed = failed = skipped = 0
    with open(f"{build_dir}/meson-logs/testlog.json") as log:
        for line in log:
            test = json.loads(line)
            out = test.get("stdout", "") or ""
            ok = test.get("result") in ("OK", "EXPECTEDFAIL")
            if test.get("result") == "SKIP":  # exit 77: said why it could not run here; neither count
                skipped += 1
                continue
            test_failed = 0
            for m in DOCTEST.finditer(out):
                passed += int(m.group(2))
                test_failed += int(m.group(3))
            for m in PLAIN.finditer(out):
                passed += int(m.group(1))
                test_failed += int(m.group(2))
            # A test meson saw fail must count as failed, even if it printed
            # only passing counts (it crashed after, or leaked and timed out).
            if not ok and test_failed == 0:
                test_failed = 1
            failed += test_failed
    if skipped:
        print(f"{build_dir}: {skipped} skipped (see its testlog for why)")
    return passed, failed


total_p = total_f = 0
for d in sys.argv[1:]:
    p, f = count(d)
    print(f"{d}: {p} passed, {f} failed")
    total_p += p
    total_f += f
print(f"{total_p} passed, {total_f} failed")
