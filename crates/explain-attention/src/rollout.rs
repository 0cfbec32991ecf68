//! Attention rollout and attention flow (Abnar & Zuidema 2020, arXiv:2005.00928).
//!
//! Both start from the augmented per-layer matrices Ã_l = rownorm(Ā_l + I), where Ā_l is the
//! head mean: the identity stands for the residual connection.
//! - Rollout: R = Ã_L · … · Ã_1 (left multiplication, later layers on the left). One row of it
//!   ([`rollout_row`]) is a chain of vector–matrix products, O(L·n²) instead of the O(L·n³)
//!   of the whole matrix.
//! - Flow: a layered graph with nodes (layer, token), edges (l, i) → (l − 1, j) of capacity
//!   Ã_l[i][j]; the max-flow from the top node of a target token to every input node, row
//!   normalised.
//!
//! Flow is made practical by the graph's structure instead of the paper's per-pair
//! Edmonds–Karp on the whole graph: in a causal model a path from token `t` to input `j`
//! only visits tokens in `j..=t`, so each max-flow runs on that band only; the inputs of one
//! target are independent problems and run on all cores. The work still grows as
//! L·n³/6 edges for a row of `n` causal tokens, so [`attention_flow_budgeted`] computes it
//! exactly only while that count fits a budget and otherwise on a **coarsened graph**:
//! contiguous token segments of every layer below the top are contracted into one node
//! each (capacities summed). Contraction only removes cuts — every cut of the contracted
//! graph is a cut of the original one with the same capacity, since the cut never splits a
//! group — so the coarsened max-flow into segment `S` is an **upper bound** on the exact
//! max-flow from the target into the set of `S`'s input nodes, which is itself at least the
//! largest single-token flow in `S` and at most their sum. With one token per segment the two
//! graphs are the same and so are the flows.

use ndarray::{Array1, Array2, ArrayView2, Axis};
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};

use explainability_core::{Error, Result};

/// Max-flow algorithm of petgraph used for attention flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum MaxFlowAlgorithm {
    /// Dinic's algorithm (default; fastest on these dense layered graphs).
    #[default]
    Dinics,
    /// Ford–Fulkerson with BFS augmenting paths (Edmonds–Karp), as the paper used.
    FordFulkerson,
}

/// Default edge budget of [`attention_flow_budgeted`]: the max-flow problems of one row may
/// hold this many edges in all (about 3 s on one core of the 2-core reference machine,
/// docs/benchmarks.md). SmolLM2's 30 layers stay exact up to ~200 tokens.
pub const DEFAULT_FLOW_MAX_EDGES: u64 = 60_000_000;

/// Checks that every layer is the same non-empty square; returns its size.
fn check_layers(head_means: &[Array2<f64>]) -> Result<usize> {
    let first = head_means.first().ok_or_else(|| Error::invalid_argument("no attention layers"))?;
    let n = first.nrows();
    for (l, a) in head_means.iter().enumerate() {
        if a.dim() != (n, n) || n == 0 {
            return Err(Error::invalid_argument(format!(
                "layer {l} pattern is {:?}, expected {n}×{n}",
                a.dim()
            )));
        }
    }
    Ok(n)
}

/// Ã = rownorm(Ā + I) of one layer.
fn augment(a: ArrayView2<'_, f64>) -> Array2<f64> {
    let mut aug = a.to_owned();
    aug.diag_mut().mapv_inplace(|v| v + 1.0);
    for mut row in aug.axis_iter_mut(Axis(0)) {
        let s = row.sum();
        if s > 0.0 {
            row.mapv_inplace(|v| v / s);
        }
    }
    aug
}

/// Ã_l = rownorm(Ā_l + I) for each layer's head-averaged pattern.
///
/// # Errors
/// [`Error::InvalidArgument`] when there are no layers or shapes disagree or are not square.
pub fn augmented(head_means: &[Array2<f64>]) -> Result<Vec<Array2<f64>>> {
    check_layers(head_means)?;
    Ok(head_means.iter().map(|a| augment(a.view())).collect())
}

