//! Explanation graphs on petgraph: the token interaction network, the layered attention graph
//! (token × layer) and the attention-flow graph, with queries (strongest paths, in/out weight,
//! maximum flow).
//!
//! Every graph is built so that edges go from a lower to a higher node index (earlier token to
//! later token, lower layer to higher layer): the graphs are acyclic and node-index order is a
//! topological order, which the path queries rely on.

use explainability_core::{Error, Explanation, Result};
use ndarray::{Array2, Array3, ArrayView2};
use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use serde::Serialize;

/// Which construction produced a graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphKind {
    /// Nodes are tokens; edges follow an [`EdgeRule`].
    Interaction,
    /// Nodes are (layer, token); edges carry attention between consecutive layers.
    LayeredAttention,
    /// Nodes are (layer, token); edges carry residual-augmented attention, the network on
    /// which attention flow is a maximum flow (Abnar & Zuidema 2020, arXiv:2005.00928).
    AttentionFlow,
}

impl GraphKind {
    /// A short human-readable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Interaction => "token interaction network",
            Self::LayeredAttention => "layered attention graph",
            Self::AttentionFlow => "attention flow graph",
        }
    }
}

/// A node: one token, or one token at one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenNode {
    /// The token's text, as the tokenizer gave it.
    pub token: String,
    /// Position in the input (0-based). Repeated tokens stay separate nodes.
    pub position: usize,
    /// Layer for layered graphs: 0 is the input (embeddings), `l + 1` the output of block `l`;
    /// `None` in the interaction network.
    pub layer: Option<usize>,
    /// The node's importance (see each constructor); NaN when undefined or missing.
    pub importance: f64,
}

/// How the interaction network decides which token pairs are connected.
#[derive(Debug, Clone, Copy)]
pub enum EdgeRule<'a> {
    /// An edge between tokens `i < j` when `|sᵢ · sⱼ| ≥ threshold`, weighted `|sᵢ · sⱼ|`
    /// (the source document's rule: two important tokens interact). NaN scores give no edge.
    ImportanceProduct {
        /// The smallest product that makes an edge.
        threshold: f64,
    },
    /// An edge between tokens `i < j` when `max(A[j, i], A[i, j]) ≥ threshold`, weighted
    /// by that maximum, with `A[query, key]` an attention matrix (for causal attention the
    /// weight is `A[j, i]`: how much the later token attends to the earlier one).
    Attention {
        /// The `[seq, seq]` attention matrix, rows are queries.
        matrix: &'a Array2<f64>,
        /// The smallest attention weight that makes an edge.
        threshold: f64,
    },
}

/// Which nodes a path may end at in [`ExplanationGraph::top_paths`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathEnds {
    /// Any node reachable from the start (paths of one edge included).
    Anywhere,
    /// Only nodes without outgoing edges (the top layer of a layered graph).
    Sinks,
}

/// A path found by [`ExplanationGraph::top_paths`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightedPath {
    /// Node indices from start to end.
    #[serde(serialize_with = "serialize_indices")]
    pub nodes: Vec<NodeIndex>,
    /// Product of the edge weights along the path.
    pub strength: f64,
}

fn serialize_indices<S: serde::Serializer>(
    nodes: &[NodeIndex],
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_seq(nodes.iter().map(|n| n.index()))
}

/// A directed acyclic explanation graph on petgraph; edge weights are non-negative `f64`.
#[derive(Debug, Clone)]
pub struct ExplanationGraph {
    kind: GraphKind,
    graph: DiGraph<TokenNode, f64>,
    n_tokens: usize,
    n_layers: usize,
}

fn check_len(what: &str, len: usize, expected: usize) -> Result<()> {
    if len == expected {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            what: what.to_owned(),
            expected: format!("{expected} values (one per token)"),
            actual: vec![len as i64],
        })
    }
}

fn check_threshold(threshold: f64) -> Result<()> {
    if threshold.is_finite() && threshold >= 0.0 {
        Ok(())
    } else {
        Err(Error::invalid_argument(format!(
            "edge threshold must be finite and non-negative, got {threshold}"
        )))
    }
}

