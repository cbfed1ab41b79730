#!/usr/bin/env python3
"""The shape rules docs/design.md states, checked on src/ (non-test code only):

- no cycle between modules (a folder is one module; `crate::x` and `use crate::{x, ...}` count);
- the pipeline knows nothing of the database, the protocol, MQTT, the server or its state;
- `ServerMsg::Event` is built in one place (the bus), so each event is serialised once;
- SQL is written only under src/db/.

usage: scripts/check-architecture.py [SRC_DIR] [--graph]   (exit 1 on a violation)
"""
import os
import re
import sys

SRC = next((a for a in sys.argv[1:] if not a.startswith("--")), "src")
SQL = re.compile(r'"[^"\n]*\b(SELECT\s.+\sFROM|INSERT\s+INTO|DELETE\s+FROM|UPDATE\s+\w+\s+SET|CREATE\s+(TABLE|INDEX)|PRAGMA\s)', re.S)
PIPELINE_MAY_NOT = ("db", "mqtt", "protocol", "server", "state", "bus", "ws", "rest")


def non_test(text):
    """The file's code before its first `#[cfg(test)]` item (tests sit at the end here)."""
    cut = re.search(r"^\s*#\[cfg\(test\)\]", text, re.M)
    return text[: cut.start()] if cut else text


def strip_comments(text):
    return re.sub(r"//[^\n]*", "", text)


def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    return "crate" if rel[0] in ("lib", "main") else rel[0]


def used_modules(code):
    found = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", code))
    # `use crate::{a, b::c, ...};`
    for group in re.findall(r"\bcrate::\{([^}]*)\}", code):
        found.update(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group))
    return found


def cycles(edges):
    """Strongly connected sets of two or more modules (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
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
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    files = sorted(
        os.path.join(root, f)
        for root, _, names in os.walk(SRC)
        for f in names
        if f.endswith(".rs")
    )
    code = {p: strip_comments(non_test(open(p, encoding="utf-8").read())) for p in files}
    names = {module_of(p) for p in files} - {"crate"}
    edges = {n: set() for n in names}
    for p, text in code.items():
        me = module_of(p)
        if me == "crate":
            continue
        edges[me].update(m for m in used_modules(text) if m in names and m != me)
    problems = []
    for comp in cycles(edges):
        problems.append("modules importing each other: " + " -> ".join(comp))
    for m in sorted(edges.get("pipeline", ())):
        if m in PIPELINE_MAY_NOT:
            problems.append(f"the pipeline imports {m}: it hands typed values to a Sink and knows no outputs")
    builds = [
        (p, text.count("ServerMsg::Event {"))
        for p, text in code.items()
        if "ServerMsg::Event {" in text
    ]
    total = sum(n for _, n in builds)
    if total != 1:
        where = ", ".join(f"{p} ({n})" for p, n in builds) or "nowhere"
        problems.append(f"ServerMsg::Event is built {total} times outside tests ({where}); the bus builds it once")
    db_dir = os.path.join(SRC, "db") + os.sep
    for p, text in code.items():
        if p.startswith(db_dir):
            continue
        for m in SQL.finditer(text):
            line = text[: m.start()].count("\n") + 1
            problems.append(f"{p}:{line}: SQL outside src/db/")
    if "--graph" in sys.argv:
        for n in sorted(edges):
            print(f"{n}: {' '.join(sorted(edges[n]))}")
    for p in problems:
        print("check-architecture:", p, file=sys.stderr)
    if not problems:
        print(f"check-architecture: {len(names)} modules, no cycle; pipeline, event serialisation and SQL where they belong")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
