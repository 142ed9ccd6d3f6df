#!/usr/bin/env python3
"""Finds import cycles among the modules of each crate of the workspace.

A module (one .rs file) depends on another when its code names a path into it: `use crate::a::b`,
`crate::a::b::f()`, `super::x`, `self::x`, grouped `use crate::{a, b::c}`. A name that a parent
module only re-exports (`pub use child::Name`) counts as a dependency on the child that defines
it, so a `mod.rs` re-exporting its children creates no false cycle. Test modules count too.

Prints every cycle (a strongly connected component of two or more modules) and exits 1 when
there is one; exits 0 and prints a summary when the graph is acyclic.

    e2e/tools/module-cycles.py [CRATE_SRC_DIR ...]   (default: src and crates/*/src)
"""
import os
import re
import sys
from glob import glob

COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
STRING = re.compile(r'"(?:\\.|[^"\\])*"')
USE = re.compile(r"\buse\s+([^;]+);")
PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")


def modules_of(src):
    """Maps module path tuples to files for one crate's src folder."""
    mods = {}
    for path in glob(os.path.join(src, "**", "*.rs"), recursive=True):
        rel = os.path.relpath(path, src)[:-3].split(os.sep)
        if rel == ["main"] and os.path.exists(os.path.join(src, "lib.rs")):
            continue  # the binary is a crate of its own, a user of the library
        if rel in (["lib"], ["main"]):
            key = ()
        elif rel[-1] == "mod":
            key = tuple(rel[:-1])
        else:
            key = tuple(rel)
        if rel[0] == "bin":
            continue
        mods[key] = path
    return mods


def expand_use(tree):
    """Expands a use tree (`crate::{a, b::{c, d}}`) into flat paths."""
    tree = re.sub(r"\s+", "", tree)
    out = []

    def walk(prefix, t):
        depth, start, parts = 0, 0, []
        if "{" not in t:
            out.append(prefix + t)
            return
        i = t.index("{")
        head, body = t[:i], t[i + 1 : t.rindex("}")]
        for j, ch in enumerate(body):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(body[start:j])
                start = j + 1
        parts.append(body[start:])
        for p in parts:
            if p:
                walk(prefix + head, p)

    walk("", tree)
    return [re.sub(r"\s+as\s+\w+$", "", p).split(" as ")[0] for p in out]


def inline_modules_flattened(text):
    """Inside an inline `mod name { ... }` (tests, mostly), `super::` names the file's own module:
    rewrite it as `self::`, so the file is one node of the graph."""
    out, pos = [], 0
    for m in re.finditer(r"\bmod\s+[a-z_][a-z0-9_]*\s*\{", text):
        if m.start() < pos:
            continue
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        out.append(text[pos : m.end()])
        out.append(re.sub(r"\bsuper::", "self::", text[m.end() : i]))
        pos = i
    out.append(text[pos:])
    return "".join(out)


def main(srcs):
    cyclic = False
    total_mods = total_edges = 0
    for src in srcs:
        mods = modules_of(src)
        texts = {
            k: inline_modules_flattened(STRING.sub('""', COMMENT.sub("", open(f).read())))
            for k, f in mods.items()
        }
        # Names each module re-exports from a child: {module: {name: child_module}}.
        reexports = {}
        for key, text in texts.items():
            for m in re.finditer(r"\bpub\s+use\s+([^;]+);", text):
                for p in expand_use(m.group(1)):
                    segs = [s for s in p.split("::") if s]
                    if segs and segs[0] in ("self",):
                        segs = segs[1:]
                    if len(segs) >= 2 and key + (segs[0],) in mods:
                        reexports.setdefault(key, {})[segs[-1]] = key + (segs[0],)
        edges = {k: set() for k in mods}

        def resolve(key, segs):
            if segs[0] == "crate":
                base = ()
            elif segs[0] == "self":
                base = key
            else:  # super
                base = key[:-1]
            rest = segs[1:]
            while rest and rest[0] == "super":
                base, rest = base[:-1], rest[1:]
            target = base
            for s in rest:
                if target + (s,) in mods:
                    target = target + (s,)
                else:
                    target = reexports.get(target, {}).get(s, target)
                    break
            return target

        for key, text in texts.items():
            children = {k[-1] for k in mods if len(k) == len(key) + 1 and k[: len(key)] == key}
            # Re-exports (`pub use child::Name`) are structure; every other use is a dependency,
            # including a parent calling into its own child (`child::f()`).
            body = re.sub(r"\bpub(\([a-z]+\))?\s+use\s+[^;]+;", "", text)
            paths = []
            for m in USE.finditer(body):
                for p in expand_use(m.group(1)):
                    first = p.split("::")[0]
                    if first in ("crate", "super", "self"):
                        paths.append(p)
                    elif first in children:
                        paths.append("self::" + p)
            for m in PATH.finditer(body):
                paths.append(m.group(1) + m.group(2))
            for m in re.finditer(r"(?<![A-Za-z0-9_:])([a-z_][a-z0-9_]*)((?:::[A-Za-z_][A-Za-z0-9_]*)+)", body):
                if m.group(1) in children:
                    paths.append("self::" + m.group(1) + m.group(2))
            for p in paths:
                segs = [s for s in p.split("::") if s and s != "*"]
                if not segs or (segs[0] == "self" and len(segs) == 1):
                    continue
                target = resolve(key, segs)
                if target != key and target in mods:
                    edges[key].add(target)
        total_mods += len(mods)
        total_edges += sum(len(v) for v in edges.values())
        for scc in tarjan(edges):
            if len(scc) > 1:
                cyclic = True
                names = sorted("::".join(k) or "<root>" for k in scc)
                print(f"{src}: import cycle among {len(scc)} modules: {', '.join(names)}")
    if not cyclic:
        print(f"module-cycles: no import cycle ({total_mods} modules, {total_edges} edges in {len(srcs)} crates)")
    return 1 if cyclic else 0


def tarjan(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    args = sys.argv[1:] or [os.path.join(root, "src")] + sorted(glob(os.path.join(root, "crates", "*", "src")))
    sys.exit(main(args))