/// Attention rollout R = Ã_L · … · Ã_1; row `t` says how much of token `t`'s final
/// representation traces back to each input token.
///
/// O(L·n³): when only one row is needed, [`rollout_row`] gives it in O(L·n²).
///
/// # Errors
/// As [`augmented`].
///
/// # Examples
/// ```
/// use ndarray::array;
/// let a1 = array![[1.0, 0.0], [0.5, 0.5]];
/// let a2 = array![[0.5, 0.5], [0.0, 1.0]];
/// let r = explain_attention::attention_rollout(&[a1, a2]).unwrap();
/// assert!((r[[0, 0]] - 0.8125).abs() < 1e-12 && (r[[1, 0]] - 0.25).abs() < 1e-12);
/// ```
pub fn attention_rollout(head_means: &[Array2<f64>]) -> Result<Array2<f64>> {
    let aug = augmented(head_means)?;
    let mut rollout = aug[0].clone();
    for a in &aug[1..] {
        rollout = a.dot(&rollout);
    }
    Ok(rollout)
}

/// Row `target` of [`attention_rollout`], computed as e_targetᵀ · Ã_L · … · Ã_1 from the top
/// layer down: L vector–matrix products, O(L·n²) time and O(n) extra memory (Ã_l is never
/// formed: v·Ã = w·Ā + w with w = v / rowsum(Ā + I)).
///
/// # Errors
/// As [`augmented`], and [`Error::InvalidArgument`] for a target past the input.
///
/// # Examples
/// ```
/// use ndarray::array;
/// let a1 = array![[1.0, 0.0], [0.5, 0.5]];
/// let a2 = array![[0.5, 0.5], [0.0, 1.0]];
/// let row = explain_attention::rollout_row(&[a1, a2], 1).unwrap();
/// assert!((row[0] - 0.25).abs() < 1e-12 && (row[1] - 0.75).abs() < 1e-12);
/// ```
pub fn rollout_row(head_means: &[Array2<f64>], target: usize) -> Result<Array1<f64>> {
    let n = check_layers(head_means)?;
    if target >= n {
        return Err(Error::invalid_argument(format!(
            "rollout target {target} is past the input's {n} tokens"
        )));
    }
    let mut v = Array1::<f64>::zeros(n);
    v[target] = 1.0;
    for a in head_means.iter().rev() {
        let sums = a.sum_axis(Axis(1)) + 1.0;
        let w = &v / &sums;
        v = w.dot(a) + &w;
    }
    Ok(v)
}

/// Attention flow from the top node of `target` to every input token, row-normalised,
/// computed exactly whatever it costs (L·n³/6 edges for a causal row of `n` tokens; minutes
/// from a few hundred tokens on). [`attention_flow_budgeted`] bounds the work.
///
/// `causal` restricts each problem to the band of tokens `j..=target`; for bidirectional
/// models every token is kept.
///
/// # Errors
/// As [`augmented`], and [`Error::InvalidArgument`] for a target past the input.
pub fn attention_flow(
    head_means: &[Array2<f64>],
    target: usize,
    causal: bool,
    algorithm: MaxFlowAlgorithm,
) -> Result<Array1<f64>> {
    let n = check_layers(head_means)?;
    let kept = kept_tokens(n, target, causal)?;
    let singletons: Vec<[usize; 2]> = (0..kept).map(|k| [k, k + 1]).collect();
    Ok(attention_flow_segments(head_means, target, causal, &singletons, algorithm)?.scores)
}

