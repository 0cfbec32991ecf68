//! Drawing [`ExplanationGraph`]s as SVG without Graphviz: a deterministic circular layout for
//! the interaction network (tokens clockwise in reading order from the top) and a layered
//! layout for the token × layer graphs (input layer at the bottom, one column per position).

use petgraph::visit::EdgeRef;

use crate::color::ColorScale;
use crate::graph::{ExplanationGraph, GraphKind};
use crate::svg::{Canvas, Svg, TextStyle};
use crate::text::{display_token, format_score, truncate};

/// Options for [`ExplanationGraph::to_svg`].
#[derive(Debug, Clone, PartialEq)]
pub struct GraphDrawing {
    /// Title drawn at the top (default: the graph kind's name).
    pub title: Option<String>,
    /// At most this many edges are drawn, the strongest ones (a caption states how many were
    /// left out). Default 2,000.
    pub max_edges: usize,
    /// Token labels are truncated to this display width (CJK characters count 2). Default 12.
    pub max_label_width: usize,
}

impl Default for GraphDrawing {
    fn default() -> Self {
        Self { title: None, max_edges: 2000, max_label_width: 12 }
    }
}

impl ExplanationGraph {
    /// Draws the graph as SVG. Nodes are coloured by importance (grey when NaN) and carry a
    /// hover tooltip with token, position, layer and importance; edges are drawn with opacity
    /// and width proportional to weight, the strongest `max_edges` only.
    pub fn to_svg(&self, drawing: &GraphDrawing) -> Svg {
        let title = drawing.title.clone().unwrap_or_else(|| self.kind().name().to_owned());
        let n = self.n_tokens();
        let positions: Vec<(f64, f64)>;
        let (width, height);
        match self.kind() {
            GraphKind::Interaction => {
                let radius = (n as f64 * 9.0).clamp(120.0, 2000.0);
                let margin = 110.0;
                width = 2.0 * (radius + margin);
                height = width + 30.0;
                let (cx, cy) = (width / 2.0, height / 2.0 + 15.0);
                positions = (0..n)
                    .map(|p| {
                        let angle = std::f64::consts::TAU * p as f64 / n.max(1) as f64
                            - std::f64::consts::FRAC_PI_2;
                        (cx + radius * angle.cos(), cy + radius * angle.sin())
                    })
                    .collect();
            }
            GraphKind::LayeredAttention | GraphKind::AttentionFlow => {
                let dx = 46.0;
                let dy = 38.0;
                let left = 60.0;
                let top = 50.0;
                width = left + dx * n.max(1) as f64 + 20.0;
                height = top + dy * self.n_layers() as f64 + 110.0;
                positions = self
                    .graph()
                    .node_weights()
                    .map(|node| {
                        let layer = node.layer.unwrap_or(0);
                        (
                            left + dx * (node.position as f64 + 0.5),
                            top + dy * (self.n_layers() - layer) as f64,
                        )
                    })
                    .collect();
            }
        }
        let mut canvas = Canvas::new(width, height, &title);
        canvas.heading(&title);
        if n == 0 {
            canvas.no_data("no tokens");
            return canvas.finish();
        }
        let graph = self.graph();
        let interaction = self.kind() == GraphKind::Interaction;
        if interaction {
            canvas.arrow_marker();
        }
        // Strongest edges first to choose, then drawn weakest first so strong ones lie on top.
        let mut edges: Vec<_> = graph.edge_references().collect();
        edges.sort_by(|a, b| b.weight().total_cmp(a.weight()).then(a.id().cmp(&b.id())));
        let left_out = edges.len().saturating_sub(drawing.max_edges);
        edges.truncate(drawing.max_edges);
        let max_weight = edges.first().map_or(1.0, |e| *e.weight()).max(f64::MIN_POSITIVE);
        let (cx, cy) = (width / 2.0, height / 2.0 + 15.0);
        for edge in edges.iter().rev() {
            let (s, t) = (edge.source().index(), edge.target().index());
            let (p, q) = (positions[s], positions[t]);
            let strength = edge.weight() / max_weight;
            let d = if interaction {
                // A quadratic curve bent toward the centre, so chords do not overlap.
                let (mx, my) = ((p.0 + q.0) / 2.0, (p.1 + q.1) / 2.0);
                let (bx, by) = (mx + (cx - mx) * 0.45, my + (cy - my) * 0.45);
                format!("M {:.1} {:.1} Q {bx:.1} {by:.1} {:.1} {:.1}", p.0, p.1, q.0, q.1)
            } else {
                format!("M {:.1} {:.1} L {:.1} {:.1}", p.0, p.1 - 7.0, q.0, q.1 + 7.0)
            };
            let tip = format!(
                "{} → {}: {}",
                self.node_label(edge.source()),
                self.node_label(edge.target()),
                format_score(*edge.weight())
            );
            canvas.path(
                "edge",
                &d,
                "#555555",
                0.6 + 2.4 * strength,
                0.15 + 0.75 * strength,
                interaction,
                Some(&tip),
            );
        }
        let scale: ColorScale = self.importance_scale();
        let max_abs = graph
            .node_weights()
            .map(|n| n.importance.abs())
            .filter(|v| v.is_finite())
            .fold(0.0_f64, f64::max);
        for (index, node) in graph.node_indices().zip(graph.node_weights()) {
            let (x, y) = positions[index.index()];
            let r = if interaction && max_abs > 0.0 && node.importance.is_finite() {
                5.0 + 9.0 * node.importance.abs() / max_abs
            } else if interaction {
                6.0
            } else {
                7.0
            };
            let tip = format!(
                "{} (position {}{}): {}",
                node.token,
                node.position,
                node.layer.map(|l| format!(", layer {l}")).unwrap_or_default(),
                format_score(node.importance)
            );
            let class = if node.importance.is_nan() { "node missing" } else { "node" };
            canvas.circle(class, x, y, r, &scale.color(node.importance), "#333333", Some(&tip));
            let shown = display_token(&node.token);
            let label = truncate(&shown, drawing.max_label_width);
            if interaction {
                let (dx, dy) = (x - cx, y - cy);
                let len = (dx * dx + dy * dy).sqrt().max(1.0);
                let (lx, ly) = (x + dx / len * (r + 6.0), y + dy / len * (r + 6.0) + 4.0);
                let anchor = if dx.abs() < 1.0 {
                    "middle"
                } else if dx > 0.0 {
                    "start"
                } else {
                    "end"
                };
                canvas.text_with_tooltip(lx, ly, &label, &node.token, TextStyle::new(11.0, anchor));
            } else if node.layer == Some(0) {
                canvas.text_with_tooltip(
                    x + 3.0,
                    y + 16.0,
                    &label,
                    &node.token,
                    TextStyle::new(11.0, "end").rotated(-55.0),
                );
            }
        }
        if !interaction {
            for layer in 0..=self.n_layers() {
                let y = positions[layer * n].1 + 4.0;
                let name = if layer == 0 { "in".to_owned() } else { format!("L{}", layer - 1) };
                canvas.text(50.0, y, &name, TextStyle::new(10.0, "end").fill("#555555"));
            }
        }
        if left_out > 0 {
            canvas.text(
                10.0,
                height - 8.0,
                &format!("{left_out} weaker edges not drawn"),
                TextStyle::new(10.0, "start").fill("#777777").class("caption"),
            );
        }
        canvas.finish()
    }
}