fn shape_i64(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

fn check_attention(attention: &Array3<f64>, n: usize) -> Result<()> {
    let shape = attention.shape();
    if shape[1] != n || shape[2] != n {
        return Err(Error::ShapeMismatch {
            what: "attention".into(),
            expected: format!("[layers, {n}, {n}] (query × key per layer)"),
            actual: shape_i64(shape),
        });
    }
    Ok(())
}

/// A finite, non-negative weight or nothing.
fn weight(value: f64) -> Option<f64> {
    (value.is_finite() && value >= 0.0).then_some(value)
}

impl ExplanationGraph {
    /// The token interaction network: one node per position (importance = the score), edges
    /// by `rule`. Empty `tokens` give an empty graph.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `scores` (or the attention matrix) does not match
    /// `tokens`; [`Error::InvalidArgument`] for a negative or non-finite threshold.
    pub fn interaction_network(
        tokens: &[String],
        scores: &[f64],
        rule: EdgeRule<'_>,
    ) -> Result<Self> {
        let n = tokens.len();
        check_len("scores", scores.len(), n)?;
        let mut graph = DiGraph::with_capacity(n, n);
        for (position, (token, &importance)) in tokens.iter().zip(scores).enumerate() {
            graph.add_node(TokenNode { token: token.clone(), position, layer: None, importance });
        }
        let edge_weight: Box<dyn Fn(usize, usize) -> Option<f64>> = match rule {
            EdgeRule::ImportanceProduct { threshold } => {
                check_threshold(threshold)?;
                Box::new(move |i, j| {
                    weight((scores[i] * scores[j]).abs()).filter(|&w| w >= threshold && w > 0.0)
                })
            }
            EdgeRule::Attention { matrix, threshold } => {
                check_threshold(threshold)?;
                if matrix.shape() != [n, n] {
                    return Err(Error::ShapeMismatch {
                        what: "attention matrix".into(),
                        expected: format!("[{n}, {n}] (query × key)"),
                        actual: shape_i64(matrix.shape()),
                    });
                }
                Box::new(move |i, j| {
                    let a = weight(matrix[[j, i]]).unwrap_or(0.0);
                    let b = weight(matrix[[i, j]]).unwrap_or(0.0);
                    Some(a.max(b)).filter(|&w| w >= threshold && w > 0.0)
                })
            }
        };
        for i in 0..n {
            for j in i + 1..n {
                if let Some(w) = edge_weight(i, j) {
                    graph.add_edge(NodeIndex::new(i), NodeIndex::new(j), w);
                }
            }
        }
        Ok(Self { kind: GraphKind::Interaction, graph, n_tokens: n, n_layers: 0 })
    }

    /// The interaction network of an explanation (tokens and scores taken from it).
    ///
    /// # Errors
    /// As [`ExplanationGraph::interaction_network`].
    pub fn from_explanation(explanation: &Explanation, rule: EdgeRule<'_>) -> Result<Self> {
        let scores: Vec<f64> = explanation.scores.iter().copied().collect();
        Self::interaction_network(&explanation.tokens, &scores, rule)
    }

    /// The layered attention graph: nodes `(layer, position)` for layers `0..=L` (0 = input,
    /// `l + 1` = output of block `l`), and an edge `(l, key) → (l + 1, query)` weighted
    /// `attention[l, query, key]` when at least `threshold`. `attention` is `[L, seq, seq]`,
    /// usually averaged over heads. A node's importance is the mean attention its position
    /// receives in the block above, `Σ_q A[l, q, p] / seq`; NaN on the top layer.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `attention` is not `[L, seq, seq]` for `seq =
    /// tokens.len()`; [`Error::InvalidArgument`] for a negative or non-finite threshold.
    pub fn layered_attention(
        tokens: &[String],
        attention: &Array3<f64>,
        threshold: f64,
    ) -> Result<Self> {
        check_threshold(threshold)?;
        check_attention(attention, tokens.len())?;
        let n = tokens.len();
        let layers: Vec<ArrayView2<'_, f64>> = attention.outer_iter().collect();
        let importance = |l: usize, p: usize| -> f64 {
            match layers.get(l) {
                Some(a) if n > 0 => {
                    a.column(p).iter().filter(|v| v.is_finite()).sum::<f64>() / n as f64
                }
                _ => f64::NAN,
            }
        };
        let matrices: Vec<Array2<f64>> = layers.iter().map(|a| a.to_owned()).collect();
        Ok(Self::layered(GraphKind::LayeredAttention, tokens, &matrices, threshold, importance))
    }

    /// The attention-flow graph (Abnar & Zuidema 2020, arXiv:2005.00928): the layered graph
    /// of the residual-augmented attention `Â_l = 0.5·A_l + 0.5·I`, rows renormalised (NaN
    /// entries count as 0). A node's importance is its share of the `target` position's
    /// rollout: `(Â_{L-1} ⋯ Â_l)[target, p]` at layer `l`, so layer 0 holds the attention
    /// rollout of `target` and the top layer is one-hot on `target`. Maximum flow from an input
    /// node to the target's top node ([`ExplanationGraph::max_flow`]) is attention flow.
    ///
    /// # Errors
    /// As [`ExplanationGraph::layered_attention`], plus [`Error::InvalidArgument`] when
    /// `target` is not a position of `tokens`.
    pub fn attention_flow(
        tokens: &[String],
        attention: &Array3<f64>,
        target: usize,
        threshold: f64,
    ) -> Result<Self> {
        check_threshold(threshold)?;
        check_attention(attention, tokens.len())?;
        let n = tokens.len();
        if target >= n {
            return Err(Error::invalid_argument(format!(
                "target position {target} is outside the {n} tokens"
            )));
        }
        let augmented: Vec<Array2<f64>> = attention
            .outer_iter()
            .map(|a| {
                let mut m = Array2::<f64>::zeros((n, n));
                for q in 0..n {
                    for k in 0..n {
                        let v = weight(a[[q, k]]).unwrap_or(0.0);
                        m[[q, k]] = 0.5 * v + if q == k { 0.5 } else { 0.0 };
                    }
                    let sum: f64 = m.row(q).sum();
                    if sum > 0.0 {
                        m.row_mut(q).mapv_inplace(|v| v / sum);
                    }
                }
                m
            })
            .collect();
        // Back-propagate the one-hot target row through the layers: relevance[l] = e_t·Â_{L-1}⋯Â_l.
        let n_layers = augmented.len();
        let mut relevance = vec![vec![0.0; n]; n_layers + 1];
        relevance[n_layers][target] = 1.0;
        for l in (0..n_layers).rev() {
            let above = relevance[l + 1].clone();
            for (q, r) in above.iter().enumerate() {
                if *r != 0.0 {
                    for k in 0..n {
                        relevance[l][k] += r * augmented[l][[q, k]];
                    }
                }
            }
        }
        let importance = |l: usize, p: usize| relevance[l][p];
        Ok(Self::layered(GraphKind::AttentionFlow, tokens, &augmented, threshold, importance))
    }

    fn layered(
        kind: GraphKind,
        tokens: &[String],
        matrices: &[Array2<f64>],
        threshold: f64,
        importance: impl Fn(usize, usize) -> f64,
    ) -> Self {
        let n = tokens.len();
        let n_layers = matrices.len();
        // Edges are not reserved: a threshold usually keeps a small share of the n² per layer.
        let mut graph = DiGraph::with_capacity(n * (n_layers + 1), 0);
        for layer in 0..=n_layers {
            for (position, token) in tokens.iter().enumerate() {
                graph.add_node(TokenNode {
                    token: token.clone(),
                    position,
                    layer: Some(layer),
                    importance: importance(layer, position),
                });
            }
        }
        for (l, a) in matrices.iter().enumerate() {
            for q in 0..n {
                for k in 0..n {
                    if let Some(w) = weight(a[[q, k]]).filter(|&w| w >= threshold && w > 0.0) {
                        graph.add_edge(
                            NodeIndex::new(l * n + k),
                            NodeIndex::new((l + 1) * n + q),
                            w,
                        );
                    }
                }
            }
        }
        Self { kind, graph, n_tokens: n, n_layers }
    }

    /// Which construction produced the graph.
    pub fn kind(&self) -> GraphKind {
        self.kind
    }

    /// The underlying petgraph graph (node weights [`TokenNode`], edge weights `f64`).
    pub fn graph(&self) -> &DiGraph<TokenNode, f64> {
        &self.graph
    }

    /// Number of token positions.
    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    /// Number of attention blocks of a layered graph (it has `n_layers + 1` node layers); 0
    /// for the interaction network.
    pub fn n_layers(&self) -> usize {
        self.n_layers
    }

    /// The node of `position` (interaction network: `layer` must be `None`; layered graphs:
    /// `Some(0..=n_layers)`), or `None` when there is no such node.
    pub fn node(&self, position: usize, layer: Option<usize>) -> Option<NodeIndex> {
        if position >= self.n_tokens {
            return None;
        }
        match (self.kind, layer) {
            (GraphKind::Interaction, None) => Some(NodeIndex::new(position)),
            (GraphKind::LayeredAttention | GraphKind::AttentionFlow, Some(l))
                if l <= self.n_layers =>
            {
                Some(NodeIndex::new(l * self.n_tokens + position))
            }
            _ => None,
        }
    }

    fn check_node(&self, node: NodeIndex) -> Result<()> {
        if node.index() < self.graph.node_count() {
            Ok(())
        } else {
            Err(Error::invalid_argument(format!(
                "node {} does not exist (the graph has {} nodes)",
                node.index(),
                self.graph.node_count()
            )))
        }
    }

    /// Sum of the weights of the edges into `node`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a node index outside the graph.
    pub fn in_weight(&self, node: NodeIndex) -> Result<f64> {
        self.check_node(node)?;
        Ok(self.graph.edges_directed(node, Direction::Incoming).map(|e| *e.weight()).sum())
    }

    /// Sum of the weights of the edges out of `node`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a node index outside the graph.
    pub fn out_weight(&self, node: NodeIndex) -> Result<f64> {
        self.check_node(node)?;
        Ok(self.graph.edges_directed(node, Direction::Outgoing).map(|e| *e.weight()).sum())
    }

    /// The `k` strongest paths starting at `from`, strength = product of edge weights, ending
    /// where `ends` allows; strongest first (ties: lower end node, then lexicographic). Exact:
    /// a k-best dynamic programme over the topological (node-index) order, `O(E·k log k)`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a node index outside the graph.
    pub fn top_paths(
        &self,
        from: NodeIndex,
        k: usize,
        ends: PathEnds,
    ) -> Result<Vec<WeightedPath>> {
        self.check_node(from)?;
        let n = self.graph.node_count();
        // best[v]: up to k (strength, predecessor node, predecessor's rank) for paths from → v.
        let mut best: Vec<Vec<(f64, usize, usize)>> = vec![Vec::new(); n];
        if k == 0 {
            return Ok(Vec::new());
        }
        best[from.index()].push((1.0, usize::MAX, 0));
        for v in from.index() + 1..n {
            let mut candidates: Vec<(f64, usize, usize)> = Vec::new();
            for edge in self.graph.edges_directed(NodeIndex::new(v), Direction::Incoming) {
                let u = edge.source().index();
                for (rank, &(strength, _, _)) in best[u].iter().enumerate() {
                    candidates.push((strength * edge.weight(), u, rank));
                }
            }
            candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            candidates.truncate(k);
            best[v] = candidates;
        }
        let mut ends_found: Vec<(f64, usize, usize)> = Vec::new();
        for (v, paths) in best.iter().enumerate().skip(from.index() + 1) {
            let node = NodeIndex::new(v);
            if ends == PathEnds::Sinks
                && self.graph.edges_directed(node, Direction::Outgoing).next().is_some()
            {
                continue;
            }
            ends_found.extend(paths.iter().enumerate().map(|(rank, b)| (b.0, v, rank)));
        }
        ends_found.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        ends_found.truncate(k);
        Ok(ends_found
            .into_iter()
            .map(|(strength, mut v, mut rank)| {
                let mut nodes = vec![NodeIndex::new(v)];
                while v != from.index() {
                    let (_, u, r) = best[v][rank];
                    nodes.push(NodeIndex::new(u));
                    (v, rank) = (u, r);
                }
                nodes.reverse();
                WeightedPath { nodes, strength }
            })
            .collect())
    }

    /// Maximum flow from `source` to `sink` with edge weights as capacities (petgraph's
    /// Dinic algorithm). On an [`GraphKind::AttentionFlow`] graph, from input node `(0, p)` to
    /// the target's top node, this is the attention flow of position `p`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a node index outside the graph.
    pub fn max_flow(&self, source: NodeIndex, sink: NodeIndex) -> Result<f64> {
        self.check_node(source)?;
        self.check_node(sink)?;
        if source == sink {
            return Ok(0.0);
        }
        Ok(petgraph::algo::dinics(&self.graph, source, sink).0)
    }

    /// A label for a node: `token` or `token @L3`.
    pub fn node_label(&self, node: NodeIndex) -> String {
        match self.graph.node_weight(node) {
            Some(TokenNode { token, layer: Some(l), .. }) => format!("{token} @L{l}"),
            Some(TokenNode { token, .. }) => token.clone(),
            None => String::new(),
        }
    }
}
