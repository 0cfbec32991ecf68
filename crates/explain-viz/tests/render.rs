//! Charts and the HTML report, checked structurally: element counts, labels present,
//! escaping, CJK text, NaN drawn as missing, empty input and mismatched lengths.

use explain_viz::charts::{self, ChartOptions, HeatmapRow, Series};
use explain_viz::{HtmlReport, MISSING, NEGATIVE, POSITIVE};
use explainability_core::{Error, Explanation, Target};
use ndarray::{Array1, Array2, Array3};

fn tokens(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// No element or attribute from the data: every `<` in the output opens one of our elements.
fn assert_only_own_elements(markup: &str) {
    for tag in ["<script", "<img", "<b>", "<i>"] {
        let allowed = if tag == "<script" { 2 } else { 0 };
        assert!(count(markup, tag) <= allowed, "{tag} leaked into the output");
    }
}

const PAYLOAD: &str = "<img src=x onerror=alert(1)>";

#[test]
fn comparison_bars_per_token_with_signed_colours() {
    let t = tokens(&["The", "▁capital", "▁capital", PAYLOAD, "▁巴黎", "▁a_very_long_token_indeed"]);
    let saliency = [0.5, 0.2, 0.2, 0.1, 0.9, f64::NAN];
    let signed = [0.5, -0.2, 0.3, -0.1, 0.9, -1.0];
    let svg = charts::method_comparison(
        &t,
        &[("saliency", &saliency), ("gradient × input <b>", &signed)],
        &ChartOptions::titled("comparison"),
    )
    .unwrap()
    .into_string();
    assert_eq!(count(&svg, "<rect class=\"bar"), 12, "one bar per token and method");
    assert_eq!(count(&svg, "<rect class=\"bar missing\""), 1, "NaN drawn as missing");
    assert_eq!(count(&svg, &format!("fill=\"{POSITIVE}\"")), 5 + 3);
    assert_eq!(count(&svg, &format!("fill=\"{NEGATIVE}\"")), 3);
    assert!(svg.contains("␣巴黎"), "CJK survives, word marker made visible");
    assert!(svg.contains("␣a_very_lon…"), "long labels truncated to 12 columns");
    assert!(svg.contains("<title>▁a_very_long_token_indeed</title>"), "full token on hover");
    assert!(svg.contains("&lt;img src=x onerror=alert(1)&gt;") || svg.contains("&lt;img src=x…"));
    assert!(svg.contains("gradient × input &lt;b&gt;"));
    assert!(svg.contains("Noto Sans CJK SC"), "CJK font fallback");
    assert_only_own_elements(&svg);
    assert!(svg.contains("rotate(-60"), "labels rotated");
}

#[test]
fn comparison_of_explanations_requires_the_same_tokens() {
    let make = |method: &str, words: &[&str]| Explanation {
        method: method.into(),
        token_ids: (0..words.len() as i64).collect(),
        tokens: tokens(words),
        scores: Array1::from_elem(words.len(), 0.5),
        target: Target::argmax(),
        target_token: None,
        target_value: None,
        convergence_delta: None,
        metadata: Default::default(),
    };
    let a = make("a", &["x", "y"]);
    let b = make("b", &["x", "y"]);
    let svg = charts::compare_explanations(&[a.clone(), b], &ChartOptions::default()).unwrap();
    assert_eq!(count(svg.as_str(), "<rect class=\"bar\""), 4);
    let c = make("c", &["x", "z"]);
    assert!(matches!(
        charts::compare_explanations(&[a.clone(), c], &ChartOptions::default()),
        Err(Error::IncompatibleExplanations { .. })
    ));
    let empty = charts::compare_explanations(&[], &ChartOptions::default()).unwrap();
    assert!(empty.as_str().contains("class=\"no-data\""));

    let mut report = HtmlReport::new("r");
    report.explanation(&a);
    assert_eq!(count(&report.render(), "<span class=\"tok"), 2);
}

#[test]
fn heatmap_aligns_by_position_and_never_merges_repeated_tokens() {
    let rows = [
        HeatmapRow {
            label: "s1".into(),
            tokens: tokens(&["the", "cat", "the", "cat"]),
            scores: vec![0.1, -0.4, 0.9, f64::NAN],
        },
        HeatmapRow {
            label: "样本 <2>".into(),
            tokens: tokens(&["巴黎", "是"]),
            scores: vec![0.3, -0.2],
        },
    ];
    let svg = charts::token_heatmap(&rows, &ChartOptions::titled("heatmap")).unwrap().into_string();
    assert_eq!(count(&svg, "<rect class=\"cell"), 6, "one cell per (row, position)");
    assert_eq!(count(&svg, "<rect class=\"cell missing\""), 1);
    assert!(svg.contains("s1 · position 0 · the: 0.1000"));
    assert!(svg.contains("s1 · position 2 · the: 0.9000"), "repeated token keeps its own cell");
    assert!(svg.contains("样本 &lt;2&gt; · position 1 · 是"));
    assert!(svg.contains(&format!("fill=\"{MISSING}\"")));
    assert_only_own_elements(&svg);

    let bad = [HeatmapRow { label: "x".into(), tokens: tokens(&["a"]), scores: vec![] }];
    assert!(matches!(
        charts::token_heatmap(&bad, &ChartOptions::default()),
        Err(Error::ShapeMismatch { .. })
    ));
    let empty = charts::token_heatmap(&[], &ChartOptions::default()).unwrap();
    assert!(empty.as_str().contains("class=\"no-data\""));
}

#[test]
fn attention_charts_draw_every_cell() {
    let t = tokens(&["<s>", "a", "b", "c"]);
    let mut m = Array2::<f64>::zeros((4, 4));
    for q in 0..4 {
        for k in 0..=q {
            m[[q, k]] = 1.0 / (q + 1) as f64;
        }
    }
    m[[3, 3]] = f64::NAN;
    let svg =
        charts::attention_matrix(&t, &m, &ChartOptions::titled("attn")).unwrap().into_string();
    assert_eq!(count(&svg, "<rect class=\"cell"), 16);
    assert_eq!(count(&svg, "<rect class=\"cell missing\""), 1);
    assert!(svg.contains("&lt;s&gt; (query 0) → &lt;s&gt; (key 0): 1"));
    assert!(matches!(
        charts::attention_matrix(&t[..3], &m, &ChartOptions::default()),
        Err(Error::ShapeMismatch { .. })
    ));

    let heads = Array3::from_shape_fn((6, 4, 4), |(h, q, k)| (h + q + k) as f64);
    let svg =
        charts::attention_heads(&t, &heads, 2, &ChartOptions::default()).unwrap().into_string();
    assert_eq!(count(&svg, "<rect class=\"cell"), 6 * 16);
    for h in 0..6 {
        assert!(svg.contains(&format!(">L2 H{h}</text>")));
    }
    assert!(matches!(
        charts::attention_heads(&t, &Array3::zeros((2, 3, 3)), 0, &ChartOptions::default()),
        Err(Error::ShapeMismatch { .. })
    ));

    let grid =
        Array2::from_shape_fn((30, 9), |(l, h)| if l == h { f64::NAN } else { (l * h) as f64 });
    let svg = charts::layer_head_grid(&grid, "entropy", &ChartOptions::default()).into_string();
    assert_eq!(count(&svg, "<rect class=\"cell"), 270);
    assert_eq!(count(&svg, "<rect class=\"cell missing\""), 9);
    assert!(svg.contains("layer 29, head 8 · entropy: 232.0"));
    let svg = charts::layer_head_grid(&Array2::zeros((0, 4)), "x", &ChartOptions::default());
    assert!(svg.as_str().contains("class=\"no-data\""));
}

#[test]
fn curves_and_profiles() {
    let svg = charts::deletion_insertion_curves(
        &[1.0, 0.5, 0.2, 0.1, 0.0],
        &[0.0, 0.6, 0.8, 0.9, 1.0],
        &ChartOptions::titled("curves"),
    )
    .into_string();
    assert_eq!(count(&svg, "<polyline class=\"series\""), 2);
    assert_eq!(count(&svg, "<circle class=\"point\""), 10);
    assert!(svg.contains(">deletion</text>") && svg.contains(">insertion</text>"));
    assert!(svg.contains("deletion: (0.2500, 0.5000)"), "x is the fraction of tokens");

    // A NaN breaks the line: two single points and one two-point segment.
    let gap = charts::line_chart(
        &[Series {
            name: "s".into(),
            points: vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 0.5), (3.0, 0.7)],
        }],
        "x",
        "y",
        &ChartOptions::default(),
    )
    .into_string();
    assert_eq!(count(&gap, "<polyline class=\"series\""), 1);
    assert_eq!(count(&gap, "<circle class=\"point\""), 3);
    let nothing = charts::line_chart(&[], "x", "y", &ChartOptions::default());
    assert!(nothing.as_str().contains("class=\"no-data\""));

    let labels: Vec<String> = (0..4).map(|l| format!("layer {l}")).collect();
    let svg =
        charts::layer_profile(&labels, &[1e-3, 1e-1, 0.0, 10.0], true, &ChartOptions::default())
            .unwrap()
            .into_string();
    assert_eq!(count(&svg, "<rect class=\"bar"), 4);
    assert_eq!(count(&svg, "<rect class=\"bar missing\""), 1, "0 has no logarithm");
    assert!(svg.contains(">1e-3</text>") || svg.contains(">1e-4</text>"));
    assert!(matches!(
        charts::layer_profile(&labels, &[1.0], false, &ChartOptions::default()),
        Err(Error::ShapeMismatch { .. })
    ));
    let linear = charts::layer_profile(
        &labels,
        &[1.0, -1.0, 2.0, f64::NAN],
        false,
        &ChartOptions::default(),
    )
    .unwrap()
    .into_string();
    assert_eq!(count(&linear, "<rect class=\"bar missing\""), 1);
}

