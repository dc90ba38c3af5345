#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Runs expected_failures (BINARY) and reads its doctest report: every test
case fails, each with the message it must give (expected versus actual, the
captured stderr, file and line), each failure counted once, nothing printed
twice, nothing after a REQUIRE. Prints "[doctest-report] N passed, M failed".

usage: check_report.py BINARY
"""
import re
import subprocess
import sys

SOURCE = "expected_failures.cpp"

# test case -> what its block must contain (regular expressions, in order).
EXPECTED = {
    "fail: wrong exit code, with stderr": [
        SOURCE + r":\d+: ERROR: CHECK\( FORKSAFE_CHECK_EXITS\( std::fputs",
        r"expected exit code 3, got: the statement was killed by SIGSEGV",
        r"stderr:\nstderr-before-crash\n"],
    "fail: the statement returned": [
        r"FORKSAFE_CHECK_SIGNALED\( \(void\)0, SIGTERM \)",
        r"expected killed by SIGTERM, got: the statement returned normally"],
    "fail: death without the pattern": [
        r'with stderr matching "expected words", got: the statement exited with code 1',
        r"stderr:\nsomething else\n"],
    "fail: exit code 0 is no death": [r"expected an abnormal end .*, got: the statement exited with code 0"],
    "fail: did not hang": [r"expected still running after 5000 ms, got: the statement exited with code 0"],
    "fail: did not finish in time": [
        r"expected a normal return within 100 ms, got: the statement did not finish within 100 ms \(killed by SIGKILL\)"],
    "fail: a blocked SIGTERM never arrives": [r"expected killed by SIGTERM, got: the statement exited with code 0"],
    "fail: closing every descriptor, then returning": [
        r"the statement exited with code 126 \(forksafe's code for a child that returned but could not report it"],
    "fail: the statement's stdout is captured, not printed": [r"stdout:\nCHILD-STDOUT-MARKER\n"],
    "fail: REQUIRE stops the test case": [r"FATAL ERROR: REQUIRE\( FORKSAFE_REQUIRE_EXITS\( std::_Exit\(1\), 2 \) \)"],
    "fail: WARN reports but does not fail": [
        r"WARNING: WARN\( FORKSAFE_WARN_EXITS\( std::_Exit\(1\), 2 \) \) is NOT correct!",
        r"ERROR: the one failure of this test case"],
    "fail: isolated assertions": [
        SOURCE + r":\d+: ERROR: CHECK\( x == 2 \) is NOT correct!\n  values: CHECK\( 1 == 2 \)",
        SOURCE + r":\d+: MESSAGE: ISOLATED-MESSAGE 1",
        r"ERROR: CHECK\( x == 3 \) is NOT correct!\n  values: CHECK\( 1 == 3 \)\n  logged: context-42"],
    "fail: isolated crash": [r"ERROR: FORKSAFE_ISOLATED_TEST_CASE: the test case's child \d+ was killed by SIGSEGV"],
    "fail: isolated overrun": [
        r"ERROR: FORKSAFE_ISOLATED_TEST_CASE: the test case did not finish within 200 ms and its child was killed by SIGKILL"],
    "fail: isolated exception": [r"ERROR: test case THREW exception: std::logic_error: bad-logic"],
    "fail: isolated REQUIRE": [r"FATAL ERROR: REQUIRE\( 1 == 2 \) is NOT correct!"],
    "fail: isolated exit": [r"the test case's child \d+ exited with code 0 without a result"],
    "fail: isolated subcase": [r'ERROR: SUBCASE\("first"\) in a FORKSAFE_ISOLATED_TEST_CASE: not supported'],
    "fail: isolated closes its report": [r"exited with code 126 without a result \(forksafe's code"],
}
# Each exactly once in the whole output: no failure reported twice.
ONCE = [r"CHECK\( x == 2 \) is NOT correct", r"MESSAGE: ISOLATED-MESSAGE 1", r"(?m)^CHILD-STDOUT-MARKER$",
        r"(?m)^stderr-before-crash$", r"THREW exception: std::logic_error"]
NEVER = [r"NOT-REACHED-AFTER-REQUIRE", r"NOT-REACHED-AFTER-ISOLATED-REQUIRE", r"test case CRASHED"]
SUMMARY = [r"test cases: +19 \| +0 passed \| +19 failed", r"assertions: +20 \| +1 passed \| +19 failed"]


def main(binary):
    run = subprocess.run([binary, "--no-colors", "--no-version", "--no-intro"], capture_output=True, text=True,
                         timeout=300)
    out = run.stdout + run.stderr
    blocks = {}
    for block in out.split("=" * 79):
        m = re.search(r"TEST CASE:  (.*)\n", block)
        if m:
            blocks[m.group(1)] = block
    passed = failed = 0

    def judge(ok, what):
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
            print("FAIL:", what)

    judge(run.returncode != 0, "the binary exits non-zero (its test cases fail)")
    for name, patterns in EXPECTED.items():
        block = blocks.get(name)
        if block is None:
            judge(False, f"no report for test case {name!r}")
            continue
        at = 0
        for p in patterns:
            m = re.compile(p).search(block, at)
            judge(m is not None, f"{name!r}: /{p}/ in\n{block}")
            at = m.end() if m else at
    for p in ONCE:
        n = len(re.findall(p, out))
        judge(n == 1, f"/{p}/ appears {n} times, not once")
    for p in NEVER:
        judge(re.search(p, out) is None, f"/{p}/ appears")
    for p in SUMMARY:
        judge(re.search(p, out) is not None, f"summary /{p}/ in\n{out[-400:]}")
    print(f"[doctest-report] {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