/// A flow row, exact or on a coarsened graph, with what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowRow {
    /// Normalised flow per token (sums to 1 unless no flow reaches the inputs). On a
    /// coarsened graph each token carries an equal share of its segment's flow.
    pub scores: Array1<f64>,
    /// Token segments `[start, end)` the graph was coarsened to; `None` when every segment is
    /// one token (the exact flow).
    pub segments: Option<Vec<[usize; 2]>>,
    /// Unnormalised max-flow into each segment (each token when exact): on a coarsened graph
    /// an upper bound on the exact max-flow into the segment's input nodes.
    pub segment_flows: Vec<f64>,
    /// Edges of all the max-flow problems solved (the work done).
    pub edges: u64,
}

impl FlowRow {
    /// Whether the flow is exact (no segment holds more than one token).
    pub fn is_exact(&self) -> bool {
        self.segments.is_none()
    }
}

/// Number of tokens a flow row involves: `0..=target` when causal, every token otherwise.
fn kept_tokens(n: usize, target: usize, causal: bool) -> Result<usize> {
    if target >= n {
        return Err(Error::invalid_argument(format!(
            "flow target {target} is past the input's {n} tokens"
        )));
    }
    Ok(if causal { target + 1 } else { n })
}

/// Edges of the max-flow problems of one flow row over `width` nodes per layer (tokens, or
/// segments of a coarsened graph) with the target at `target`: one problem per input, each
/// holding L − 1 layers of its band (lower-triangular when causal) plus the target's
/// top-layer row; about L·n³/6 for a causal row of n tokens. Saturates instead of
/// overflowing.
pub fn flow_edges(n_layers: usize, width: usize, target: usize, causal: bool) -> u64 {
    let below = n_layers.saturating_sub(1) as u128;
    let total: u128 = (0..width)
        .map(|j| {
            if causal {
                // Lower-triangular layers: band·(band + 1)/2 edges each.
                let band = (target + 1).saturating_sub(j) as u128;
                below * band * (band + 1) / 2 + band
            } else {
                let band = width as u128;
                below * band * band + band
            }
        })
        .sum();
    u64::try_from(total).unwrap_or(u64::MAX)
}

/// `count` contiguous segments over the `kept` tokens of a flow row, the target alone in its
/// own segment and the other tokens in windows of (nearly) equal length. Fewer segments come
/// back when there are fewer tokens; at least one per token side of the target that exists.
pub fn flow_segments(kept: usize, target: usize, count: usize) -> Vec<[usize; 2]> {
    let mut out = Vec::new();
    let before = target.min(kept);
    let after = kept.saturating_sub(target + 1);
    // Share the non-target segments between the two sides in proportion to their tokens.
    let others = count.saturating_sub(1).max(usize::from(before > 0) + usize::from(after > 0));
    let total = (before + after).max(1);
    // With both sides present `others` ≥ 2, and each side keeps at least one of them (a
    // side given them all would leave the other one over the count).
    let (before_count, after_count) = match (before > 0, after > 0) {
        (true, true) => {
            let b = (others * before).div_ceil(total).clamp(1, others - 1);
            (b, others - b)
        }
        (true, false) => (others, 0),
        (false, true) => (0, others),
        (false, false) => (0, 0),
    };
    let (before_count, after_count) = (before_count.min(before), after_count.min(after));
    let windows = |out: &mut Vec<[usize; 2]>, start: usize, len: usize, parts: usize| {
        for p in 0..parts {
            let a = start + len * p / parts;
            let b = start + len * (p + 1) / parts;
            if b > a {
                out.push([a, b]);
            }
        }
    };
    windows(&mut out, 0, before, before_count);
    if target < kept {
        out.push([target, target + 1]);
    }
    windows(&mut out, target + 1, after, after_count);
    out
}

