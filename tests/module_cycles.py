#!/usr/bin/env python3
"""Fails when two modules of the workspace import each other, directly or through others.

A module is a source file (`mod.rs`/`lib.rs` stand for their folder). An edge A -> B is any
path A names into B (`crate::x::y`, `schema::...`, `super::...`, `use child::...`), outside
`#[cfg(test)] mod tests`. A module naming its own parent's descendants is fine; naming an
ancestor is an edge. Prints every cycle (a strongly connected component) with its edges.
"""
import os
import re
import sys

CRATES = ["schema", "oci", "verifier", "pipeline"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules():
    mods = {}
    for crate in CRATES:
        src = os.path.join(ROOT, crate, "src")
        for base, _, files in os.walk(src):
            for f in files:
                if f.endswith(".rs"):
                    path = os.path.join(base, f)
                    parts = os.path.relpath(path, src)[:-3].split(os.sep)
                    if parts[-1] in ("mod", "lib", "main"):
                        parts = parts[:-1]
                    with open(path, encoding="utf-8") as fh:
                        mods["::".join([crate] + parts)] = (fh.read(), f in ("mod.rs", "lib.rs"))
    return mods


def edges(mods):
    by_length = sorted(mods, key=len, reverse=True)
    out = {m: set() for m in mods}
    path_re = re.compile(r"\b(crate|super|" + "|".join(CRATES) + r")((?:::[a-z_][a-z0-9_]*)+)")
    for m, (text, is_dir) in mods.items():
        crate = m.split("::")[0]
        # The test module, whatever attributes stand between `#[cfg(test)]` and `mod tests`.
        text = re.split(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*mod tests", text)[0]
        text = re.sub(r"//.*", "", text)
        here = m if is_dir else m.rsplit("::", 1)[0]
        for base, rest in path_re.findall(text):
            full = crate + rest if base == "crate" else (here.rsplit("::", 1)[0] if is_dir else here) + rest if base == "super" else base + rest
            for n in by_length:
                if full == n or full.startswith(n + "::"):
                    if n != m and not n.startswith(m + "::"):
                        out[m].add(n)
                    break
        for child in re.findall(r"^use ([a-z_]+)::", text, re.M):
            if is_dir and m + "::" + child in mods:
                out[m].add(m + "::" + child)
    return out


def cycles(graph):
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def main():
    graph = edges(modules())
    found = cycles(graph)
    for comp in found:
        print("module cycle: " + ", ".join(comp))
        for a in comp:
            print(f"  {a} -> {', '.join(sorted(b for b in graph[a] if b in comp))}")
    print(f"{len(graph)} modules, {sum(len(e) for e in graph.values())} imports, {len(found)} cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
