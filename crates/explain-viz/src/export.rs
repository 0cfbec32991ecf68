//! Exports of [`ExplanationGraph`]: Graphviz DOT, GraphML and JSON node-link (the layout of
//! networkx's `node_link_data`: `directed`, `multigraph`, `graph`, `nodes`, `links`).

use std::fmt::Write as _;
use std::path::Path;

use explainability_core::{Error, Result};
use petgraph::visit::EdgeRef;
use serde_json::{Value, json};

use crate::color::ColorScale;
use crate::graph::{ExplanationGraph, GraphKind};
use crate::text::{FONT_FAMILY, display_token, escape_xml, format_score, quote_dot};

/// A number for JSON: finite values as numbers, NaN and infinities as `null`.
fn json_number(value: f64) -> Value {
    if value.is_finite() { json!(value) } else { Value::Null }
}

impl ExplanationGraph {
    /// Graphviz DOT. Nodes are filled by importance (diverging blue–white–red for the
    /// interaction network, sequential for layered graphs; grey when NaN), edges are drawn
    /// thicker for larger weights; layered graphs put each layer on one rank (`rank=same`),
    /// input at the bottom. All labels are quoted and escaped.
    pub fn to_dot(&self) -> String {
        let graph = self.graph();
        let scale = self.importance_scale();
        let max_weight = graph.edge_weights().copied().fold(0.0_f64, f64::max);
        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", quote_dot(self.kind().name()));
        let rankdir = if self.kind() == GraphKind::Interaction { "LR" } else { "BT" };
        let _ = writeln!(out, "  rankdir={rankdir};");
        let _ = writeln!(
            out,
            "  node [shape=box, style=\"rounded,filled\", fontname={}];",
            quote_dot(FONT_FAMILY.split(',').next().unwrap_or("sans-serif"))
        );
        for index in graph.node_indices() {
            let node = &graph[index];
            let label =
                format!("{}\n{}", display_token(&node.token), format_score(node.importance));
            let tooltip = format!(
                "{} (position {}{}): {}",
                node.token,
                node.position,
                node.layer.map(|l| format!(", layer {l}")).unwrap_or_default(),
                format_score(node.importance)
            );
            let _ = writeln!(
                out,
                "  n{} [label={}, tooltip={}, fillcolor={}];",
                index.index(),
                quote_dot(&label),
                quote_dot(&tooltip),
                quote_dot(&scale.color(node.importance))
            );
        }
        if self.kind() != GraphKind::Interaction {
            for layer in 0..=self.n_layers() {
                let members: Vec<String> = (0..self.n_tokens())
                    .filter_map(|p| self.node(p, Some(layer)))
                    .map(|n| format!("n{}", n.index()))
                    .collect();
                let _ = writeln!(out, "  {{ rank=same; {} }}", members.join("; "));
            }
        }
        for edge in graph.edge_references() {
            let w = *edge.weight();
            let pen = if max_weight > 0.0 { 0.5 + 3.5 * w / max_weight } else { 1.0 };
            let _ = writeln!(
                out,
                "  n{} -> n{} [weight={w}, penwidth={pen:.2}, tooltip={}];",
                edge.source().index(),
                edge.target().index(),
                quote_dot(&format_score(w))
            );
        }
        out.push_str("}\n");
        out
    }

