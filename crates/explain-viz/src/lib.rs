//! Explanation graphs (petgraph) with DOT / GraphML / JSON export, SVG and PNG charts, and a
//! self-contained HTML report. Takes plain data, never tensors.
