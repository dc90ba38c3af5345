#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# usage: run_as_test.sh EXAMPLE: runs one example program as a test. An
# example exits 0 when what it shows happened; this prints its output, then
# "[example] 1 passed, 0 failed" or "[example] 0 passed, 1 failed" for the
# suite's count line (tools/count_results.py), and exits with its code.
"$1"
code=$?
if [ "$code" -eq 0 ]; then
  echo "[example] 1 passed, 0 failed"
else
  echo "[example] 0 passed, 1 failed: $(basename "$1") exited with code $code"
fi
exit "$code"
