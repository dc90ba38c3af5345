#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Checks the layout rules of include/forksafe: ROOT (the source tree).

- detail/ includes only detail/ headers and the vocabulary headers
  (child_error.hpp, trivially_serializable.hpp): the detail layer never
  reaches up into the public API it serves;
- no header is longer than 600 lines;
- every header is in tests/meson.build's public_headers or detail_headers
  list, so each gets its self-containment test;
- every relative link in README.md and docs/*.md names a file that exists
  and, after '#', a heading of that file.

Prints one line per broken rule, then "[layout] 1 passed, 0 failed" (the
rules hold) or "[layout] 0 passed, 1 failed": one check, for the count line.
"""
import os
import re
import sys

VOCABULARY = {"child_error.hpp", "trivially_serializable.hpp"}
MAX_LINES = 600
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$")


def anchors(path):
    """The anchors a Markdown file's headings get (GitHub's rule)."""
    out = set()
    fenced = False
    for line in open(path):
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else HEADING.match(line)
        if m:
            text = re.sub(r"[`*]", "", m.group(1)).strip().lower()
            out.add(re.sub(r"[^a-z0-9_ -]", "", text).replace(" ", "-"))
    return out


def link_problems(root):
    docs = [os.path.join(root, "README.md")]
    docs += sorted(os.path.join(root, "docs", f) for f in os.listdir(os.path.join(root, "docs")) if f.endswith(".md"))
    for doc in docs:
        for n, line in enumerate(open(doc), 1):
            for target in LINK.findall(line):
                if re.match(r"[a-z]+:", target):
                    continue  # https:, mailto:
                path, _, anchor = target.partition("#")
                full = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
                where = f"{os.path.relpath(doc, root)}:{n}"
                if not os.path.exists(full):
                    yield f"{where} links to {target}: no such file"
                elif anchor and full.endswith(".md") and anchor not in anchors(full):
                    yield f"{where} links to {target}: no such heading"


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
    for problem in link_problems(root):
        check(False, problem)
    passed += 1
    print(f"layout: {passed + failed} rules checked over {len(headers)} headers, {failed} broken")
    print("[layout] 1 passed, 0 failed" if failed == 0 else "[layout] 0 passed, 1 failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
