#!/usr/bin/env python3
"""Fails when a function in the given folders is longer than the limit (default 80 lines).

Counts from the `fn` line to the line of its closing brace, strings and `//` comments ignored.
Test code counts too. Prints the longest functions either way.

    e2e/tools/long-functions.py [--max N] [DIR ...]   (default: src/controller)
"""
import argparse
import os
import re
from glob import glob

FN = re.compile(r"\s*(pub(\([a-z:]+\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")
STRING = re.compile(r'"(?:\\.|[^"\\])*"')


def functions(path):
    lines = open(path).read().split("\n")
    i = 0
    while i < len(lines):
        m = FN.match(lines[i])
        if not m:
            i += 1
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            code = STRING.sub('""', lines[j]).split("//")[0]
            depth += code.count("{") - code.count("}")
            started = started or "{" in code
            if started and depth <= 0:
                break
            if not started and code.rstrip().endswith(";"):
                break  # a declaration without a body (a trait method)
            j += 1
        yield j - i + 1, i + 1, m.group(6)
        # Nested functions are counted inside their parent; go on after a declaration.
        i = j + 1 if started else i + 1


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    parser = argparse.ArgumentParser()
    parser.add_argument("--max", type=int, default=80)
    parser.add_argument("dirs", nargs="*", default=[os.path.join(root, "src", "controller")])
    args = parser.parse_args()
    found = []
    for d in args.dirs:
        for path in glob(os.path.join(d, "**", "*.rs"), recursive=True):
            found += [(n, os.path.relpath(path, root), line, name) for n, line, name in functions(path)]
    found.sort(reverse=True)
    too_long = [f for f in found if f[0] > args.max]
    for n, path, line, name in too_long:
        print(f"{path}:{line}: fn {name} is {n} lines (at most {args.max})")
    if found:
        n, path, line, name = found[0]
        print(f"long-functions: the longest of {len(found)} functions is {name} ({path}:{line}), {n} lines")
    return 1 if too_long else 0


if __name__ == "__main__":
    raise SystemExit(main())
