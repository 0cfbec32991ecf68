//! Visualisation of explanations, from plain data (token strings, `f64` scores, `ndarray`
//! matrices), never tensors.
//!
//! - **Graphs** ([`ExplanationGraph`], on petgraph): the token interaction network (edges by
//!   an [`EdgeRule`]: product of importances or attention above a threshold), the layered
//!   attention graph (token × layer) and the attention-flow graph (Abnar & Zuidema 2020,
//!   arXiv:2005.00928). Queries: [`ExplanationGraph::top_paths`] (k strongest paths, exact on
//!   these acyclic graphs), [`ExplanationGraph::in_weight`] / [`ExplanationGraph::out_weight`],
//!   [`ExplanationGraph::max_flow`]. Exports: DOT, GraphML, JSON node-link (networkx layout),
//!   and SVG drawn with our own deterministic circular / layered layout (no Graphviz).
//! - **Charts** ([`charts`]), hand-written SVG: method comparison bars, sample × token heatmap
//!   aligned by position, attention matrix and per-head grid, layer × head grid of any metric,
//!   deletion / insertion curves, per-layer (gradient-flow) profile.
//! - **Report** ([`HtmlReport`]): one self-contained HTML file with highlighted tokens (hover
//!   shows the score), inline charts, tables and collapsible sections.
//!
//! Text handling: every model or user string is escaped ([`escape_xml`]); labels are shown
//! readable (`▁` → `␣`), truncated by display width with `…` (CJK characters count double) and
//! the full string is kept in a hover tooltip; the font list ([`FONT_FAMILY`]) falls back to
//! CJK fonts. NaN values are drawn as missing (grey), never crash and never move a colour
//! scale; empty input gives a chart saying "no data"; mismatched lengths are
//! [`explainability_core::Error::ShapeMismatch`].
//!
//! `cargo xtask browser` (a step of `cargo xtask ci`) loads a gallery of every output (the
//! `report_gallery` example) in headless Chromium: no JavaScript error, markup payloads shown
//! as text and never run, screenshots not blank.
//!
//! Every chart and graph drawing also renders to PNG ([`Svg::to_png`], [`Svg::write_png`]) with
//! resvg, pure Rust: no system library at build time; text uses the fonts installed on the
//! machine (CJK glyphs need a CJK font such as Noto CJK, as in a browser).
//!
//! # Examples
//! ```
//! use explain_viz::{EdgeRule, ExplanationGraph, HtmlReport, PathEnds, charts};
//! let tokens: Vec<String> = ["The", "▁capital", "▁of", "▁France"].map(String::from).to_vec();
//! let scores = [0.1, 0.8, -0.2, 0.9];
//! let graph = ExplanationGraph::interaction_network(
//!     &tokens, &scores, EdgeRule::ImportanceProduct { threshold: 0.05 })?;
//! let from = graph.node(1, None).ok_or_else(|| explainability_core::Error::invalid_argument("no node"))?;
//! let paths = graph.top_paths(from, 3, PathEnds::Anywhere)?;
//! assert!((paths[0].strength - 0.72).abs() < 1e-12);
//! let bars = charts::method_comparison(&tokens, &[("saliency", &scores)], &charts::ChartOptions::titled("scores"))?;
//! let mut report = HtmlReport::new("demo");
//! report.section("Graph", true).svg(&graph.to_svg(&Default::default()), "interaction network");
//! report.svg(&bars, "scores");
//! assert!(report.render().contains("<svg"));
//! # Ok::<(), explainability_core::Error>(())
//! ```

pub mod charts;
mod color;
mod export;
mod graph;
mod html;
mod layout;
mod svg;
mod text;

pub use color::{ColorScale, MISSING, NEGATIVE, POSITIVE};
pub use graph::{EdgeRule, ExplanationGraph, GraphKind, PathEnds, TokenNode, WeightedPath};
pub use html::HtmlReport;
pub use layout::GraphDrawing;
pub use petgraph::graph::NodeIndex;
pub use svg::{MAX_PNG_SIDE, Svg};
pub use text::{
    FONT_FAMILY, display_token, display_width, escape_xml, format_score, truncate, truncate_middle,
};
