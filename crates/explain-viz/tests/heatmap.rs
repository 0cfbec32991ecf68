//! The labelled heatmap: labels on both axes, diverging colours for signed values, cell text
//! and tooltips, escaping, shape errors, and a PNG that renders.

use explain_viz::charts::{self, ChartOptions, Heatmap, HeatmapScale};
use explain_viz::{ColorScale, MISSING};
use explainability_core::Error;
use ndarray::{Array2, array};

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

fn labels(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn signed_values_get_a_diverging_scale_and_every_cell_a_tooltip() {
    let values = array![[1.0, -0.5, 0.0], [f64::NAN, 0.25, -1.0]];
    let svg = Heatmap::new(values)
        .rows("layer", labels("L", 2))
        .columns("position", vec!["The".into(), "▁capital".into(), "<img src=x>".into()])
        .metric("recovery")
        .to_svg(&ChartOptions::titled("patching"))
        .unwrap()
        .into_string();
    assert_eq!(count(&svg, "<rect class=\"cell"), 6);
    assert_eq!(count(&svg, "<rect class=\"cell missing\""), 1);
    // Auto picks the diverging scale: +1 is the deepest red, −1 the deepest blue, 0 white.
    let scale = ColorScale::Diverging { max_abs: 1.0 };
    assert!(svg.contains(&format!("fill=\"{}\"", scale.color(1.0))));
    assert!(svg.contains(&format!("fill=\"{}\"", scale.color(-1.0))));
    assert!(svg.contains(&format!("fill=\"{MISSING}\"")));
    assert!(svg.contains("layer L0, position ▁capital · recovery: -0.5000"));
    assert!(svg.contains(">L1</text>"));
    assert!(svg.contains("&lt;img src=x&gt;"), "labels are escaped");
    assert!(!svg.contains("<img"));
    // The legend names the metric and shows the scale's ends.
    assert!(svg.contains(">recovery</text>"));
    assert!(svg.contains(">-1.000</text>") && svg.contains(">1.000</text>"));
}

#[test]
fn non_negative_values_get_a_sequential_scale_unless_told() {
    let values = array![[0.0, 2.0]];
    let seq = Heatmap::new(values.clone()).to_svg(&ChartOptions::default()).unwrap().into_string();
    assert!(seq.contains(&format!("fill=\"{}\"", ColorScale::sequential([0.0, 2.0]).color(2.0))));
    let div = Heatmap::new(values)
        .scale(HeatmapScale::Diverging)
        .to_svg(&ChartOptions::default())
        .unwrap()
        .into_string();
    assert!(div.contains(&format!("fill=\"{}\"", ColorScale::diverging([2.0]).color(2.0))));
    assert!(div.contains(&format!("fill=\"{}\"", ColorScale::diverging([2.0]).color(0.0))));
}

#[test]
fn cell_text_is_drawn_line_by_line_and_tooltips_replace_the_default() {
    let values = array![[-0.1, -3.0]];
    let text = array![["␣Paris\n#0".to_owned(), "␣the\n#12".to_owned()]];
    let tips = array![["first <b>".to_owned(), "second".to_owned()]];
    let svg = Heatmap::new(values)
        .scale(HeatmapScale::Sequential)
        .cell_text(text)
        .tooltips(tips)
        .to_svg(&ChartOptions::default())
        .unwrap()
        .into_string();
    assert_eq!(count(&svg, "class=\"cell-label\""), 4, "two lines per cell");
    assert!(svg.contains(">#12</text>") && svg.contains(">␣Paris</text>"));
    assert!(svg.contains("<title>first &lt;b&gt;</title>"));
    assert!(!svg.contains("· value:"), "the given tooltips replace the default ones");
}

#[test]
fn long_column_labels_are_rotated_below_the_grid() {
    let tokens: Vec<String> =
        ["▁Eiffel_Tower_is", "▁located_in_the", "▁city_of_Paris"].map(String::from).to_vec();
    let svg = Heatmap::new(Array2::zeros((30, 3)))
        .rows("layer", labels("L", 30))
        .columns("position", tokens)
        .to_svg(&ChartOptions::default())
        .unwrap()
        .into_string();
    assert_eq!(count(&svg, "rotate(-60"), 3);
    let short = Heatmap::new(Array2::zeros((2, 9)))
        .columns("head", labels("H", 9))
        .to_svg(&ChartOptions::default())
        .unwrap()
        .into_string();
    assert_eq!(count(&short, "rotate(-60"), 0, "short labels stay horizontal above the grid");
    assert!(short.contains(">H8</text>"));
}

#[test]
fn mismatched_labels_or_cell_arrays_are_shape_errors() {
    let values = Array2::<f64>::zeros((2, 3));
    let rows = Heatmap::new(values.clone()).rows("layer", labels("L", 3));
    assert!(matches!(rows.to_svg(&ChartOptions::default()), Err(Error::ShapeMismatch { .. })));
    let columns = Heatmap::new(values.clone()).columns("head", labels("H", 2));
    assert!(matches!(columns.to_svg(&ChartOptions::default()), Err(Error::ShapeMismatch { .. })));
    let text = Heatmap::new(values.clone()).cell_text(Array2::from_elem((3, 2), String::new()));
    assert!(matches!(text.to_svg(&ChartOptions::default()), Err(Error::ShapeMismatch { .. })));
    let tips = Heatmap::new(values).tooltips(Array2::from_elem((2, 2), String::new()));
    assert!(matches!(tips.to_svg(&ChartOptions::default()), Err(Error::ShapeMismatch { .. })));
    let empty = Heatmap::new(Array2::zeros((0, 4))).to_svg(&ChartOptions::default()).unwrap();
    assert!(empty.as_str().contains("class=\"no-data\""));
}

#[test]
fn the_layer_head_grid_is_the_heatmap_and_renders_to_png() {
    let grid = Array2::from_shape_fn((30, 9), |(l, h)| (l as f64 - 15.0) * h as f64);
    let svg = charts::layer_head_heatmap(&grid, "DLA")
        .scale(HeatmapScale::Diverging)
        .to_svg(&ChartOptions::titled("per head"))
        .unwrap();
    let markup = svg.as_str();
    assert_eq!(count(markup, "<rect class=\"cell"), 270);
    assert!(markup.contains("layer 29, head 8 · DLA: 112.0"));
    let png = svg.to_png(svg.png_scale()).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(svg.png_scale() > 0.0 && svg.png_scale() <= 2.0);
}
