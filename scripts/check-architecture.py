#!/usr/bin/env python3
"""The shape rules docs/design.md states, checked on src/ (production code only):

- no cycle between top-level modules (a folder is one module; `crate::x`, `super::x` and
  `use crate::{x, ...}` count);
- the pipeline (everything under src/pipeline/) knows nothing of the database, the server (its
  protocol, state, REST and WebSocket), MQTT, the bus or the commands;
- `ServerMsg::Event` is built in one place (the bus), so each event is serialised once;
- SQL is written only under src/db/.

Test code is left out item by item: a `#[cfg(test)]` item (`mod tests;`, a braced block, a
`use` line) wherever it stands in a file, and every file that is only declared behind
`#[cfg(test)]`. Code after a test block is read like any other.

usage: scripts/check-architecture.py [SRC_DIR] [--graph]   exit 1 on a violation
       scripts/check-architecture.py --self-test             plants each violation in a copy of
                                                             src/ and fails if one passes
"""
import os
import re
import shutil
import sys
import tempfile

SQL = re.compile(r'"[^"\n]*\b(SELECT\s.+\sFROM|INSERT\s+INTO|DELETE\s+FROM|UPDATE\s+\w+\s+SET|CREATE\s+(TABLE|INDEX)|PRAGMA\s)', re.S)
PIPELINE_MAY_NOT = ("db", "mqtt", "server", "bus", "cmd")
CFG_TEST = re.compile(r"#\[cfg\(test\)\]")


def blank_literals(text):
    """`text` with comments removed and the insides of string and char literals replaced by
    spaces (same length, newlines kept), so braces and paths in them are not read as code.
    Strings keep their quotes and are returned separately for the SQL rule."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j == -1 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif re.match(r'b?r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'(b?r)(#*)"', text[i:])
            end = '"' + m.group(2)
            j = text.find(end, i + m.end())
            j = n if j == -1 else j + len(end)
            out.append(text[i:j])  # raw strings are kept whole: SQL lives in them
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            if m:  # a char literal; otherwise a lifetime
                out.append("'" + " " * (m.end() - 2) + "'")
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip_strings(code):
    """`code` (already through blank_literals) with its string literals blanked as well."""
    def blank(m):
        return re.sub(r"[^\n]", " ", m.group(0))
    return re.sub(r'(?<![A-Za-z0-9_])b?r(#*)".*?"\1|"(?:\\.|[^"\\])*"', blank, code, flags=re.S)


def cut_tests(code):
    """`code` without its `#[cfg(test)]` items, and the names of the `#[cfg(test)] mod x;`
    files it declares. Braces are matched on code whose literals are blanked."""
    plain = strip_strings(code)
    out, i, test_mods = [], 0, []
    for m in CFG_TEST.finditer(plain):
        if m.start() < i:
            continue
        out.append(code[i:m.start()])
        j = m.end()
        semi, brace = plain.find(";", j), plain.find("{", j)
        if brace == -1 or (semi != -1 and semi < brace):
            end = len(code) if semi == -1 else semi + 1
            decl = re.match(r"\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", plain[j:end])
            if decl:
                test_mods.append(decl.group(1))
            i = end
            continue
        depth, k = 0, brace
        while k < len(plain):
            if plain[k] == "{":
                depth += 1
            elif plain[k] == "}":
                depth -= 1
                if depth == 0:
                    break
            k += 1
        i = k + 1
    out.append(code[i:])
    return "".join(out), test_mods


def module_path(src, path):
    """The module path of a file, e.g. ['pipeline', 'detect', 'decode'] for
    pipeline/detect/decode/mod.rs; [] for lib.rs and main.rs."""
    parts = os.path.relpath(path, src)[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def test_only_files(src, files, declared):
    """Files declared only behind `#[cfg(test)]`, and everything below them."""
    skip = set()
    for p, names in declared.items():
        here = os.path.dirname(p) if os.path.basename(p) in ("mod.rs", "lib.rs", "main.rs") else p[:-3]
        for name in names:
            skip.add(os.path.join(here, name + ".rs"))
            skip.add(os.path.join(here, name, "mod.rs"))
            below = os.path.join(here, name) + os.sep
            skip.update(f for f in files if f.startswith(below))
    return skip


def used_modules(code, me):
    """Top-level modules a file's code names through `crate::` or `super::` paths."""
    found = set()
    for m in re.finditer(r"\b(crate|super)((?:::super)*)::(\{[^}]*\}|[a-z_][a-z0-9_]*)", code):
        if m.group(1) == "crate":
            base = []
        else:
            ups = 1 + m.group(2).count("super")
            base = me[:-ups] if ups <= len(me) else []
            if ups > len(me):
                continue
        tail = m.group(3)
        names = re.findall(r"(?:^|[{,])\s*([a-z_][a-z0-9_]*)", tail) if tail.startswith("{") else [tail]
        for name in names:
            top = (base + [name])[0]
            found.add(top)
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