/// Attention flow of `target` with a work budget: exact when [`flow_edges`] of the whole row
/// is at most `max_edges`; otherwise computed on the graph coarsened to the largest number of
/// [`flow_segments`] whose problems fit the budget (never fewer than the target plus one
/// segment per side), every token of a segment receiving an equal share of the segment's flow.
/// The coarsened flows are upper bounds of the exact segment flows (module docs).
///
/// # Errors
/// As [`attention_flow`].
pub fn attention_flow_budgeted(
    head_means: &[Array2<f64>],
    target: usize,
    causal: bool,
    algorithm: MaxFlowAlgorithm,
    max_edges: u64,
) -> Result<FlowRow> {
    let n = check_layers(head_means)?;
    let kept = kept_tokens(n, target, causal)?;
    let layers = head_means.len();
    let count = largest_fitting(kept, |m| {
        let segments = flow_segments(kept, target, m);
        let t = segments.iter().position(|s| s[0] == target).unwrap_or(0);
        flow_edges(layers, segments.len(), t, causal) <= max_edges
    });
    let segments = flow_segments(kept, target, count);
    attention_flow_segments(head_means, target, causal, &segments, algorithm)
}

/// The largest `m` in `1..=max` with `fits(m)` (binary search; `fits` is monotone), or 1.
fn largest_fitting(max: usize, fits: impl Fn(usize) -> bool) -> usize {
    if fits(max) {
        return max;
    }
    let (mut lo, mut hi) = (1usize, max);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) { lo = mid } else { hi = mid }
    }
    lo
}

/// Attention flow of `target` on the graph whose nodes below the top layer are the given
/// contiguous token `segments` (`[start, end)`, in order, covering the row's tokens: `0..=target`
/// when causal, all otherwise), with capacities summed over each pair of segments. The top
/// layer keeps the target's own node as the source. Single-token segments give the exact flow.
///
/// # Errors
/// As [`attention_flow`], and [`Error::InvalidArgument`] for segments that are empty, out of
/// order, overlapping or do not cover the row.
pub fn attention_flow_segments(
    head_means: &[Array2<f64>],
    target: usize,
    causal: bool,
    segments: &[[usize; 2]],
    algorithm: MaxFlowAlgorithm,
) -> Result<FlowRow> {
    let n = check_layers(head_means)?;
    let kept = kept_tokens(n, target, causal)?;
    let mut next = 0;
    for s in segments {
        if s[0] != next || s[1] <= s[0] {
            return Err(Error::invalid_argument(format!(
                "flow segment {s:?} does not continue the previous one (expected it to start at {next} and be non-empty)"
            )));
        }
        next = s[1];
    }
    if next != kept {
        return Err(Error::invalid_argument(format!(
            "flow segments cover tokens 0..{next}, the row has {kept}"
        )));
    }
    let m = segments.len();
    let source_segment = segments.iter().position(|s| (s[0]..s[1]).contains(&target)).unwrap_or(0);
    let mut segment_of = vec![0usize; kept];
    for (i, s) in segments.iter().enumerate() {
        segment_of[s[0]..s[1]].fill(i);
    }
    // Capacities between segments, one m × m matrix per layer below the top, and the
    // target's top-layer row summed per segment.
    let layers = head_means.len();
    let mut below = Vec::with_capacity(layers.saturating_sub(1));
    let mut top = Array1::<f64>::zeros(m);
    for (l, a) in head_means.iter().enumerate() {
        let aug = augment(a.slice(ndarray::s![..kept, ..kept]).view());
        if l + 1 == layers {
            for (k, &c) in aug.row(target).iter().enumerate() {
                top[segment_of[k]] += c;
            }
        } else {
            let mut c = Array2::<f64>::zeros((m, m));
            for (q, row) in aug.axis_iter(Axis(0)).enumerate() {
                let sq = segment_of[q];
                for (k, &v) in row.iter().enumerate() {
                    c[[sq, segment_of[k]]] += v;
                }
            }
            below.push(c);
        }
    }
    let graph = CoarseGraph { below: &below, top: &top, source_segment, causal };
    let (segment_flows, edges) = graph.flows(algorithm)?;
    let total: f64 = segment_flows.iter().sum();
    let mut scores = Array1::<f64>::zeros(n);
    for (s, f) in segments.iter().zip(&segment_flows) {
        let share = if total > 0.0 { f / total } else { *f } / (s[1] - s[0]) as f64;
        scores.slice_mut(ndarray::s![s[0]..s[1]]).fill(share);
    }
    let exact = segments.iter().all(|s| s[1] - s[0] == 1);
    Ok(FlowRow { scores, segments: (!exact).then(|| segments.to_vec()), segment_flows, edges })
}

