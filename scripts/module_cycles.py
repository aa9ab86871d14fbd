#!/usr/bin/env python3
"""Reads the dot graph `cargo modules dependencies` prints (modules only)
on stdin and fails, naming one, if its "uses" edges form a cycle.

usage: cargo modules dependencies ... --layout dot | module_cycles.py CRATE
"""
import re
import sys

crate = sys.argv[1]
edges = {}
for line in sys.stdin:
    m = re.match(r'\s*"([^"]+)" -> "([^"]+)" \[label="uses"', line)
    if m and m.group(1) != m.group(2):
        edges.setdefault(m.group(1), set()).add(m.group(2))

WHITE, GREY, BLACK = 0, 1, 2
colour = {}
stack = []


def visit(node):
    colour[node] = GREY
    stack.append(node)
    for nxt in sorted(edges.get(node, ())):
        state = colour.get(nxt, WHITE)
        if state == GREY:
            return stack[stack.index(nxt):] + [nxt]
        if state == WHITE:
            cycle = visit(nxt)
            if cycle:
                return cycle
    stack.pop()
    colour[node] = BLACK
    return None


for start in sorted(edges):
    if colour.get(start, WHITE) == WHITE:
        cycle = visit(start)
        if cycle:
            print(f"{crate}: module cycle: " + " -> ".join(cycle))
            sys.exit(1)
print(f"{crate}: {sum(len(v) for v in edges.values())} module uses, no cycle")