def check(src, graph=False):
    """The problems found in `src`, as lines; the number of modules; how many test-only files
    were not read; and the import graph (module -> the modules it imports)."""
    files = sorted(
        os.path.join(root, f)
        for root, _, names in os.walk(src)
        for f in names
        if f.endswith(".rs")
    )
    code, declared = {}, {}
    for p in files:
        with open(p, encoding="utf-8") as f:
            code[p], declared[p] = cut_tests(blank_literals(f.read()))
    skip = test_only_files(src, files, declared)
    code = {p: c for p, c in code.items() if p not in skip}
    mods = {p: module_path(src, p) for p in code}
    names = {m[0] for m in mods.values() if m}
    edges = {n: set() for n in names}
    for p, text in code.items():
        me = mods[p]
        if not me:
            continue
        edges[me[0]].update(m for m in used_modules(strip_strings(text), me) if m in names and m != me[0])
    problems = []
    for comp in cycles(edges):
        problems.append("modules importing each other: " + " -> ".join(comp))
    for m in sorted(edges.get("pipeline", ())):
        if m in PIPELINE_MAY_NOT:
            where = [p for p in code if mods[p][:1] == ["pipeline"] and m in used_modules(strip_strings(code[p]), mods[p])]
            problems.append(f"the pipeline imports {m} ({', '.join(where)}): it hands typed values to a Sink and knows no outputs")
    builds = [
        (p, len(re.findall(r"ServerMsg::Event\s*\{", strip_strings(text))))
        for p, text in code.items()
    ]
    builds = [(p, n) for p, n in builds if n]
    total = sum(n for _, n in builds)
    if total != 1:
        where = ", ".join(f"{p} ({n})" for p, n in builds) or "nowhere"
        problems.append(f"ServerMsg::Event is built {total} times outside tests ({where}); the bus builds it once")
    db_dir = os.path.join(src, "db") + os.sep
    for p, text in code.items():
        if p.startswith(db_dir):
            continue
        for m in SQL.finditer(text):
            line = text[: m.start()].count("\n") + 1
            problems.append(f"{p}:{line}: SQL outside src/db/")
    if graph:
        for n in sorted(edges):
            print(f"{n}: {' '.join(sorted(edges[n]))}")
    return problems, len(names), len(skip & set(files)), edges


def plant(src, rel, text, where="end"):
    """Adds `text` to the file `rel` of the tree `src`: at its end, or after its first
    `#[cfg(test)] mod tests;` line, or inside its first `mod tests {` block."""
    p = os.path.join(src, rel)
    with open(p, encoding="utf-8") as f:
        body = f.read()
    if where == "end":
        body = body + "\n" + text + "\n"
    elif where == "after-test-mod":
        m = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*;\n", body)
        assert m, f"{rel} declares no #[cfg(test)] mod x;"
        body = body[: m.end()] + text + "\n" + body[m.end():]
    elif where == "in-tests":
        m = re.search(r"#\[cfg\(test\)\]\s*mod\s+tests\s*\{\n", body)
        assert m, f"{rel} has no #[cfg(test)] mod tests {{"
        body = body[: m.end()] + text + "\n" + body[m.end():]
    with open(p, "w", encoding="utf-8") as f:
        f.write(body)


