//! Attention rollout and attention flow (Abnar & Zuidema 2020, arXiv:2005.00928).
//!
//! Both start from the augmented per-layer matrices Ã_l = rownorm(Ā_l + I), where Ā_l is the
//! head mean: the identity stands for the residual connection.
//! - Rollout: R = Ã_L · … · Ã_1 (left multiplication, later layers on the left).
//! - Flow: a layered graph with nodes (layer, token), edges (l, i) → (l − 1, j) of capacity
//!   Ã_l[i][j]; the max-flow from the top node of a target token to every input node, row
//!   normalised.
//!
//! Flow is made practical by the graph's structure instead of the paper's per-pair
//! Edmonds–Karp on the whole graph: in a causal model a path from token `t` to input `j`
//! only visits tokens in `j..=t`, so each max-flow runs on that band only; the inputs of one
//! target are independent problems and run on all cores.

use ndarray::{Array1, Array2, Axis};
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

/// Ã_l = rownorm(Ā_l + I) for each layer's head-averaged pattern.
///
/// # Errors
/// [`Error::InvalidArgument`] when there are no layers or shapes disagree or are not square.
pub fn augmented(head_means: &[Array2<f64>]) -> Result<Vec<Array2<f64>>> {
    let first = head_means.first().ok_or_else(|| Error::invalid_argument("no attention layers"))?;
    let n = first.nrows();
    head_means
        .iter()
        .enumerate()
        .map(|(l, a)| {
            if a.dim() != (n, n) || n == 0 {
                return Err(Error::invalid_argument(format!(
                    "layer {l} pattern is {:?}, expected {n}×{n}",
                    a.dim()
                )));
            }
            let mut aug = a + &Array2::<f64>::eye(n);
            for mut row in aug.axis_iter_mut(Axis(0)) {
                let s = row.sum();
                if s > 0.0 {
                    row.mapv_inplace(|v| v / s);
                }
            }
            Ok(aug)
        })
        .collect()
}

/// Attention rollout R = Ã_L · … · Ã_1; row `t` says how much of token `t`'s final
/// representation traces back to each input token.
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

/// Attention flow from the top node of `target` to every input token, row-normalised.
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
    let aug = augmented(head_means)?;
    let n = aug[0].nrows();
    if target >= n {
        return Err(Error::invalid_argument(format!(
            "flow target {target} is past the input's {n} tokens"
        )));
    }
    let raw = raw_flows(&aug, target, causal, algorithm)?;
    let total: f64 = raw.sum();
    Ok(if total > 0.0 { raw / total } else { raw })
}

/// Unnormalised max-flow values from (L, target) to each (0, j).
fn raw_flows(
    aug: &[Array2<f64>],
    target: usize,
    causal: bool,
    algorithm: MaxFlowAlgorithm,
) -> Result<Array1<f64>> {
    let n = aug[0].nrows();
    let inputs: Vec<usize> = if causal { (0..=target).collect() } else { (0..n).collect() };
    let threads =
        std::thread::available_parallelism().map_or(1, |p| p.get()).min(inputs.len()).max(1);
    let mut flows = Array1::<f64>::zeros(n);
    let results: Vec<(usize, f64)> = if threads == 1 || inputs.len() < 4 {
        inputs.iter().map(|&j| (j, flow_to(aug, target, j, causal, algorithm))).collect()
    } else {
        let chunks: Vec<Vec<usize>> = (0..threads)
            .map(|t| inputs.iter().copied().skip(t).step_by(threads).collect())
            .collect();
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .iter()
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|&j| (j, flow_to(aug, target, j, causal, algorithm)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| Error::invalid_argument("an attention-flow worker panicked"))
                })
                .collect::<Result<Vec<_>>>()
                .map(|parts| parts.into_iter().flatten().collect())
        })?
    };
    for (j, f) in results {
        flows[j] = f;
    }
    Ok(flows)
}

/// Max-flow from (L, target) to (0, input) on the band of tokens that paths can visit.
fn flow_to(
    aug: &[Array2<f64>],
    target: usize,
    input: usize,
    causal: bool,
    algorithm: MaxFlowAlgorithm,
) -> f64 {
    let n = aug[0].nrows();
    let tokens: Vec<usize> = if causal { (input..=target).collect() } else { (0..n).collect() };
    let width = tokens.len();
    let layers = aug.len();
    let mut graph: DiGraph<(), f64> =
        DiGraph::with_capacity((layers + 1) * width, layers * width * width);
    // Node (l, k) for layer l in 0..=L and band position k.
    let nodes: Vec<Vec<NodeIndex>> =
        (0..=layers).map(|_| (0..width).map(|_| graph.add_node(())).collect()).collect();
    for (l, a) in aug.iter().enumerate() {
        // Ã_{l+1} connects layer l + 1 (queries) to layer l (keys).
        for (qi, &q) in tokens.iter().enumerate() {
            for (ki, &k) in tokens.iter().enumerate() {
                let capacity = a[[q, k]];
                if capacity > 0.0 {
                    graph.add_edge(nodes[l + 1][qi], nodes[l][ki], capacity);
                }
            }
        }
    }
    let source_pos = tokens.iter().position(|&t| t == target).unwrap_or(0);
    let sink_pos = tokens.iter().position(|&t| t == input).unwrap_or(0);
    let source = nodes[layers][source_pos];
    let sink = nodes[0][sink_pos];
    if source == sink {
        return 0.0;
    }
    match algorithm {
        MaxFlowAlgorithm::Dinics => petgraph::algo::dinics(&graph, source, sink).0,
        MaxFlowAlgorithm::FordFulkerson => petgraph::algo::ford_fulkerson(&graph, source, sink).0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use approx::assert_abs_diff_eq;
    use ndarray::array;
    use proptest::prelude::*;

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
            let aug = augmented(&toy()).unwrap();
            let raw = raw_flows(&aug, 0, false, algorithm).unwrap();
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
            let aug = augmented(&a).unwrap();
            for target in 0..n {
                let d = raw_flows(&aug, target, true, MaxFlowAlgorithm::Dinics).unwrap();
                let f = raw_flows(&aug, target, true, MaxFlowAlgorithm::FordFulkerson).unwrap();
                for (x, y) in d.iter().zip(f.iter()) {
                    prop_assert!((x - y).abs() < 1e-9, "{x} vs {y}");
                }
                // The band restriction changes nothing: the full graph gives the same flows.
                let full = raw_flows(&aug, target, false, MaxFlowAlgorithm::Dinics).unwrap();
                for (x, y) in d.iter().zip(full.iter()) {
                    prop_assert!((x - y).abs() < 1e-9, "band {x} vs full {y}");
                }
            }
        }

        #[test]
        fn one_layer_flow_equals_the_augmented_attention(raw in proptest::collection::vec(0.0f64..1.0, 36),
                                                        n in 1usize..6) {
            let a = causal_layers(&raw, 1, n);
            let aug = augmented(&a).unwrap();
            for target in 0..n {
                let raw_flow = raw_flows(&aug, target, true, MaxFlowAlgorithm::Dinics).unwrap();
                for j in 0..n {
                    prop_assert!((raw_flow[j] - aug[0][[target, j]]).abs() < 1e-9);
                }
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
