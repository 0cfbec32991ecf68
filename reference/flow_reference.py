"""Attention flow as the paper's code computes it: networkx Edmonds-Karp on the whole layered
graph, one max-flow per (target, input) pair. Same graph sizes as our criterion `attention`
group (30 layers, causal row-stochastic layers, identity added and renormalised), for the
last token of 16 and 64 tokens. For 64 tokens, every 16th input is timed and the per-pair time
extrapolated to all inputs (one full row takes many minutes).

Usage: .venv/bin/python reference/flow_reference.py
"""

import time

import networkx as nx
import numpy as np
from networkx.algorithms.flow import edmonds_karp


def layers(n, count=30, seed=42):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        a = np.tril(rng.random((n, n)) ** 4 + 1e-4)
        a /= a.sum(1, keepdims=True)
        a = a + np.eye(n)
        a /= a.sum(1, keepdims=True)
        out.append(a)
    return out


def main():
    for n in (16, 64):
        aug = layers(n)
        top = len(aug)
        graph = nx.DiGraph()
        for layer, a in enumerate(aug):
            for i in range(n):
                for j in range(i + 1):
                    graph.add_edge((layer + 1, i), (layer, j), capacity=a[i, j])
        sinks = list(range(n)) if n <= 16 else list(range(0, n, 16))
        start = time.perf_counter()
        for j in sinks:
            nx.maximum_flow_value(graph, (top, n - 1), (0, j), flow_func=edmonds_karp)
        per_pair = (time.perf_counter() - start) / len(sinks)
        print(f"{n:>3} tokens: {per_pair:.3f} s per pair, {per_pair * n:.1f} s for the last token's row")


if __name__ == "__main__":
    main()