# Each forbidden thing, planted where the old check could not see it; the check must refuse
# every one. (file, where, text, what the check must say)
PLANTS = [
    ("pipeline/mod.rs", "after-test-mod", "use crate::db::DbHandle;", "the pipeline imports db"),
    ("pipeline/tracker/kalman.rs", "end", "fn _planted(_: crate::server::protocol::ServerMsg) {}", "the pipeline imports server"),
    ("pipeline/zones.rs", "end", "use crate::mqtt::MqttHandle;", "the pipeline imports mqtt"),
    ("pipeline/detect/decode/mod.rs", "end", "use super::super::super::bus::Bus;", "the pipeline imports bus"),
    ("pipeline/events.rs", "end", "fn _planted() -> crate::cmd::run::Daemon { todo!() }", "the pipeline imports cmd"),
    ("server/rest.rs", "end", "fn _planted() { let _ = crate::server::protocol::ServerMsg::Event { x: 1 }; }", "ServerMsg::Event is built 2 times"),
    ("pipeline/mod.rs", "after-test-mod", 'const _PLANTED: &str = "SELECT id FROM events";', "SQL outside src/db/"),
    ("server/ws/wire.rs", "end", 'const _PLANTED: &str = "INSERT INTO events (id) VALUES (1)";', "SQL outside src/db/"),
]
# Test code may do all of this: planted inside a test block, the check must still pass.
ALLOWED = [
    ("pipeline/zones.rs", "in-tests", "    use crate::db::DbHandle;\n    const _Q: &str = \"SELECT 1 FROM events\";"),
]


def cycle_plant(src, edges):
    """A cycle to plant: an import back along an arrow the tree has (b imports a, so a imports
    b), put in the file of the importing module's root. Taken from the tree as it is, so the
    plant stays a cycle however the modules' imports change."""
    for a in sorted(edges):
        for b in sorted(edges[a]):
            for rel in (os.path.join(b, "mod.rs"), b + ".rs"):
                if os.path.exists(os.path.join(src, rel)):
                    return (rel, "end", f"use crate::{a} as _planted_cycle;", "modules importing each other")
    raise SystemExit("check-architecture --self-test: the tree has no import to turn into a cycle")


def self_test(src):
    failures = []
    problems, _, _, edges = check(src)
    if problems:
        failures.append("the real tree fails: " + "; ".join(problems))
    plants = [cycle_plant(src, edges)] + PLANTS
    for rel, where, text, expect in plants + [(r, w, t, None) for r, w, t in ALLOWED]:
        with tempfile.TemporaryDirectory() as tmp:
            copy = os.path.join(tmp, "src")
            shutil.copytree(src, copy)
            plant(copy, rel, text, where)
            found, _, _, _ = check(copy)
            said = "; ".join(found)
            if expect is None and found:
                failures.append(f"test code planted in {rel} was refused: {said}")
            elif expect is not None and not any(expect in f for f in found):
                failures.append(f"planted in {rel} ({where}): {text!r} passed the check (it said: {said or 'nothing'})")
    for f in failures:
        print("check-architecture --self-test:", f, file=sys.stderr)
    if not failures:
        print(f"check-architecture --self-test: the real tree passes; each of {len(plants)} planted violations is refused; test code is not read")
    return 1 if failures else 0


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    src = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    src = os.path.normpath(src)
    if "--self-test" in sys.argv:
        return self_test(src)
    problems, modules, skipped, _ = check(src, "--graph" in sys.argv)
    for p in problems:
        print("check-architecture:", p, file=sys.stderr)
    if not problems:
        print(f"check-architecture: {modules} modules, no cycle; pipeline, event serialisation and SQL where they belong ({skipped} test-only files not read)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
