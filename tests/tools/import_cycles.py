#!/usr/bin/env python3
"""Finds import cycles between the modules of Rust crates.

A cycle is two or more sibling modules (children of one parent) that refer to
each other, directly or around a loop: `serve::api` uses `serve::plugins`, which
uses `serve::api`. Such modules cannot be understood, tested or moved one at a
time. References deeper in a module count for the sibling that contains them:
`serve::x::y` naming `serve::z` is an edge `x -> z` under `serve`.

A reference is a path in code (comments and string literals are skipped):
`crate::a::b`, `super::a`, `self::a`, in `use` items or inline. Each is resolved
to the longest module that exists as a file.

Usage: import_cycles.py [--known FILE] CRATE_SRC_DIR...
Exit 1 and a list when there is a cycle. `--known FILE` names cycles not yet
broken, one per line as `DIR: mod_a mod_b ...`; a cycle whose modules are all
on one known line passes (it may shrink, not grow), and a known line that no
longer matches any cycle is reported so the file is kept short.
"""

import re
import sys
from pathlib import Path

PATH_RE = re.compile(r"\b(crate|super|self)((?:\s*::\s*[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP_RE = re.compile(r"\buse\s+(crate|super|self)\s*::([^;]*);", re.S)


def strip_comments_and_strings(text: str) -> str:
    """Blanks out comments, string and char literals, keeping line structure."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r(#*)"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            i = n if end < 0 else end + 1 + len(hashes)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            i += len(re.match(r"'(\\.|[^\\'])'", text[i:i + 4]).group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def module_of(src: Path, file: Path) -> tuple:
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def expand_use(prefix: str, body: str):
    """`use crate::a::{b, c::d}` → crate::a::b, crate::a::c::d (one level of braces is enough
    for resolution: we only need module prefixes)."""
    body = re.sub(r"\s+", "", body)
    results = []

    def walk(base, rest):
        if "{" not in rest:
            for item in split_top(rest):
                results.append(base + [p for p in item.split("::") if p])
            return
        head, _, tail = rest.partition("{")
        inner = tail[: tail.rfind("}")]
        base2 = base + [p for p in head.split("::") if p]
        for item in split_top(inner):
            if "{" in item:
                walk(base2, item)
            else:
                results.append(base2 + [p for p in item.split("::") if p])

    walk([prefix], body)
    return results


def split_top(s: str):
    depth, cur, items = 0, "", []
    for ch in s:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        items.append(cur)
    return items


def resolve(current: tuple, segs: list, modules: set):
    head, rest = segs[0], segs[1:]
    if head == "crate":
        base = ()
    elif head == "self":
        base = current
    else:  # super, possibly repeated
        base = current
        while segs and segs[0] == "super":
            base = base[:-1]
            segs = segs[1:]
        rest = segs
    target = base
    for seg in rest:
        seg = seg.split(" as ")[0]
        if target + (seg,) in modules:
            target = target + (seg,)
        else:
            break
    return target


def edges_of(src: Path):
    files = [p for p in src.rglob("*.rs")]
    modules = {module_of(src, f) for f in files}
    # directories with mod.rs and files both count; add parents
    for m in list(modules):
        for k in range(len(m)):
            modules.add(m[:k])
    edges = set()
    for f in files:
        current = module_of(src, f)
        # files named tests.rs or under tests/ are test code: a test may reach anywhere
        if "tests" in current:
            continue
        text = strip_comments_and_strings(f.read_text(encoding="utf-8"))
        text = re.sub(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{.*", "", text, flags=re.S)
        refs = []
        for m in USE_GROUP_RE.finditer(text):
            refs.extend(expand_use(m.group(1), m.group(2)))
        for m in PATH_RE.finditer(text):
            refs.append([m.group(1)] + [s.strip() for s in m.group(2).split("::") if s.strip()])
        for segs in refs:
            target = resolve(current, segs, modules)
            # lift both ends to children of their common parent
            k = 0
            while k < min(len(current), len(target)) and current[k] == target[k]:
                k += 1
            if k == len(current) or k == len(target):
                continue  # one contains the other: a parent using its child, or vice versa
            edges.add((current[: k + 1], target[: k + 1]))
    return edges


def cycles(edges):
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
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
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out, graph


def read_known(path):
    known = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            d, _, mods = line.partition(":")
            known.append((d.strip(), set(mods.split())))
    return known


def self_test():
    """The checker finds a planted cycle and ignores parents, comments and strings."""
    import tempfile
    with tempfile.TemporaryDirectory() as t:
        src = Path(t)
        (src / "a").mkdir()
        (src / "lib.rs").write_text("mod a; mod b; mod c;\n")
        (src / "a" / "mod.rs").write_text("mod inner; use super::b::X; // crate::c::Y\n")
        (src / "a" / "inner.rs").write_text("fn f() { super::super::c::g(); let s = \"crate::b\"; }\n")
        (src / "b.rs").write_text("use crate::{a::inner, c};\n")
        (src / "c.rs").write_text("/* use crate::a; */ fn g() {}\n")
        edges = edges_of(src)
        assert edges == {(("a",), ("b",)), (("a",), ("c",)), (("b",), ("a",)), (("b",), ("c",))}, edges
        comps, _ = cycles(edges)
        assert comps == [[("a",), ("b",)]], comps
    print("self-test passed")


def main(argv):
    if argv[1:] == ["--self-test"]:
        self_test()
        return 0
    args = argv[1:]
    known = []
    if args[:1] == ["--known"]:
        known = read_known(args[1])
        args = args[2:]
    bad = 0
    used = set()
    for d in args:
        src = Path(d)
        comps, graph = cycles(edges_of(src))
        for comp in comps:
            names = ["::".join(m) for m in comp]
            hit = [i for i, (kd, mods) in enumerate(known) if kd == d and set(names) <= mods]
            if hit:
                used.add(hit[0])
                print(f"{src}: known cycle, not yet broken ({len(names)} modules): {' '.join(names)}")
                continue
            bad += 1
            print(f"{src}: import cycle among {', '.join(names)}")
            members = set(comp)
            for a in comp:
                for b in sorted(graph[a] & members):
                    print(f"    {'::'.join(a)} -> {'::'.join(b)}")
    for i, (kd, mods) in enumerate(known):
        if i not in used and kd in args:
            print(f"{kd}: the known cycle {' '.join(sorted(mods))} is gone: remove its line")
            bad += 1
    if bad:
        print(f"{bad} problem(s); break a cycle by moving the shared part to a module both use")
        return 1
    print(f"no new import cycles in {', '.join(args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