/// The layered graph of a (possibly coarsened) flow row: `below[l]` holds the capacities from
/// layer l + 1 to layer l between width-many nodes, `top` those from the source.
struct CoarseGraph<'a> {
    below: &'a [Array2<f64>],
    top: &'a Array1<f64>,
    source_segment: usize,
    causal: bool,
}

impl CoarseGraph<'_> {
    /// Raw max-flow into every bottom node and the edges used, the sinks spread over cores.
    fn flows(&self, algorithm: MaxFlowAlgorithm) -> Result<(Vec<f64>, u64)> {
        let width = self.top.len();
        let sinks: Vec<usize> = (0..width).collect();
        let threads =
            std::thread::available_parallelism().map_or(1, |p| p.get()).min(sinks.len()).max(1);
        let results: Vec<(usize, f64, u64)> = if threads == 1 || sinks.len() < 4 {
            sinks.iter().map(|&j| self.flow_to(j, algorithm)).collect()
        } else {
            let chunks: Vec<Vec<usize>> = (0..threads)
                .map(|t| sinks.iter().copied().skip(t).step_by(threads).collect())
                .collect();
            std::thread::scope(|scope| {
                let handles: Vec<_> = chunks
                    .iter()
                    .map(|chunk| {
                        scope.spawn(move || {
                            chunk.iter().map(|&j| self.flow_to(j, algorithm)).collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().map_err(|_| {
                            Error::invalid_argument("an attention-flow worker panicked")
                        })
                    })
                    .collect::<Result<Vec<_>>>()
                    .map(|parts| parts.into_iter().flatten().collect())
            })?
        };
        let mut flows = vec![0.0; width];
        let mut edges = 0u64;
        for (j, f, e) in results {
            flows[j] = f;
            edges = edges.saturating_add(e);
        }
        Ok((flows, edges))
    }

    /// Max-flow from the source to bottom node `sink` on the band of nodes paths can visit
    /// (`sink..=source` when causal), with the number of edges built.
    fn flow_to(&self, sink: usize, algorithm: MaxFlowAlgorithm) -> (usize, f64, u64) {
        let width = self.top.len();
        let band: Vec<usize> = if self.causal {
            if sink > self.source_segment {
                return (sink, 0.0, 0);
            }
            (sink..=self.source_segment).collect()
        } else {
            (0..width).collect()
        };
        let w = band.len();
        // Node layers 0..=L − 1 below the top (whose only node that matters is the source).
        let node_layers = self.below.len() + 1;
        let mut graph: DiGraph<(), f64> =
            DiGraph::with_capacity(node_layers * w + 1, self.below.len() * w * w + w);
        let nodes: Vec<Vec<NodeIndex>> =
            (0..node_layers).map(|_| (0..w).map(|_| graph.add_node(())).collect()).collect();
        let source = graph.add_node(());
        for (l, c) in self.below.iter().enumerate() {
            // below[l] connects layer l + 1 (queries) to layer l (keys).
            for (qi, &q) in band.iter().enumerate() {
                for (ki, &k) in band.iter().enumerate() {
                    let capacity = c[[q, k]];
                    if capacity > 0.0 {
                        graph.add_edge(nodes[l + 1][qi], nodes[l][ki], capacity);
                    }
                }
            }
        }
        for (ki, &k) in band.iter().enumerate() {
            if self.top[k] > 0.0 {
                graph.add_edge(source, nodes[node_layers - 1][ki], self.top[k]);
            }
        }
        let sink_node = nodes[0][band.iter().position(|&b| b == sink).unwrap_or(0)];
        let edges = graph.edge_count() as u64;
        let flow = match algorithm {
            MaxFlowAlgorithm::Dinics => petgraph::algo::dinics(&graph, source, sink_node).0,
            MaxFlowAlgorithm::FordFulkerson => {
                petgraph::algo::ford_fulkerson(&graph, source, sink_node).0
            }
        };
        (sink, flow, edges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::array;
    use proptest::prelude::*;

    /// Unnormalised exact flows of every kept input.
    fn raw_flows(
        layers: &[Array2<f64>],
        target: usize,
        causal: bool,
        algorithm: MaxFlowAlgorithm,
    ) -> Result<Array1<f64>> {
        let n = layers[0].nrows();
        let kept = if causal { target + 1 } else { n };
        let singletons: Vec<[usize; 2]> = (0..kept).map(|k| [k, k + 1]).collect();
        let row = attention_flow_segments(layers, target, causal, &singletons, algorithm)?;
        assert!(row.is_exact());
        Ok(Array1::from(row.segment_flows))
    }

    /// The paper's graph, independently built: every layer 0..=L and every token, one max-flow
    /// from (L, target) into a super-sink fed by the bottom nodes of `sinks` (uncapped edges:
    /// the source's out-capacity is 1).
    fn reference_flow(layers: &[Array2<f64>], target: usize, sinks: &[usize]) -> f64 {
        let aug = augmented(layers).unwrap();
        let n = aug[0].nrows();
        let mut g = DiGraph::<(), f64>::new();
        let nodes: Vec<Vec<NodeIndex>> =
            (0..=aug.len()).map(|_| (0..n).map(|_| g.add_node(())).collect()).collect();
        for (l, a) in aug.iter().enumerate() {
            for q in 0..n {
                for k in 0..n {
                    if a[[q, k]] > 0.0 {
                        g.add_edge(nodes[l + 1][q], nodes[l][k], a[[q, k]]);
                    }
                }
            }
        }
        let sink = g.add_node(());
        for &j in sinks {
            g.add_edge(nodes[0][j], sink, 1e9);
        }
        petgraph::algo::dinics(&g, nodes[aug.len()][target], sink).0
    }

    fn toy() -> Vec<Array2<f64>> {
        vec![array![[1.0, 0.0], [0.5, 0.5]], array![[0.5, 0.5], [0.0, 1.0]]]
    }

    #[test]
    fn rollout_anchor_and_order() {
        let r = attention_rollout(&toy()).unwrap();
        let expected = array![[0.8125, 0.1875], [0.25, 0.75]];
        for (a, b) in r.iter().zip(expected.iter()) {
            assert_abs_diff_eq!(a, b, epsilon = 1e-12);
        }
        // The wrong multiplication order gives the other anchor.
        let aug = augmented(&toy()).unwrap();
        let wrong = aug[0].dot(&aug[1]);
        assert_abs_diff_eq!(wrong[[0, 0]], 0.75, epsilon = 1e-12);
        assert_abs_diff_eq!(wrong[[1, 1]], 0.8125, epsilon = 1e-12);
    }

    #[test]
    fn flow_anchor() {
        for algorithm in [MaxFlowAlgorithm::Dinics, MaxFlowAlgorithm::FordFulkerson] {
            let raw = raw_flows(&toy(), 0, false, algorithm).unwrap();
            assert_abs_diff_eq!(raw[0], 1.0, epsilon = 1e-12);
            assert_abs_diff_eq!(raw[1], 0.25, epsilon = 1e-12);
            let f = attention_flow(&toy(), 0, false, algorithm).unwrap();
            assert_abs_diff_eq!(f[0], 0.8, epsilon = 1e-12);
            assert_abs_diff_eq!(f[1], 0.2, epsilon = 1e-12);
        }
    }

    #[test]
    fn single_token_is_trivial_but_defined() {
        let one = vec![array![[1.0]], array![[1.0]]];
        assert_abs_diff_eq!(attention_rollout(&one).unwrap()[[0, 0]], 1.0);
        // Source and sink would be distinct nodes (top and bottom layer): all flow reaches it.
        let f = attention_flow(&one, 0, true, MaxFlowAlgorithm::Dinics).unwrap();
        assert_abs_diff_eq!(f[0], 1.0);
    }

    #[test]
    fn bad_inputs() {
        assert!(matches!(attention_rollout(&[]), Err(Error::InvalidArgument { .. })));
        let mixed = vec![Array2::<f64>::eye(2), Array2::<f64>::eye(3)];
        assert!(matches!(attention_rollout(&mixed), Err(Error::InvalidArgument { .. })));
        assert!(matches!(
            attention_flow(&toy(), 2, false, MaxFlowAlgorithm::Dinics),
            Err(Error::InvalidArgument { .. })
        ));
    }

    /// Random causal row-stochastic layers.
    fn causal_layers(raw: &[f64], layers: usize, n: usize) -> Vec<Array2<f64>> {
        (0..layers)
            .map(|l| {
                let mut a = Array2::from_shape_fn((n, n), |(i, j)| {
                    if j <= i { raw[(l * n * n + i * n + j) % raw.len()] + 1e-3 } else { 0.0 }
                });
                for mut row in a.axis_iter_mut(Axis(0)) {
                    let s = row.sum();
                    row.mapv_inplace(|v| v / s);
                }
                a
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn dinics_and_ford_fulkerson_agree(raw in proptest::collection::vec(0.0f64..1.0, 64),
                                           layers in 1usize..4, n in 1usize..6) {
            let a = causal_layers(&raw, layers, n);
            for target in 0..n {
                let d = raw_flows(&a, target, true, MaxFlowAlgorithm::Dinics).unwrap();
                let f = raw_flows(&a, target, true, MaxFlowAlgorithm::FordFulkerson).unwrap();
                for (x, y) in d.iter().zip(f.iter()) {
                    prop_assert!((x - y).abs() < 1e-9, "{x} vs {y}");
                }
                // The band restriction changes nothing: the full graph gives the same flows.
                let full = raw_flows(&a, target, false, MaxFlowAlgorithm::Dinics).unwrap();
                for (x, y) in d.iter().zip(full.iter()) {
                    prop_assert!((x - y).abs() < 1e-9, "band {x} vs full {y}");
                }
                // And both equal one max-flow per input on the paper's whole graph.
                for (j, x) in d.iter().enumerate() {
                    let r = reference_flow(&a, target, &[j]);
                    prop_assert!((x - r).abs() < 1e-9, "band {x} vs whole graph {r}");
                }
            }
        }

        #[test]
        fn one_layer_flow_equals_the_augmented_attention(raw in proptest::collection::vec(0.0f64..1.0, 36),
                                                        n in 1usize..6) {
            let a = causal_layers(&raw, 1, n);
            let aug = augmented(&a).unwrap();
            for target in 0..n {
                let raw_flow = raw_flows(&a, target, true, MaxFlowAlgorithm::Dinics).unwrap();
                for j in 0..=target {
                    prop_assert!((raw_flow[j] - aug[0][[target, j]]).abs() < 1e-9);
                }
            }
        }

        #[test]
        fn rollout_row_is_the_row_of_the_rollout(raw in proptest::collection::vec(0.0f64..1.0, 64),
                                                 layers in 1usize..5, n in 1usize..7) {
            let a = causal_layers(&raw, layers, n);
            let r = attention_rollout(&a).unwrap();
            for target in 0..n {
                let row = rollout_row(&a, target).unwrap();
                for (x, y) in row.iter().zip(r.row(target)) {
                    prop_assert!((x - y).abs() < 1e-12, "{x} vs {y}");
                }
            }
        }

        /// Contraction only removes cuts: every coarsened segment flow bounds the exact
        /// max-flow into the segment's inputs from above, which bounds each token's own flow.
        #[test]
        fn coarsened_flow_is_an_upper_bound(raw in proptest::collection::vec(0.0f64..1.0, 97),
                                            layers in 1usize..4, n in 2usize..9, count in 1usize..6) {
            let a = causal_layers(&raw, layers, n);
            let target = n - 1;
            let segments = flow_segments(n, target, count);
            let row = attention_flow_segments(&a, target, true, &segments, MaxFlowAlgorithm::Dinics).unwrap();
            let exact = raw_flows(&a, target, true, MaxFlowAlgorithm::Dinics).unwrap();
            for (s, &f) in segments.iter().zip(&row.segment_flows) {
                let members: Vec<usize> = (s[0]..s[1]).collect();
                let set_flow = reference_flow(&a, target, &members);
                prop_assert!(f >= set_flow - 1e-9, "segment {s:?}: {f} < set flow {set_flow}");
                for &k in &members {
                    prop_assert!(set_flow >= exact[k] - 1e-9);
                }
            }
            prop_assert!(row.scores.iter().all(|&x| x >= 0.0));
            prop_assert!((row.scores.sum() - 1.0).abs() < 1e-9);
        }

        /// The budget decides: a budget the whole row fits gives the exact flow, a tiny one a
        /// coarsened row that is still a distribution, with the work it reports inside it.
        #[test]
        fn budgeted_flow_is_exact_when_it_fits(raw in proptest::collection::vec(0.0f64..1.0, 97),
                                               layers in 1usize..4, n in 2usize..12) {
            let a = causal_layers(&raw, layers, n);
            let target = n - 1;
            let exact = attention_flow(&a, target, true, MaxFlowAlgorithm::Dinics).unwrap();
            let need = flow_edges(layers, n, target, true);
            let fits = attention_flow_budgeted(&a, target, true, MaxFlowAlgorithm::Dinics, need).unwrap();
            prop_assert!(fits.is_exact());
            prop_assert_eq!(fits.edges, need, "all capacities are positive: every edge is built");
            for (x, y) in fits.scores.iter().zip(exact.iter()) {
                prop_assert!((x - y).abs() < 1e-12);
            }
            let tight = attention_flow_budgeted(&a, target, true, MaxFlowAlgorithm::Dinics, 0).unwrap();
            if n > 2 {
                prop_assert!(!tight.is_exact());
                prop_assert!(tight.edges < need);
            }
            prop_assert!(tight.scores.iter().all(|&x| x >= 0.0));
            prop_assert!((tight.scores.sum() - 1.0).abs() < 1e-9);
        }

        #[test]
        fn segments_cover_the_row_with_the_target_alone(kept in 1usize..200, t in 0usize..200, count in 1usize..300) {
            let target = t % kept;
            let segments = flow_segments(kept, target, count);
            let mut next = 0;
            for s in &segments {
                prop_assert_eq!(s[0], next);
                prop_assert!(s[1] > s[0]);
                next = s[1];
            }
            prop_assert_eq!(next, kept);
            prop_assert!(segments.contains(&[target, target + 1]));
            prop_assert!(segments.len() <= count.max(3).min(kept));
            if count >= kept {
                prop_assert_eq!(segments.len(), kept);
            }
        }

        #[test]
        fn rollout_rows_are_stochastic_and_causal(raw in proptest::collection::vec(0.0f64..1.0, 64),
                                                  layers in 1usize..5, n in 1usize..7) {
            let r = attention_rollout(&causal_layers(&raw, layers, n)).unwrap();
            for (i, row) in r.axis_iter(Axis(0)).enumerate() {
                prop_assert!((row.sum() - 1.0).abs() < 1e-9);
                for j in (i + 1)..n {
                    prop_assert!(row[j] == 0.0);
                }
            }
        }
    }
}