#[test]
fn html_report_is_self_contained_escaped_and_scales() {
    let mut report = HtmlReport::new("Report <script>alert(1)</script>");
    report.section("Text & tokens", true).paragraph(PAYLOAD);
    let t = tokens(&["<s>", "▁Paris", "\n", "▁巴黎", PAYLOAD]);
    report.token_highlight(&t, &[0.1, 0.9, -0.3, f64::NAN, -0.9], "caption <i>").unwrap();
    let n = 1500;
    let long: Vec<String> = (0..n).map(|i| format!("▁w{i}")).collect();
    let scores: Vec<f64> = (0..n).map(|i| (i as f64).sin()).collect();
    report.token_highlight(&long, &scores, "long").unwrap();
    let svg = charts::layer_head_grid(&Array2::ones((2, 2)), "m", &ChartOptions::titled("grid"));
    report.section("Charts", false).svg(&svg, "grid <b>");
    report
        .table(
            &["name", "value"],
            &[vec![PAYLOAD.into(), "0.5".into()], vec!["x".into(), "n/a".into()]],
        )
        .unwrap();
    report.metrics(&[("AOPC", 0.25), ("missing", f64::NAN)]);
    let html = report.render();

    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(count(&html, "<span class=\"tok"), 5 + n);
    assert_eq!(count(&html, "<span class=\"tok missing\""), 1);
    assert!(html.contains("title=\"#3 ▁巴黎: n/a\""), "hover text with position and score");
    assert!(html.contains("title=\"#1 ▁Paris: 0.9000\""));
    assert!(html.contains(">&lt;img src=x onerror=alert(1)&gt;</span>"));
    assert!(html.contains("<title>Report &lt;script&gt;alert(1)&lt;/script&gt;</title>"));
    assert_eq!(count(&html, "<details open>"), 1);
    assert_eq!(count(&html, "<details>"), 1);
    assert_eq!(count(&html, "</details>"), 2);
    assert_eq!(count(&html, "<svg "), 1);
    assert_eq!(count(&html, "<td class=\"num\">"), 2);
    assert!(html.contains("<td>n/a</td>"));
    assert_only_own_elements(&html);
    // Self-contained: no external resource of any kind.
    for external in ["src=\"http", "href=\"http", "<link", "@import", "url(http"] {
        assert!(!html.contains(external), "{external}");
    }
    assert!(html.contains("Content-Security-Policy"));

    assert!(matches!(report.token_highlight(&t, &[1.0], "x"), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(
        report.table(&["a", "b"], &[vec!["1".into()]]),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut empty = HtmlReport::new("empty");
    empty.token_highlight(&[], &[], "nothing").unwrap();
    assert!(empty.render().contains("(no tokens)"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("report.html");
    report.write(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), html);
}

mod never_crash {
    use super::*;
    use proptest::prelude::*;

    /// Whether every `<` in an SVG opens or closes an element this crate writes.
    fn only_known_elements(svg: &str) -> bool {
        const KNOWN: [&str; 11] = [
            "svg", "title", "rect", "text", "g>", "line", "path", "circle", "polyline", "defs",
            "marker",
        ];
        svg.match_indices('<').all(|(i, _)| {
            let rest = svg[i + 1..].trim_start_matches('/');
            KNOWN.iter().any(|k| rest.starts_with(k))
        })
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => -1e6f64..1e6,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(f64::NEG_INFINITY),
            1 => Just(0.0),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Any scores (NaN, ±∞, huge) and any token text give well-formed output with one data
        /// element per value, and data text never becomes markup.
        #[test]
        fn charts_and_report_accept_any_values(
            words in proptest::collection::vec("\\PC{0,12}", 0..24),
            raw in proptest::collection::vec(value(), 24),
        ) {
            let n = words.len();
            let scores = &raw[..n];
            let svg = charts::method_comparison(&words, &[("m", scores)], &ChartOptions::default())
                .unwrap()
                .into_string();
            prop_assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
            prop_assert_eq!(count(&svg, "<rect class=\"bar"), n);
            prop_assert_eq!(
                count(&svg, "<rect class=\"bar missing\""),
                scores.iter().filter(|v| v.is_nan()).count()
            );
            let row = HeatmapRow { label: "r".into(), tokens: words.clone(), scores: scores.to_vec() };
            let heat = charts::token_heatmap(&[row], &ChartOptions::default()).unwrap().into_string();
            prop_assert_eq!(count(&heat, "<rect class=\"cell"), n);
            let m = Array2::from_shape_fn((n, n), |(q, k)| raw[(q + k) % 24]);
            let attn = charts::attention_matrix(&words, &m, &ChartOptions::default()).unwrap().into_string();
            prop_assert_eq!(count(&attn, "<rect class=\"cell"), n * n);
            let labels: Vec<String> = (0..n).map(|i| format!("layer {i}")).collect();
            for log in [false, true] {
                let p = charts::layer_profile(&labels, scores, log, &ChartOptions::default()).unwrap();
                prop_assert!(p.as_str().ends_with("</svg>"));
            }
            let curve = charts::deletion_insertion_curves(scores, scores, &ChartOptions::default());
            prop_assert!(curve.as_str().ends_with("</svg>"));
            let mut report = HtmlReport::new("p");
            report.token_highlight(&words, scores, "c").unwrap();
            let html = report.render();
            prop_assert_eq!(count(&html, "<span class=\"tok"), n);
            // Data never adds markup: the same report with plain words has as many `<`.
            let plain: Vec<String> = words.iter().map(|_| "x".to_owned()).collect();
            let mut reference = HtmlReport::new("p");
            reference.token_highlight(&plain, scores, "c").unwrap();
            prop_assert_eq!(count(&html, "<"), count(&reference.render(), "<"));
            prop_assert!(only_known_elements(&svg), "unknown element in {svg}");
        }
    }
}

#[test]
fn charts_render_to_png_with_the_expected_size_and_ink() {
    let t = tokens(&["The", "▁capital", "▁of", "▁France", "▁巴黎"]);
    let scores = [0.5, -0.2, 0.1, 0.9, f64::NAN];
    let svg =
        charts::method_comparison(&t, &[("saliency", &scores[..])], &ChartOptions::titled("PNG"))
            .unwrap();
    let bytes = svg.to_png(2.0).unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.width, (svg.width() * 2.0).ceil() as u32);
    assert_eq!(info.height, (svg.height() * 2.0).ceil() as u32);
    let channels = info.color_type.samples();
    let pixels = buf[..info.buffer_size()].chunks(channels);
    let total = (info.width * info.height) as usize;
    let ink = pixels.filter(|p| p[..3].iter().any(|&c| c < 200)).count();
    // Bars, axes and labels cover a visible share of the image, and most of it stays white.
    assert!(ink * 100 > total, "only {ink} of {total} pixels have ink");
    assert!(ink * 2 < total, "{ink} of {total} pixels have ink");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chart.png");
    svg.write_png(&path, 1.0).unwrap();
    assert_eq!(&std::fs::read(&path).unwrap()[..8], b"\x89PNG\r\n\x1a\n");

    for scale in [0.0, -1.0, f32::NAN, 1e6] {
        assert!(matches!(svg.to_png(scale), Err(Error::InvalidArgument { .. })), "scale {scale}");
    }
}

#[test]
// One-element lists of spans are meant: a single bad span.
#[allow(clippy::single_range_in_vec_init)]
fn span_highlight_boxes_each_span_with_its_rank_and_score() {
    let t = tokens(&[
        "<s>",
        "The",
        "▁museum",
        "▁opened",
        ".",
        "▁Maria",
        "▁directs",
        PAYLOAD,
        ".",
        "▁Q",
    ]);
    let spans = [1..5, 5..9];
    let mut report = HtmlReport::new("context");
    report.span_highlight(&t, &spans, &[0.25, 2.0], "context_cite <b>").unwrap();
    let html = report.render();
    assert_only_own_elements(&html);
    // Two span boxes, the second (higher score) ranked first; the text outside spans is plain.
    assert_eq!(count(&html, "<span class=\"tok span"), 2);
    assert!(html.contains("title=\"span 1 (tokens 5..9), rank 1: 2.000\""), "{html}");
    assert!(html.contains("title=\"span 0 (tokens 1..5), rank 2: 0.2500\""));
    assert!(html.contains(" Maria directs&lt;img src=x onerror=alert(1)&gt;.<sup>1</sup>"));
    assert!(html.contains("&lt;s&gt;<span"), "the token before the first span is plain text");
    assert!(html.contains("</span> Q</div>"), "and the one after the last");
    // The ranked table follows: rank 1 first.
    let table = &html[html.find("<table>").unwrap()..];
    assert!(table.find("Maria").unwrap() < table.find("museum").unwrap());
    // The strongest span gets the full positive colour, the slider sees relative scores.
    let full = explain_viz::ColorScale::Diverging { max_abs: 2.0 }.color(2.0);
    assert!(html.contains(&format!("background:{full};color:#fff\" data-r=\"1.0000\"")));
    assert!(html.contains("data-r=\"0.1250\""));

    // Typed errors, and nothing written on an error.
    let before = report.render();
    let e = report.span_highlight(&t, &spans, &[1.0], "x").unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    let e = report.span_highlight(&t, &[8..11], &[1.0], "x").unwrap_err();
    assert!(matches!(e, Error::SpanOutOfRange { start: 8, end: 11, len: 10 }), "{e}");
    let e = report.span_highlight(&t, &[3..3], &[1.0], "x").unwrap_err();
    assert!(matches!(e, Error::SpanOutOfRange { .. }), "{e}");
    let e = report.span_highlight(&t, &[1..5, 4..6], &[1.0, 2.0], "x").unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    assert_eq!(report.render(), before);
}

#[test]
fn explanations_over_sentences_are_shown_as_spans() {
    let t = tokens(&["<s>", "▁A", ".", "▁B", "▁b", ".", "▁Q"]);
    let mut e = Explanation::new(
        "context_cite",
        vec![0; 7],
        t.clone(),
        Array1::from(vec![0.0, 0.5, 0.5, 1.5, 1.5, 1.5, 0.0]),
        Target::argmax(),
    )
    .unwrap();
    e.metadata.insert("features".into(), serde_json::json!([[1, 3], [3, 6]]));
    e.metadata.insert("feature_scores".into(), serde_json::json!([0.5, 1.5]));
    let mut report = HtmlReport::new("spans");
    report.explanation(&e);
    let html = report.render();
    assert_eq!(count(&html, "<span class=\"tok span"), 2);
    assert!(html.contains("<table>"));
    // Single-token features (leave-one-out) stay a token highlight.
    e.metadata.insert("features".into(), serde_json::json!([[0, 1], [1, 2]]));
    e.metadata.insert("feature_scores".into(), serde_json::json!([0.5, 1.5]));
    let mut report = HtmlReport::new("tokens");
    report.explanation(&e);
    let html = report.render();
    assert_eq!(count(&html, "<span class=\"tok span"), 0);
    assert_eq!(count(&html, "<span class=\"tok\""), 7);
}

#[test]
fn labelled_scatter_labels_every_finite_point_and_colours_by_group() {
    use charts::LabelledPoint;
    let point = |label: &str, group: &str, x: f64, y: f64| LabelledPoint {
        label: label.into(),
        group: group.into(),
        x,
        y,
    };
    let points = [
        point("saliency", "ours", 0.3, 5.4),
        point("leave_one_out", "ours", 0.5, 6.6),
        point("captum_ig", "Captum", 1.5, 5.0),
        point(PAYLOAD, "Captum", 2.0, 4.8),
        point("broken", "ours", f64::NAN, 5.0),
    ];
    let svg = charts::labelled_scatter(
        &points,
        Some(("random control", 4.3)),
        "cost",
        "faithfulness",
        &ChartOptions::titled("t"),
    )
    .into_string();
    // Four finite points, each with its label; two groups in the legend.
    assert_eq!(count(&svg, "<circle class=\"point\""), 4);
    assert_eq!(count(&svg, "class=\"point-label\""), 4);
    assert_eq!(count(&svg, "<circle class=\"legend\""), 2);
    assert!(svg.contains(">leave_one_out</text>") && !svg.contains(">broken</text>"));
    assert!(svg.contains("random control (4.3"), "the reference line is labelled");
    assert!(count(&svg, "class=\"reference\"") > 10, "dashed: many short segments");
    assert_only_own_elements(&svg);
    let nothing = charts::labelled_scatter(&[], None, "x", "y", &ChartOptions::default());
    assert!(nothing.as_str().contains("class=\"no-data\""));
}