    /// GraphML (XML) with node attributes `token`, `position`, `layer` (−1 in the interaction
    /// network), `importance` (`NaN` when missing) and the edge attribute `weight`.
    pub fn to_graphml(&self) -> String {
        let graph = self.graph();
        let mut out = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <graphml xmlns=\"http://graphml.graphdrawing.org/xmlns\">\n\
             \x20 <key id=\"token\" for=\"node\" attr.name=\"token\" attr.type=\"string\"/>\n\
             \x20 <key id=\"position\" for=\"node\" attr.name=\"position\" attr.type=\"int\"/>\n\
             \x20 <key id=\"layer\" for=\"node\" attr.name=\"layer\" attr.type=\"int\"/>\n\
             \x20 <key id=\"importance\" for=\"node\" attr.name=\"importance\" attr.type=\"double\"/>\n\
             \x20 <key id=\"weight\" for=\"edge\" attr.name=\"weight\" attr.type=\"double\"/>\n",
        );
        let _ = writeln!(
            out,
            "  <graph id=\"{}\" edgedefault=\"directed\">",
            escape_xml(self.kind().name())
        );
        for index in graph.node_indices() {
            let node = &graph[index];
            let importance = if node.importance.is_nan() {
                "NaN".to_owned()
            } else {
                format!("{}", node.importance)
            };
            let _ = writeln!(
                out,
                "    <node id=\"n{}\"><data key=\"token\">{}</data><data key=\"position\">{}</data>\
                 <data key=\"layer\">{}</data><data key=\"importance\">{}</data></node>",
                index.index(),
                escape_xml(&node.token),
                node.position,
                node.layer.map_or(-1, |l| l as i64),
                importance
            );
        }
        for (i, edge) in graph.edge_references().enumerate() {
            let _ = writeln!(
                out,
                "    <edge id=\"e{i}\" source=\"n{}\" target=\"n{}\"><data key=\"weight\">{}</data></edge>",
                edge.source().index(),
                edge.target().index(),
                edge.weight()
            );
        }
        out.push_str("  </graph>\n</graphml>\n");
        out
    }

    /// JSON node-link data (networkx `node_link_data` layout); NaN importances become `null`.
    pub fn to_json(&self) -> Value {
        let graph = self.graph();
        let nodes: Vec<Value> = graph
            .node_indices()
            .map(|index| {
                let node = &graph[index];
                json!({
                    "id": index.index(),
                    "token": node.token,
                    "position": node.position,
                    "layer": node.layer,
                    "importance": json_number(node.importance),
                })
            })
            .collect();
        let links: Vec<Value> = graph
            .edge_references()
            .map(|e| {
                json!({
                    "source": e.source().index(),
                    "target": e.target().index(),
                    "weight": json_number(*e.weight()),
                })
            })
            .collect();
        json!({
            "directed": true,
            "multigraph": false,
            "graph": {
                "kind": self.kind(),
                "name": self.kind().name(),
                "n_tokens": self.n_tokens(),
                "n_layers": self.n_layers(),
            },
            "nodes": nodes,
            "links": links,
        })
    }

    /// Writes `<stem>.dot`, `<stem>.graphml`, `<stem>.json` and `<stem>.svg` into `dir`
    /// (created when missing); returns the paths written.
    ///
    /// # Errors
    /// [`Error::Io`] when the folder or a file cannot be written.
    pub fn write_all(&self, dir: impl AsRef<Path>, stem: &str) -> Result<Vec<std::path::PathBuf>> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let json = serde_json::to_string_pretty(&self.to_json())
            .map_err(|source| Error::Json { path: dir.join(format!("{stem}.json")), source })?;
        let svg = self.to_svg(&crate::layout::GraphDrawing::default()).into_string();
        let files = [
            (format!("{stem}.dot"), self.to_dot()),
            (format!("{stem}.graphml"), self.to_graphml()),
            (format!("{stem}.json"), json),
            (format!("{stem}.svg"), format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{svg}\n")),
        ];
        let mut written = Vec::with_capacity(files.len());
        for (name, content) in files {
            let path = dir.join(name);
            std::fs::write(&path, content).map_err(|e| Error::io(&path, e))?;
            written.push(path);
        }
        Ok(written)
    }

    /// The colour scale of node importances: diverging for the interaction network (signed
    /// scores), sequential for layered graphs.
    pub(crate) fn importance_scale(&self) -> ColorScale {
        let values = self.graph().node_weights().map(|n| n.importance);
        if self.kind() == GraphKind::Interaction {
            ColorScale::diverging(values)
        } else {
            ColorScale::sequential(values)
        }
    }
}
