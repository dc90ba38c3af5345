#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Formats every tracked C++ file with clang-format (the style in .clang-format),
# or with --check, lists the files that differ and exits 1 (prints
# "[format] 1 passed, 0 failed" or "[format] 0 passed, 1 failed" for the count line).
set -euo pipefail
cd "$(dirname "$0")/.."
clang_format=${CLANG_FORMAT:-clang-format}
mapfile -t files < <(git ls-files '*.hpp' '*.cpp' 2>/dev/null || find include tests examples bench -name '*.[hc]pp')
if [ "${1:-}" != "--check" ]; then
  "$clang_format" -i "${files[@]}"
  exit 0
fi
# The style is checked with the clang-format Debian 12 ships: other versions
# format some constructs differently, so they skip (exit 77) rather than judge.
major=$("$clang_format" --version | sed -n 's/.*version \([0-9]*\).*/\1/p' | head -1)
if [ "$major" != "14" ]; then
  echo "format: $("$clang_format" --version | head -1) is not clang-format 14; not judged"
  exit 77
fi
bad=0
for f in "${files[@]}"; do
  if ! "$clang_format" --dry-run -Werror "$f" >/dev/null 2>&1; then
    echo "format: $f differs from .clang-format (run tools/format.sh)"
    bad=$((bad + 1))
  fi
done
echo "format: ${#files[@]} files checked with $("$clang_format" --version | head -1), $bad differ"
if [ "$bad" -eq 0 ]; then echo "[format] 1 passed, 0 failed"; else echo "[format] 0 passed, 1 failed"; exit 1; fi
