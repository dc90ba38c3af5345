#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# usage: expect_error.sh VALGRIND [OPTIONS...] PROGRAM: runs valgrind's
# negative control. Passes when memcheck exits with the suite's error code
# (99), that is, when it reported the control's leak and uninitialised read.
# Prints "[valgrind] N passed, N failed" for the suite's count line.
"$@"
code=$?
if [ "$code" -eq 99 ]; then
  echo "[valgrind] 1 passed, 0 failed"
  exit 0
fi
echo "[valgrind] 0 passed, 1 failed: valgrind exited with $code, not 99: it did not report the control's errors"
exit 1
