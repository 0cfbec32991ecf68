//! Explanation graphs: construction rules, path and flow queries against brute force and
//! hand-computed values, exports (DOT, GraphML, JSON) and drawing, bad input.

use approx::assert_abs_diff_eq;
use explain_viz::{EdgeRule, ExplanationGraph, GraphDrawing, GraphKind, NodeIndex, PathEnds};
use explainability_core::{Error, SplitMix64};
use ndarray::{Array2, Array3};
use petgraph::visit::EdgeRef;
use proptest::prelude::*;

/// Exact arithmetic on a handful of products: 1e-12 absorbs rounding only.
const EXACT: f64 = 1e-12;

fn tokens(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

fn edge_weight(graph: &ExplanationGraph, from: usize, to: usize) -> Option<f64> {
    let g = graph.graph();
    g.find_edge(NodeIndex::new(from), NodeIndex::new(to)).map(|e| g[e])
}

/// Row-stochastic causal attention `[layers, n, n]` from a seeded generator.
fn causal_attention(seed: u64, layers: usize, n: usize) -> Array3<f64> {
    let mut rng = SplitMix64::new(seed);
    let mut a = Array3::<f64>::zeros((layers, n, n));
    for l in 0..layers {
        for q in 0..n {
            let row: Vec<f64> = (0..=q).map(|_| 0.05 + rng.uniform()).collect();
            let sum: f64 = row.iter().sum();
            for (k, v) in row.iter().enumerate() {
                a[[l, q, k]] = v / sum;
            }
        }
    }
    a
}

#[test]
fn importance_product_rule_connects_important_pairs_only() {
    let t = tokens(&["a", "b", "c", "d"]);
    let graph = ExplanationGraph::interaction_network(
        &t,
        &[1.0, 0.5, f64::NAN, -2.0],
        EdgeRule::ImportanceProduct { threshold: 0.4 },
    )
    .unwrap();
    assert_eq!(graph.kind(), GraphKind::Interaction);
    assert_eq!(graph.graph().node_count(), 4);
    assert_eq!(graph.graph().edge_count(), 3, "0-1 (0.5), 0-3 (2), 1-3 (1); NaN gives none");
    assert_abs_diff_eq!(edge_weight(&graph, 0, 1).unwrap(), 0.5, epsilon = EXACT);
    assert_abs_diff_eq!(edge_weight(&graph, 0, 3).unwrap(), 2.0, epsilon = EXACT);
    assert_abs_diff_eq!(edge_weight(&graph, 1, 3).unwrap(), 1.0, epsilon = EXACT);
    assert!(graph.graph()[NodeIndex::new(2)].importance.is_nan());

    let n0 = graph.node(0, None).unwrap();
    let n3 = graph.node(3, None).unwrap();
    assert_abs_diff_eq!(graph.out_weight(n0).unwrap(), 2.5, epsilon = EXACT);
    assert_abs_diff_eq!(graph.in_weight(n3).unwrap(), 3.0, epsilon = EXACT);
    assert_eq!(graph.node(0, Some(0)), None, "the interaction network has no layers");

    let paths = graph.top_paths(n0, 3, PathEnds::Anywhere).unwrap();
    let nodes: Vec<Vec<usize>> =
        paths.iter().map(|p| p.nodes.iter().map(|n| n.index()).collect()).collect();
    assert_eq!(nodes, vec![vec![0, 3], vec![0, 1], vec![0, 1, 3]]);
    assert_abs_diff_eq!(paths[2].strength, 0.5, epsilon = EXACT);
    let to_sinks = graph.top_paths(n0, 5, PathEnds::Sinks).unwrap();
    let ends: Vec<usize> = to_sinks.iter().map(|p| p.nodes.last().unwrap().index()).collect();
    assert_eq!(ends, vec![3, 3], "only node 3 is a reachable sink");
}

#[test]
fn attention_rule_takes_the_stronger_direction() {
    let t = tokens(&["x", "y", "z"]);
    let matrix =
        Array2::from_shape_vec((3, 3), vec![1.0, 0.0, 0.0, 0.7, 0.3, 0.0, 0.1, 0.05, 0.85])
            .unwrap();
    let graph = ExplanationGraph::interaction_network(
        &t,
        &[0.0; 3],
        EdgeRule::Attention { matrix: &matrix, threshold: 0.08 },
    )
    .unwrap();
    // Edges from the earlier to the later token, weight A[later, earlier]; 0.05 < 0.08.
    assert_eq!(graph.graph().edge_count(), 2);
    assert_abs_diff_eq!(edge_weight(&graph, 0, 1).unwrap(), 0.7, epsilon = EXACT);
    assert_abs_diff_eq!(edge_weight(&graph, 0, 2).unwrap(), 0.1, epsilon = EXACT);
    assert_eq!(edge_weight(&graph, 1, 2), None);
}

#[test]
fn layered_graph_mirrors_the_attention_tensor() {
    let (layers, n) = (3, 5);
    let attention = causal_attention(11, layers, n);
    let t = tokens(&["a", "b", "a", "c", "a"]);
    let graph = ExplanationGraph::layered_attention(&t, &attention, 0.0).unwrap();
    assert_eq!(graph.graph().node_count(), (layers + 1) * n, "repeated tokens stay separate");
    assert_eq!(graph.graph().edge_count(), layers * n * (n + 1) / 2, "causal: n(n+1)/2 per layer");
    for l in 0..layers {
        for q in 0..n {
            for k in 0..=q {
                let from = graph.node(k, Some(l)).unwrap();
                let to = graph.node(q, Some(l + 1)).unwrap();
                let e = graph.graph().find_edge(from, to).unwrap();
                assert_abs_diff_eq!(graph.graph()[e], attention[[l, q, k]], epsilon = EXACT);
            }
        }
        // Importance: mean attention received in the block above.
        let received: f64 = (0..n).map(|q| attention[[l, q, 0]]).sum::<f64>() / n as f64;
        let node = &graph.graph()[graph.node(0, Some(l)).unwrap()];
        assert_abs_diff_eq!(node.importance, received, epsilon = EXACT);
    }
    assert!(graph.graph()[graph.node(0, Some(layers)).unwrap()].importance.is_nan());
    // Every query row sums to 1, so every upper node receives weight 1.
    for q in 0..n {
        let node = graph.node(q, Some(layers)).unwrap();
        assert_abs_diff_eq!(graph.in_weight(node).unwrap(), 1.0, epsilon = 1e-9);
    }
    let thresholded = ExplanationGraph::layered_attention(&t, &attention, 0.3).unwrap();
    let kept = attention.iter().filter(|&&v| v >= 0.3).count();
    assert_eq!(thresholded.graph().edge_count(), kept);
}

#[test]
fn flow_graph_holds_the_rollout_and_single_layer_flow() {
    let (layers, n) = (4, 6);
    let attention = causal_attention(5, layers, n);
    let t = tokens(&["<s>", "The", "▁cat", "▁sat", "▁on", "▁巴黎"]);
    let target = n - 1;
    let graph = ExplanationGraph::attention_flow(&t, &attention, target, 0.0).unwrap();
    // Independent rollout: R = Â_{L-1} ⋯ Â_0, Â = 0.5 A + 0.5 I (rows already sum to 1).
    let eye = Array2::<f64>::eye(n);
    let mut rollout = eye.clone();
    for l in 0..layers {
        let augmented = attention.index_axis(ndarray::Axis(0), l).mapv(|v| 0.5 * v) + &eye * 0.5;
        rollout = augmented.dot(&rollout);
    }
    let mut total = 0.0;
    for p in 0..n {
        let node = &graph.graph()[graph.node(p, Some(0)).unwrap()];
        assert_abs_diff_eq!(node.importance, rollout[[target, p]], epsilon = 1e-12);
        total += node.importance;
    }
    assert_abs_diff_eq!(total, 1.0, epsilon = 1e-12);
    let top = &graph.graph()[graph.node(target, Some(layers)).unwrap()];
    assert_abs_diff_eq!(top.importance, 1.0, epsilon = EXACT);

    // With one layer there is one path per input node, so max flow is that edge's capacity.
    let one = attention.slice(ndarray::s![0..1, .., ..]).to_owned();
    let single = ExplanationGraph::attention_flow(&t, &one, target, 0.0).unwrap();
    for k in 0..n {
        let flow = single
            .max_flow(single.node(k, Some(0)).unwrap(), single.node(target, Some(1)).unwrap())
            .unwrap();
        let expected = 0.5 * attention[[0, target, k]] + if k == target { 0.5 } else { 0.0 };
        assert_abs_diff_eq!(flow, expected, epsilon = 1e-12);
    }
    // Multi-layer flow is bounded by the total capacity into the target (1).
    let sink = graph.node(target, Some(layers)).unwrap();
    let flow = graph.max_flow(graph.node(0, Some(0)).unwrap(), sink).unwrap();
    assert!(flow > 0.0 && flow <= 1.0 + 1e-12, "flow {flow}");
}

/// All paths from `from` by depth-first enumeration (the graphs are DAGs), with strengths.
fn brute_force_paths(graph: &ExplanationGraph, from: NodeIndex, ends: PathEnds) -> Vec<f64> {
    let g = graph.graph();
    let mut out = Vec::new();
    let mut stack = vec![(from, 1.0, 0usize)];
    while let Some((node, strength, depth)) = stack.pop() {
        let is_sink = g.edges(node).next().is_none();
        if depth > 0 && (ends == PathEnds::Anywhere || is_sink) {
            out.push(strength);
        }
        for e in g.edges(node) {
            stack.push((e.target(), strength * e.weight(), depth + 1));
        }
    }
    out.sort_by(|a, b| b.total_cmp(a));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// The k-best dynamic programme finds exactly the k largest path strengths.
    #[test]
    fn top_paths_match_brute_force(
        scores in proptest::collection::vec(-2.0f64..2.0, 2..8),
        threshold in 0.0f64..1.0,
        k in 1usize..12,
        start in 0usize..8,
        sinks in any::<bool>(),
    ) {
        let t: Vec<String> = (0..scores.len()).map(|i| format!("t{i}")).collect();
        let graph = ExplanationGraph::interaction_network(
            &t, &scores, EdgeRule::ImportanceProduct { threshold }).unwrap();
        let from = NodeIndex::new(start % scores.len());
        let ends = if sinks { PathEnds::Sinks } else { PathEnds::Anywhere };
        let found = graph.top_paths(from, k, ends).unwrap();
        let expected = brute_force_paths(&graph, from, ends);
        prop_assert_eq!(found.len(), expected.len().min(k));
        for (path, strength) in found.iter().zip(&expected) {
            prop_assert!((path.strength - strength).abs() <= 1e-9 * strength.abs().max(1.0));
            // The reported strength is the product along the reported nodes.
            let product: f64 = path.nodes.windows(2).map(|w| {
                let e = graph.graph().find_edge(w[0], w[1]).unwrap();
                graph.graph()[e]
            }).product();
            prop_assert!((product - path.strength).abs() <= 1e-12 * product.abs().max(1.0));
            prop_assert_eq!(path.nodes[0], from);
        }
    }

    /// Layered graphs: every edge goes one layer up, and weights are non-negative.
    #[test]
    fn layered_edges_go_one_layer_up(seed in 0u64..1000, layers in 1usize..4, n in 1usize..6) {
        let attention = causal_attention(seed, layers, n);
        let t: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
        let graph = ExplanationGraph::attention_flow(&t, &attention, n - 1, 0.0).unwrap();
        for e in graph.graph().edge_references() {
            let (s, d) = (&graph.graph()[e.source()], &graph.graph()[e.target()]);
            prop_assert_eq!(s.layer.unwrap() + 1, d.layer.unwrap());
            prop_assert!(*e.weight() >= 0.0);
        }
    }
}

#[test]
fn exports_escape_labels_and_keep_every_node_and_edge() {
    let t = tokens(&["say \"hi\"", "<b>&", "巴黎", "back\\slash"]);
    let graph = ExplanationGraph::interaction_network(
        &t,
        &[0.9, f64::NAN, -0.8, 0.5],
        EdgeRule::ImportanceProduct { threshold: 0.1 },
    )
    .unwrap();
    let edges = graph.graph().edge_count();
    assert_eq!(edges, 3);

    let dot = graph.to_dot();
    assert!(dot.starts_with("digraph \"token interaction network\" {"));
    assert_eq!(dot.matches(" -> ").count(), edges);
    assert!(dot.contains("say \\\"hi\\\""), "quotes escaped in DOT: {dot}");
    assert!(dot.contains("back\\\\slash"));
    assert!(dot.contains("巴黎"));
    assert!(dot.contains("n/a"), "NaN importance labelled n/a");

    let graphml = graph.to_graphml();
    assert_eq!(graphml.matches("<node ").count(), 4);
    assert_eq!(graphml.matches("<edge ").count(), edges);
    assert!(graphml.contains("&lt;b&gt;&amp;"));
    assert!(!graphml.contains("<b>"));
    assert!(graphml.contains("<data key=\"importance\">NaN</data>"));

    let json = graph.to_json();
    assert_eq!(json["directed"], true);
    assert_eq!(json["nodes"].as_array().unwrap().len(), 4);
    assert_eq!(json["links"].as_array().unwrap().len(), edges);
    assert!(json["nodes"][1]["importance"].is_null(), "NaN → null");
    assert_eq!(json["nodes"][2]["token"], "巴黎");
    let reparsed: serde_json::Value = serde_json::from_str(&json.to_string()).unwrap();
    assert_eq!(reparsed, json);

    let svg = graph.to_svg(&GraphDrawing::default()).into_string();
    assert_eq!(svg.matches("<circle class=\"node").count(), 4);
    assert_eq!(svg.matches("<circle class=\"node missing\"").count(), 1);
    assert_eq!(svg.matches("<path class=\"edge\"").count(), edges);
    assert!(svg.contains("&lt;b&gt;&amp;") && !svg.contains("<b>"));
    // Directed edges end in the arrow marker the document defines.
    let start = svg.find("<marker id=\"").unwrap() + "<marker id=\"".len();
    let id = &svg[start..start + svg[start..].find('"').unwrap()];
    assert_eq!(svg.matches(&format!("marker-end=\"url(#{id})\"")).count(), edges);

    let dir = tempfile::tempdir().unwrap();
    let written = graph.write_all(dir.path(), "net").unwrap();
    assert_eq!(written.len(), 4);
    for path in written {
        assert!(std::fs::metadata(&path).unwrap().len() > 100, "{}", path.display());
    }
}

#[test]
fn drawing_caps_edges_and_says_so() {
    let n = 40;
    let attention = causal_attention(3, 2, n);
    let t: Vec<String> = (0..n).map(|i| format!("tok{i}")).collect();
    let graph = ExplanationGraph::layered_attention(&t, &attention, 0.0).unwrap();
    let drawing = GraphDrawing { max_edges: 100, ..GraphDrawing::default() };
    let svg = graph.to_svg(&drawing).into_string();
    assert_eq!(svg.matches("<path class=\"edge\"").count(), 100);
    let left_out = graph.graph().edge_count() - 100;
    assert!(svg.contains(&format!("{left_out} weaker edges not drawn")));
    assert_eq!(svg.matches("<circle class=\"node").count(), 3 * n);
    // Layer labels: the input row and one per block.
    assert!(svg.contains(">in</text>") && svg.contains(">L1</text>"));
}

#[test]
fn bad_input_gives_typed_errors_and_empty_input_an_empty_graph() {
    let t = tokens(&["a", "b"]);
    let err = ExplanationGraph::interaction_network(
        &t,
        &[1.0],
        EdgeRule::ImportanceProduct { threshold: 0.1 },
    )
    .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { ref actual, .. } if actual == &[1]), "{err}");
    let err = ExplanationGraph::interaction_network(
        &t,
        &[1.0, 2.0],
        EdgeRule::ImportanceProduct { threshold: -1.0 },
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    let square = Array2::<f64>::zeros((3, 3));
    let err = ExplanationGraph::interaction_network(
        &t,
        &[1.0, 2.0],
        EdgeRule::Attention { matrix: &square, threshold: 0.1 },
    )
    .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    let wrong = Array3::<f64>::zeros((2, 3, 3));
    assert!(matches!(
        ExplanationGraph::layered_attention(&t, &wrong, 0.0),
        Err(Error::ShapeMismatch { .. })
    ));
    let ok = Array3::<f64>::zeros((2, 2, 2));
    assert!(matches!(
        ExplanationGraph::attention_flow(&t, &ok, 2, 0.0),
        Err(Error::InvalidArgument { .. })
    ));
    let graph = ExplanationGraph::attention_flow(&t, &ok, 1, f64::NAN);
    assert!(matches!(graph, Err(Error::InvalidArgument { .. })));
    let graph = ExplanationGraph::layered_attention(&t, &ok, 0.0).unwrap();
    let outside = NodeIndex::new(99);
    assert!(matches!(graph.in_weight(outside), Err(Error::InvalidArgument { .. })));
    assert!(matches!(
        graph.top_paths(outside, 3, PathEnds::Anywhere),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        graph.max_flow(NodeIndex::new(0), outside),
        Err(Error::InvalidArgument { .. })
    ));

    // NaN attention entries are no edges; NaN scores are no edges.
    let mut nan = Array3::<f64>::zeros((1, 2, 2));
    nan[[0, 1, 0]] = f64::NAN;
    nan[[0, 1, 1]] = 1.0;
    let graph = ExplanationGraph::layered_attention(&t, &nan, 0.0).unwrap();
    assert_eq!(graph.graph().edge_count(), 1);

    let empty = ExplanationGraph::interaction_network(
        &[],
        &[],
        EdgeRule::ImportanceProduct { threshold: 0.0 },
    )
    .unwrap();
    assert_eq!(empty.graph().node_count(), 0);
    assert!(empty.to_dot().contains("digraph"));
    assert_eq!(empty.to_json()["nodes"].as_array().unwrap().len(), 0);
    assert!(empty.to_svg(&GraphDrawing::default()).as_str().contains("no tokens"));
    let empty_layers =
        ExplanationGraph::layered_attention(&[], &Array3::zeros((2, 0, 0)), 0.0).unwrap();
    assert_eq!(empty_layers.graph().node_count(), 0);
}
