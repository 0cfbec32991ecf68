//! SVG charts: method comparison bars, sample × token heatmaps (aligned by position),
//! attention matrices, layer × head grids, deletion / insertion curves and per-layer
//! (gradient-flow) profiles.
//!
//! Conventions shared by every chart: NaN values are drawn as missing (grey, class
//! `missing`, tooltip `n/a`) and never move a scale; empty input gives a chart with a
//! "no data" message (class `no-data`); inputs whose lengths disagree are
//! [`Error::ShapeMismatch`]. Token labels are shown readable (`▁` → `␣`), truncated with `…`
//! to [`ChartOptions::max_label_width`] (CJK characters count double) and rotated; the full
//! token is in the hover tooltip. Data elements carry classes (`bar`, `cell`, `point`,
//! `series`) so the output can be checked structurally.

use explainability_core::{Error, Explanation, Result};
use ndarray::{Array2, Array3};

use crate::color::{ColorScale, MISSING, NEGATIVE, POSITIVE, series_color};
use crate::svg::{Canvas, Svg, TextStyle};
use crate::text::{display_token, format_score, format_tick, truncate, truncate_middle};

/// Options shared by the charts.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartOptions {
    /// Title at the top of the chart.
    pub title: String,
    /// Token labels are truncated to this display width (CJK characters count 2). Default 12.
    pub max_label_width: usize,
}

impl Default for ChartOptions {
    fn default() -> Self {
        Self { title: String::new(), max_label_width: 12 }
    }
}

impl ChartOptions {
    /// Default options with a title.
    pub fn titled(title: impl Into<String>) -> Self {
        Self { title: title.into(), ..Self::default() }
    }
}

fn mismatch(what: &str, expected: String, actual: &[usize]) -> Error {
    Error::ShapeMismatch {
        what: what.to_owned(),
        expected,
        actual: actual.iter().map(|&d| d as i64).collect(),
    }
}

/// Every how many labels one is drawn so that labels are at least `min_gap` pixels apart.
fn label_stride(slot: f64, min_gap: f64) -> usize {
    if slot >= min_gap { 1 } else { (min_gap / slot.max(0.01)).ceil() as usize }
}

/// About `count` round tick values covering `[lo, hi]`.
fn nice_ticks(lo: f64, hi: f64, count: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / count.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// Draws rotated token labels under slots of width `slot` starting at `x0`.
fn token_axis(
    canvas: &mut Canvas,
    tokens: &[String],
    x0: f64,
    slot: f64,
    y: f64,
    max_width: usize,
    middle: bool,
) {
    let stride = label_stride(slot, 12.0);
    for (i, token) in tokens.iter().enumerate() {
        if i % stride != 0 {
            continue;
        }
        let shown = display_token(token);
        let label =
            if middle { truncate_middle(&shown, max_width) } else { truncate(&shown, max_width) };
        let x = x0 + slot * (i as f64 + 0.5);
        canvas.text_with_tooltip(
            x + 3.0,
            y,
            &label,
            token,
            TextStyle::new(10.0, "end").rotated(-60.0),
        );
    }
}

/// Room below a rotated label axis for labels of `max_width` characters.
fn label_room(max_width: usize) -> f64 {
    (max_width.min(40) as f64 * 6.0 * 0.87 + 16.0).max(30.0)
}

/// The source document's explanation comparison: one panel per method, a bar per token,
/// positive scores red and negative blue, each panel on its own symmetric scale. Tokens are
/// aligned by position (a repeated token keeps its own bar).
///
/// # Errors
/// [`Error::ShapeMismatch`] when a method's scores do not have one value per token.
pub fn method_comparison(
    tokens: &[String],
    methods: &[(&str, &[f64])],
    options: &ChartOptions,
) -> Result<Svg> {
    for (name, scores) in methods {
        if scores.len() != tokens.len() {
            return Err(mismatch(
                &format!("scores of method {name:?}"),
                format!("{} values (one per token)", tokens.len()),
                &[scores.len()],
            ));
        }
    }
    let n = tokens.len();
    let slot = (900.0 / n.max(1) as f64).clamp(6.0, 40.0);
    let left = 70.0;
    let panel_h = 120.0;
    let gap = 30.0;
    let top = 40.0;
    let width = left + slot * n.max(1) as f64 + 20.0;
    let height =
        top + (panel_h + gap) * methods.len().max(1) as f64 + label_room(options.max_label_width);
    let mut canvas = Canvas::new(width.max(320.0), height, &options.title);
    canvas.heading(&options.title);
    if n == 0 || methods.is_empty() {
        canvas.no_data("no tokens or no methods to compare");
        return Ok(canvas.finish());
    }
    for (m, (name, scores)) in methods.iter().enumerate() {
        let y0 = top + (panel_h + gap) * m as f64;
        let max_abs = scores.iter().filter(|v| v.is_finite()).fold(0.0_f64, |a, v| a.max(v.abs()));
        let half = panel_h / 2.0;
        let zero = y0 + half;
        canvas.text(
            left,
            y0 - 4.0,
            name,
            TextStyle::new(12.0, "start").bold().class("series-name"),
        );
        canvas.line("axis", (left, zero), (left + slot * n as f64, zero), "#999999", 1.0);
        canvas.line("axis", (left, y0), (left, y0 + panel_h), "#999999", 1.0);
        for tick in [-max_abs, 0.0, max_abs] {
            let y = zero - if max_abs > 0.0 { tick / max_abs * half } else { 0.0 };
            canvas.text(
                left - 4.0,
                y + 3.0,
                &format_tick(tick),
                TextStyle::new(9.0, "end").fill("#555555").class("tick"),
            );
        }
        for (i, (&score, token)) in scores.iter().zip(tokens).enumerate() {
            let x = left + slot * i as f64 + slot * 0.1;
            let w = slot * 0.8;
            let tip = format!("{token} (position {i}) · {name}: {}", format_score(score));
            if score.is_nan() {
                canvas.rect(
                    "bar missing",
                    x,
                    zero - 3.0,
                    w,
                    6.0,
                    MISSING,
                    Some("#888888"),
                    Some(&tip),
                );
                continue;
            }
            let h = if max_abs > 0.0 { (score.abs() / max_abs).min(1.0) * half } else { 0.0 };
            let (y, fill) = if score >= 0.0 { (zero - h, POSITIVE) } else { (zero, NEGATIVE) };
            canvas.rect("bar", x, y, w, h.max(0.5), fill, None, Some(&tip));
        }
    }
    let axis_y = top + (panel_h + gap) * methods.len() as f64 - gap + 12.0;
    token_axis(&mut canvas, tokens, left, slot, axis_y, options.max_label_width, false);
    Ok(canvas.finish())
}

/// [`method_comparison`] of explanations of the same tokens (each explanation's `method`
/// names its panel).
///
/// # Errors
/// [`Error::IncompatibleExplanations`] when the explanations are not of the same tokens.
pub fn compare_explanations(explanations: &[Explanation], options: &ChartOptions) -> Result<Svg> {
    let Some(first) = explanations.first() else {
        return method_comparison(&[], &[], options);
    };
    for e in explanations {
        if e.tokens != first.tokens {
            return Err(Error::IncompatibleExplanations {
                reason: format!(
                    "{:?} explains {} tokens {:?}…, {:?} explains {} tokens",
                    first.method,
                    first.tokens.len(),
                    first.tokens.iter().take(3).collect::<Vec<_>>(),
                    e.method,
                    e.tokens.len()
                ),
            });
        }
    }
    let scores: Vec<Vec<f64>> = explanations.iter().map(|e| e.scores.to_vec()).collect();
    let methods: Vec<(&str, &[f64])> =
        explanations.iter().zip(&scores).map(|(e, s)| (e.method.as_str(), s.as_slice())).collect();
    method_comparison(&first.tokens, &methods, options)
}

/// One row of a [`token_heatmap`]: a sample's tokens and their scores.
#[derive(Debug, Clone, PartialEq)]
pub struct HeatmapRow {
    /// Row label (sample name or method).
    pub label: String,
    /// The sample's tokens, in order.
    pub tokens: Vec<String>,
    /// One score per token.
    pub scores: Vec<f64>,
}

impl HeatmapRow {
    /// A row from an explanation, labelled by its method.
    pub fn from_explanation(explanation: &Explanation) -> Self {
        Self {
            label: explanation.method.clone(),
            tokens: explanation.tokens.clone(),
            scores: explanation.scores.to_vec(),
        }
    }
}

/// Sample × token heatmap aligned by **position**: column `j` is the `j`-th token of every
/// row, each cell shows its own token (so repeated tokens are never merged, unlike a sorted set
/// of token strings); rows shorter than the longest leave their remaining columns empty. One
/// diverging scale over all finite scores.
///
/// # Errors
/// [`Error::ShapeMismatch`] when a row's scores and tokens differ in length.
pub fn token_heatmap(rows: &[HeatmapRow], options: &ChartOptions) -> Result<Svg> {
    for row in rows {
        if row.scores.len() != row.tokens.len() {
            return Err(mismatch(
                &format!("scores of row {:?}", row.label),
                format!("{} values (one per token)", row.tokens.len()),
                &[row.scores.len()],
            ));
        }
    }
    let columns = rows.iter().map(|r| r.tokens.len()).max().unwrap_or(0);
    let cell_w = (1100.0 / columns.max(1) as f64).clamp(8.0, 56.0);
    let cell_h = 26.0;
    let label_w =
        rows.iter().map(|r| crate::text::display_width(&truncate(&r.label, 24))).max().unwrap_or(4)
            as f64
            * 6.5
            + 16.0;
    let top = 56.0;
    let width = label_w + cell_w * columns.max(1) as f64 + 20.0;
    let height = top + cell_h * rows.len().max(1) as f64 + 50.0;
    let mut canvas = Canvas::new(width.max(320.0), height, &options.title);
    canvas.heading(&options.title);
    if columns == 0 {
        canvas.no_data("no tokens");
        return Ok(canvas.finish());
    }
    let scale = ColorScale::diverging(rows.iter().flat_map(|r| r.scores.iter().copied()));
    let stride = label_stride(cell_w, 18.0);
    for j in (0..columns).step_by(stride) {
        let x = label_w + cell_w * (j as f64 + 0.5);
        canvas.text(
            x,
            top - 6.0,
            &j.to_string(),
            TextStyle::new(9.0, "middle").fill("#555555").class("tick"),
        );
    }
    let text_fits = cell_w >= 22.0;
    let text_width = ((cell_w - 4.0) / 6.0).floor().max(1.0) as usize;
    for (r, row) in rows.iter().enumerate() {
        let y = top + cell_h * r as f64;
        canvas.text_with_tooltip(
            label_w - 6.0,
            y + cell_h / 2.0 + 4.0,
            &truncate(&row.label, 24),
            &row.label,
            TextStyle::new(11.0, "end").class("row-label"),
        );
        for (j, (token, &score)) in row.tokens.iter().zip(&row.scores).enumerate() {
            let x = label_w + cell_w * j as f64;
            let tip = format!("{} · position {j} · {token}: {}", row.label, format_score(score));
            let class = if score.is_nan() { "cell missing" } else { "cell" };
            canvas.rect(
                class,
                x,
                y,
                cell_w,
                cell_h,
                &scale.color(score),
                Some("#ffffff"),
                Some(&tip),
            );
            if text_fits {
                let fill = if scale.needs_light_text(score) { "#ffffff" } else { "#222222" };
                let label =
                    truncate(&display_token(token), text_width.min(options.max_label_width));
                canvas.text(
                    x + cell_w / 2.0,
                    y + cell_h / 2.0 + 4.0,
                    &label,
                    TextStyle::new(10.0, "middle").fill(fill).class("cell-label"),
                );
            }
        }
    }
    legend(&mut canvas, &scale, label_w, top + cell_h * rows.len() as f64 + 14.0);
    Ok(canvas.finish())
}

/// A horizontal colour legend with the scale's end values.
fn legend(canvas: &mut Canvas, scale: &ColorScale, x: f64, y: f64) {
    let (lo, hi) = match *scale {
        ColorScale::Diverging { max_abs } => (-max_abs, max_abs),
        ColorScale::Sequential { min, max } => (min, max),
    };
    let steps = 20;
    for i in 0..steps {
        let v = lo + (hi - lo) * (i as f64 + 0.5) / steps as f64;
        canvas.rect("legend", x + 8.0 * i as f64, y, 8.0, 10.0, &scale.color(v), None, None);
    }
    let style = TextStyle::new(9.0, "start").fill("#555555").class("tick");
    canvas.text(x, y + 22.0, &format_score(lo), style);
    canvas.text(
        x + 8.0 * steps as f64,
        y + 22.0,
        &format_score(hi),
        TextStyle { anchor: "end", ..style },
    );
    canvas.rect(
        "legend missing",
        x + 8.0 * steps as f64 + 14.0,
        y,
        10.0,
        10.0,
        MISSING,
        None,
        None,
    );
    canvas.text(x + 8.0 * steps as f64 + 28.0, y + 9.0, "n/a", style);
}

/// An attention pattern `[query, key]` as a heatmap (queries down, keys across), one
/// sequential scale; with up to ~60 tokens, labels on both axes.
///
/// # Errors
/// [`Error::ShapeMismatch`] when `matrix` is not `[seq, seq]` for `seq = tokens.len()`.
pub fn attention_matrix(
    tokens: &[String],
    matrix: &Array2<f64>,
    options: &ChartOptions,
) -> Result<Svg> {
    let n = tokens.len();
    if matrix.shape() != [n, n] {
        return Err(mismatch(
            "attention matrix",
            format!("[{n}, {n}] (query × key)"),
            matrix.shape(),
        ));
    }
    let cell = (640.0 / n.max(1) as f64).clamp(3.0, 28.0);
    let room = label_room(options.max_label_width);
    let left = room + 10.0;
    let top = 40.0;
    let width = left + cell * n.max(1) as f64 + 20.0;
    let height = top + cell * n.max(1) as f64 + room + 40.0;
    let mut canvas = Canvas::new(width.max(280.0), height, &options.title);
    canvas.heading(&options.title);
    if n == 0 {
        canvas.no_data("no tokens");
        return Ok(canvas.finish());
    }
    let scale = ColorScale::sequential(matrix.iter().copied());
    draw_matrix(&mut canvas, tokens, matrix, &scale, left, top, cell);
    let stride = label_stride(cell, 11.0);
    for (i, token) in tokens.iter().enumerate().step_by(stride) {
        let label = truncate(&display_token(token), options.max_label_width);
        let y = top + cell * (i as f64 + 0.5) + 3.0;
        canvas.text_with_tooltip(left - 4.0, y, &label, token, TextStyle::new(10.0, "end"));
    }
    token_axis(
        &mut canvas,
        tokens,
        left,
        cell,
        top + cell * n as f64 + 10.0,
        options.max_label_width,
        false,
    );
    legend(&mut canvas, &scale, left, height - 34.0);
    Ok(canvas.finish())
}

fn draw_matrix(
    canvas: &mut Canvas,
    tokens: &[String],
    matrix: &Array2<f64>,
    scale: &ColorScale,
    left: f64,
    top: f64,
    cell: f64,
) {
    for ((q, k), &v) in matrix.indexed_iter() {
        let tip = format!(
            "{} (query {q}) → {} (key {k}): {}",
            tokens.get(q).map_or("", String::as_str),
            tokens.get(k).map_or("", String::as_str),
            format_score(v)
        );
        let class = if v.is_nan() { "cell missing" } else { "cell" };
        canvas.rect(
            class,
            left + cell * k as f64,
            top + cell * q as f64,
            cell,
            cell,
            &scale.color(v),
            None,
            Some(&tip),
        );
    }
}

/// Every head of one layer, `heads` being `[head, query, key]`, as small heatmaps in a grid
/// (one scale for all heads), titled `L{layer} H{h}`.
///
/// # Errors
/// [`Error::ShapeMismatch`] when `heads` is not `[heads, seq, seq]` for `seq = tokens.len()`.
pub fn attention_heads(
    tokens: &[String],
    heads: &Array3<f64>,
    layer: usize,
    options: &ChartOptions,
) -> Result<Svg> {
    let n = tokens.len();
    let shape = heads.shape();
    if shape[1] != n || shape[2] != n {
        return Err(mismatch("attention heads", format!("[heads, {n}, {n}]"), shape));
    }
    let n_heads = shape[0];
    let columns = (n_heads as f64).sqrt().ceil().max(1.0) as usize;
    let rows = n_heads.div_ceil(columns).max(1);
    let cell = (160.0 / n.max(1) as f64).clamp(1.5, 12.0);
    let panel = cell * n.max(1) as f64;
    let gap = 26.0;
    let top = 40.0;
    let width = 20.0 + (panel + gap) * columns as f64;
    let height = top + (panel + gap) * rows as f64 + 40.0;
    let mut canvas = Canvas::new(width.max(280.0), height, &options.title);
    canvas.heading(&options.title);
    if n == 0 || n_heads == 0 {
        canvas.no_data("no tokens or no heads");
        return Ok(canvas.finish());
    }
    let scale = ColorScale::sequential(heads.iter().copied());
    for (h, matrix) in heads.outer_iter().enumerate() {
        let x = 20.0 + (panel + gap) * (h % columns) as f64;
        let y = top + 14.0 + (panel + gap) * (h / columns) as f64;
        canvas.text(
            x,
            y - 4.0,
            &format!("L{layer} H{h}"),
            TextStyle::new(10.0, "start").class("panel-title"),
        );
        draw_matrix(&mut canvas, tokens, &matrix.to_owned(), &scale, x, y, cell);
    }
    legend(&mut canvas, &scale, 20.0, height - 30.0);
    Ok(canvas.finish())
}

/// Which colour scale a [`Heatmap`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeatmapScale {
    /// Diverging (blue–white–red, symmetric around 0) when some finite value is negative,
    /// else sequential.
    #[default]
    Auto,
    /// Blue–white–red, symmetric around 0: signed values (patching scores, DLA).
    Diverging,
    /// White–purple from the smallest to the largest value.
    Sequential,
}

/// A labelled heatmap of any matrix: `values[row, column]` with a label per row and per
/// column, axis names, a colour legend naming the metric, a tooltip per cell and optional
/// text inside each cell (several lines separated by `\n`). The one drawer behind
/// [`layer_head_grid`] and the pictures of model internals (layer × position patching and
/// causal-tracing grids, layer × head grids, the logit-lens table).
///
/// Short column labels are drawn above the grid, long ones (tokens) rotated below it;
/// labels are drawn as given (pass tokens through [`display_token`] first), truncated to
/// [`ChartOptions::max_label_width`] with the full text on hover.
/// Without cell text, cells show their value when there is room.
///
/// # Examples
/// ```
/// use explain_viz::charts::{ChartOptions, Heatmap, HeatmapScale};
/// use ndarray::array;
/// let svg = Heatmap::new(array![[0.1, -0.4], [0.9, 0.0]])
///     .rows("layer", vec!["L0".into(), "L1".into()])
///     .columns("position", vec!["The".into(), "▁Paris".into()])
///     .metric("recovery")
///     .scale(HeatmapScale::Diverging)
///     .to_svg(&ChartOptions::titled("patching"))?;
/// assert!(svg.as_str().contains("recovery"));
/// # Ok::<(), explainability_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Heatmap {
    values: Array2<f64>,
    row_axis: String,
    row_labels: Vec<String>,
    column_axis: String,
    column_labels: Vec<String>,
    metric: String,
    scale: HeatmapScale,
    cell_text: Option<Array2<String>>,
    tooltips: Option<Array2<String>>,
}

impl Heatmap {
    /// A heatmap of `values` with rows and columns labelled by their index.
    pub fn new(values: Array2<f64>) -> Self {
        let (rows, columns) = values.dim();
        Self {
            row_axis: "row".to_owned(),
            row_labels: (0..rows).map(|r| r.to_string()).collect(),
            column_axis: "column".to_owned(),
            column_labels: (0..columns).map(|c| c.to_string()).collect(),
            metric: "value".to_owned(),
            scale: HeatmapScale::Auto,
            cell_text: None,
            tooltips: None,
            values,
        }
    }

    /// Names the row axis (`layer`) and labels every row.
    pub fn rows(mut self, axis: &str, labels: Vec<String>) -> Self {
        axis.clone_into(&mut self.row_axis);
        self.row_labels = labels;
        self
    }

    /// Names the column axis (`position`, `head`) and labels every column.
    pub fn columns(mut self, axis: &str, labels: Vec<String>) -> Self {
        axis.clone_into(&mut self.column_axis);
        self.column_labels = labels;
        self
    }

    /// Names the metric (legend and tooltips).
    pub fn metric(mut self, name: &str) -> Self {
        name.clone_into(&mut self.metric);
        self
    }

    /// The colour scale (default [`HeatmapScale::Auto`]).
    pub fn scale(mut self, scale: HeatmapScale) -> Self {
        self.scale = scale;
        self
    }

    /// Text drawn inside each cell (lines separated by `\n`), same shape as the values.
    pub fn cell_text(mut self, text: Array2<String>) -> Self {
        self.cell_text = Some(text);
        self
    }

    /// The hover text of each cell, same shape as the values (default: row, column, metric
    /// and value).
    pub fn tooltips(mut self, tooltips: Array2<String>) -> Self {
        self.tooltips = Some(tooltips);
        self
    }

    /// Draws the heatmap.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the row or column labels do not match the values, or
    /// the cell texts or tooltips do not have the values' shape.
    pub fn to_svg(&self, options: &ChartOptions) -> Result<Svg> {
        let (rows, columns) = self.values.dim();
        if self.row_labels.len() != rows {
            return Err(mismatch(
                "heatmap row labels",
                format!("{rows} labels (one per row)"),
                &[self.row_labels.len()],
            ));
        }
        if self.column_labels.len() != columns {
            return Err(mismatch(
                "heatmap column labels",
                format!("{columns} labels (one per column)"),
                &[self.column_labels.len()],
            ));
        }
        for (what, array) in [("cell texts", &self.cell_text), ("tooltips", &self.tooltips)] {
            if let Some(a) = array
                && a.dim() != (rows, columns)
            {
                return Err(mismatch(
                    &format!("heatmap {what}"),
                    format!("[{rows}, {columns}] (the values' shape)"),
                    a.shape(),
                ));
            }
        }
        Ok(self.draw(options))
    }

    /// The colour scale fitted to the values.
    fn color_scale(&self) -> ColorScale {
        let signed = self.values.iter().any(|v| v.is_finite() && *v < 0.0);
        match self.scale {
            HeatmapScale::Diverging => ColorScale::diverging(self.values.iter().copied()),
            HeatmapScale::Sequential => ColorScale::sequential(self.values.iter().copied()),
            HeatmapScale::Auto if signed => ColorScale::diverging(self.values.iter().copied()),
            HeatmapScale::Auto => ColorScale::sequential(self.values.iter().copied()),
        }
    }

    /// Draws a heatmap whose shapes have been checked.
    fn draw(&self, options: &ChartOptions) -> Svg {
        let (rows, columns) = self.values.dim();
        let max_width = options.max_label_width;
        let shown = |label: &str| truncate(label, max_width);
        let text_lines = self
            .cell_text
            .as_ref()
            .map(|t| t.iter().map(|s| s.split('\n').count()).max().unwrap_or(1).max(1));
        let text_width = self.cell_text.as_ref().map_or(0, |t| {
            t.iter()
                .flat_map(|s| s.split('\n'))
                .map(|line| crate::text::display_width(&truncate(line, max_width)))
                .max()
                .unwrap_or(0)
        });
        let (cell_w, cell_h) = match text_lines {
            Some(lines) => (
                (text_width as f64 * 6.2 + 10.0).clamp(28.0, 96.0),
                (lines as f64 * 12.0 + 6.0).max(18.0),
            ),
            None => (
                (900.0 / columns.max(1) as f64).clamp(10.0, 48.0),
                (600.0 / rows.max(1) as f64).clamp(8.0, 24.0),
            ),
        };
        let column_width =
            self.column_labels.iter().map(|l| crate::text::display_width(&shown(l))).max();
        let columns_above = column_width.is_none_or(|w| w as f64 * 6.0 + 4.0 <= cell_w);
        let row_width = self.row_labels.iter().map(|l| crate::text::display_width(&shown(l))).max();
        let left = 30.0 + row_width.unwrap_or(2) as f64 * 6.5 + 10.0;
        let top = 64.0;
        let below = if columns_above { 24.0 } else { label_room(max_width) + 18.0 };
        // The legend (20 swatches, "n/a", the metric's name) must fit too.
        let legend_w = 8.0 * 20.0 + 52.0 + crate::text::display_width(&self.metric) as f64 * 6.0;
        let width = (left + cell_w * columns.max(1) as f64 + 20.0).max(left + legend_w + 20.0);
        let height = top + cell_h * rows.max(1) as f64 + below + 46.0;
        let mut canvas = Canvas::new(width.max(320.0), height, &options.title);
        canvas.heading(&options.title);
        if rows == 0 || columns == 0 {
            canvas.no_data(&format!("no {} or no {}", self.row_axis, self.column_axis));
            return canvas.finish();
        }
        let scale = self.color_scale();
        let small = TextStyle::new(9.0, "middle").fill("#555555").class("tick");
        let axis = TextStyle::new(11.0, "middle").fill("#333333").class("axis-label");
        let grid_w = cell_w * columns as f64;
        let grid_h = cell_h * rows as f64;
        if columns_above {
            canvas.text(left + grid_w / 2.0, top - 22.0, &self.column_axis, axis);
            for (c, label) in
                self.column_labels.iter().enumerate().step_by(label_stride(cell_w, 14.0))
            {
                canvas.text_with_tooltip(
                    left + cell_w * (c as f64 + 0.5),
                    top - 6.0,
                    &shown(label),
                    label,
                    small,
                );
            }
        } else {
            let y = top + grid_h + 10.0;
            let stride = label_stride(cell_w, 12.0);
            for (c, label) in self.column_labels.iter().enumerate().step_by(stride) {
                let x = left + cell_w * (c as f64 + 0.5);
                let style = TextStyle::new(10.0, "end").rotated(-60.0);
                canvas.text_with_tooltip(x + 3.0, y, &shown(label), label, style);
            }
            canvas.text(left + grid_w / 2.0, top + grid_h + below - 4.0, &self.column_axis, axis);
        }
        canvas.text(12.0, top + grid_h / 2.0, &self.row_axis, axis.rotated(-90.0));
        for (r, label) in self.row_labels.iter().enumerate().step_by(label_stride(cell_h, 10.0)) {
            canvas.text_with_tooltip(
                left - 6.0,
                top + cell_h * (r as f64 + 0.5) + 3.0,
                &shown(label),
                label,
                TextStyle { anchor: "end", ..small },
            );
        }
        let value_fits = cell_w >= 34.0 && cell_h >= 14.0;
        for ((r, c), &v) in self.values.indexed_iter() {
            let (x, y) = (left + cell_w * c as f64, top + cell_h * r as f64);
            let tip = match &self.tooltips {
                Some(t) => t[(r, c)].clone(),
                None => format!(
                    "{} {}, {} {} · {}: {}",
                    self.row_axis,
                    self.row_labels[r],
                    self.column_axis,
                    self.column_labels[c],
                    self.metric,
                    format_score(v)
                ),
            };
            let class = if v.is_nan() { "cell missing" } else { "cell" };
            canvas.rect(class, x, y, cell_w, cell_h, &scale.color(v), Some("#ffffff"), Some(&tip));
            let fill = if scale.needs_light_text(v) { "#ffffff" } else { "#222222" };
            let style = TextStyle::new(9.0, "middle").fill(fill).class("cell-label");
            match &self.cell_text {
                Some(text) => {
                    let lines: Vec<&str> = text[(r, c)].split('\n').collect();
                    let y0 = y + cell_h / 2.0 - 6.0 * (lines.len() as f64 - 1.0) + 3.0;
                    for (i, line) in lines.iter().enumerate() {
                        canvas.text(
                            x + cell_w / 2.0,
                            y0 + 12.0 * i as f64,
                            &truncate(line, max_width),
                            style,
                        );
                    }
                }
                None if value_fits => {
                    // No "-0.00": values that round to zero are shown as 0.00.
                    let text = match v {
                        v if v.is_nan() => "n/a".to_owned(),
                        v if v.abs() < 0.005 => "0.00".to_owned(),
                        v => format!("{v:.2}"),
                    };
                    canvas.text(x + cell_w / 2.0, y + cell_h / 2.0 + 3.0, &text, style);
                }
                None => {}
            }
        }
        let legend_y = top + grid_h + below;
        legend(&mut canvas, &scale, left, legend_y);
        canvas.text(
            left + 8.0 * 20.0 + 52.0,
            legend_y + 9.0,
            &self.metric,
            TextStyle::new(10.0, "start").fill("#333333").class("legend-label"),
        );
        canvas.finish()
    }
}

/// A layer × head grid of any per-head metric (`values[layer, head]`) on a sequential scale,
/// each cell labelled with its value when there is room: a [`Heatmap`] with rows `L{l}` and
/// columns `H{h}`.
pub fn layer_head_grid(values: &Array2<f64>, metric: &str, options: &ChartOptions) -> Svg {
    layer_head_heatmap(values, metric).scale(HeatmapScale::Sequential).draw(options)
}

/// A [`Heatmap`] of `values[layer, head]` with rows `L{l}`, columns `H{h}` and tooltips
/// `layer l, head h · metric: value`; the scale is left to the caller.
pub fn layer_head_heatmap(values: &Array2<f64>, metric: &str) -> Heatmap {
    let (layers, heads) = values.dim();
    let tooltips = Array2::from_shape_fn((layers, heads), |(l, h)| {
        format!("layer {l}, head {h} · {metric}: {}", format_score(values[(l, h)]))
    });
    Heatmap::new(values.clone())
        .rows("layer", (0..layers).map(|l| format!("L{l}")).collect())
        .columns("head", (0..heads).map(|h| format!("H{h}")).collect())
        .metric(metric)
        .tooltips(tooltips)
}

/// One named series of a [`line_chart`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// `(x, y)` points in drawing order; a non-finite coordinate breaks the line.
    pub points: Vec<(f64, f64)>,
}

/// The plotting area of a two-axis chart: its place on the canvas and the data ranges it maps.
struct Frame {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
    /// Height of the whole canvas (the x-axis label sits near its bottom).
    total_height: f64,
    x: (f64, f64),
    y: (f64, f64),
}

/// The range of `values` (finite ones expected), widened by `pad` of its span on each side;
/// a single value gets ±0.5.
fn data_range(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) =
        values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let pad = if hi > lo { pad * (hi - lo) } else { 0.5 };
    (lo - pad, hi + pad)
}

impl Frame {
    /// The plotting area of a `(width, height)` canvas inside `(left, right, top, bottom)`
    /// margins, mapping the data ranges `x` and `y`.
    fn new(
        (width, height): (f64, f64),
        (left, right, top, bottom): (f64, f64, f64, f64),
        x: (f64, f64),
        y: (f64, f64),
    ) -> Self {
        Self {
            left,
            top,
            width: width - left - right,
            height: height - top - bottom,
            total_height: height,
            x,
            y,
        }
    }

    fn sx(&self, x: f64) -> f64 {
        self.left + (x - self.x.0) / (self.x.1 - self.x.0) * self.width
    }

    fn sy(&self, y: f64) -> f64 {
        self.top + self.height - (y - self.y.0) / (self.y.1 - self.y.0) * self.height
    }
}

/// Axes, ticks, horizontal grid lines and axis labels of `frame`.
fn draw_frame(canvas: &mut Canvas, frame: &Frame, x_label: &str, y_label: &str) {
    let (left, top, plot_w, plot_h) = (frame.left, frame.top, frame.width, frame.height);
    canvas.line("axis", (left, top + plot_h), (left + plot_w, top + plot_h), "#999999", 1.0);
    canvas.line("axis", (left, top), (left, top + plot_h), "#999999", 1.0);
    let tick_style = TextStyle::new(9.0, "middle").fill("#555555").class("tick");
    for t in nice_ticks(frame.x.0, frame.x.1, 5) {
        let x = frame.sx(t);
        canvas.line("grid", (x, top + plot_h), (x, top + plot_h + 4.0), "#999999", 1.0);
        canvas.text(x, top + plot_h + 15.0, &format_tick(t), tick_style);
    }
    for t in nice_ticks(frame.y.0, frame.y.1, 5) {
        let y = frame.sy(t);
        canvas.line("grid", (left, y), (left + plot_w, y), "#eeeeee", 1.0);
        canvas.text(
            left - 5.0,
            y + 3.0,
            &format_tick(t),
            TextStyle { anchor: "end", ..tick_style },
        );
    }
    canvas.text(
        left + plot_w / 2.0,
        frame.total_height - 12.0,
        x_label,
        TextStyle::new(11.0, "middle").class("axis-label"),
    );
    canvas.text(
        16.0,
        top + plot_h / 2.0,
        y_label,
        TextStyle::new(11.0, "middle").rotated(-90.0).class("axis-label"),
    );
}

/// A line chart of several series with axes, ticks and a legend; axis labels `x_label`,
/// `y_label`.
pub fn line_chart(series: &[Series], x_label: &str, y_label: &str, options: &ChartOptions) -> Svg {
    let (width, height) = (640.0, 400.0);
    let (left, right, top, bottom) = (70.0, 160.0, 40.0, 50.0);
    let mut canvas = Canvas::new(width, height, &options.title);
    canvas.heading(&options.title);
    let finite: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if finite.is_empty() {
        canvas.no_data("no data points");
        return canvas.finish();
    }
    let frame = Frame::new(
        (width, height),
        (left, right, top, bottom),
        data_range(finite.iter().map(|p| p.0), 0.0),
        data_range(finite.iter().map(|p| p.1), 0.0),
    );
    let (sx, sy) = (|x: f64| frame.sx(x), |y: f64| frame.sy(y));
    let plot_w = frame.width;
    draw_frame(&mut canvas, &frame, x_label, y_label);
    for (i, s) in series.iter().enumerate() {
        let color = series_color(i);
        let mut segment: Vec<(f64, f64)> = Vec::new();
        let mut segments = Vec::new();
        for &(x, y) in &s.points {
            if x.is_finite() && y.is_finite() {
                segment.push((sx(x), sy(y)));
            } else if !segment.is_empty() {
                segments.push(std::mem::take(&mut segment));
            }
        }
        segments.push(segment);
        for seg in segments.iter().filter(|s| s.len() > 1) {
            canvas.polyline("series", seg, color, 2.0);
        }
        for &(x, y) in s.points.iter().filter(|(x, y)| x.is_finite() && y.is_finite()) {
            let tip = format!("{}: ({}, {})", s.name, format_score(x), format_score(y));
            canvas.circle("point", sx(x), sy(y), 2.5, color, color, Some(&tip));
        }
        let ly = top + 10.0 + 18.0 * i as f64;
        canvas.line("legend", (left + plot_w + 12.0, ly), (left + plot_w + 32.0, ly), color, 3.0);
        canvas.text_with_tooltip(
            left + plot_w + 36.0,
            ly + 4.0,
            &truncate(&s.name, 18),
            &s.name,
            TextStyle::new(10.0, "start").class("legend-label"),
        );
    }
    canvas.finish()
}

/// One named point of a [`labelled_scatter`], coloured by its group.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledPoint {
    /// Text written beside the point (and its tooltip).
    pub label: String,
    /// Legend group (one colour each, in order of first appearance).
    pub group: String,
    /// Horizontal coordinate.
    pub x: f64,
    /// Vertical coordinate.
    pub y: f64,
}

/// A scatter chart whose points carry their own labels (many points, few groups: each group
/// one colour and one legend entry), with an optional dashed horizontal reference line
/// `(name, y)` such as a random control. Non-finite points are left out.
pub fn labelled_scatter(
    points: &[LabelledPoint],
    reference: Option<(&str, f64)>,
    x_label: &str,
    y_label: &str,
    options: &ChartOptions,
) -> Svg {
    let (width, height) = (760.0, 480.0);
    let (left, right, top, bottom) = (70.0, 150.0, 40.0, 50.0);
    let mut canvas = Canvas::new(width, height, &options.title);
    canvas.heading(&options.title);
    let finite: Vec<&LabelledPoint> =
        points.iter().filter(|p| p.x.is_finite() && p.y.is_finite()).collect();
    if finite.is_empty() {
        canvas.no_data("no data points");
        return canvas.finish();
    }
    let reference = reference.filter(|(_, y)| y.is_finite());
    let frame = Frame::new(
        (width, height),
        (left, right, top, bottom),
        data_range(finite.iter().map(|p| p.x), 0.05),
        data_range(finite.iter().map(|p| p.y).chain(reference.map(|r| r.1)), 0.05),
    );
    let (sx, sy) = (|x: f64| frame.sx(x), |y: f64| frame.sy(y));
    let plot_w = frame.width;
    draw_frame(&mut canvas, &frame, x_label, y_label);
    if let Some((name, y)) = reference {
        // Dashes drawn as short segments (the canvas draws plain lines).
        let mut x = left;
        while x < left + plot_w {
            canvas.line(
                "reference",
                (x, sy(y)),
                ((x + 6.0).min(left + plot_w), sy(y)),
                "#777777",
                1.0,
            );
            x += 10.0;
        }
        canvas.text(
            left + plot_w - 2.0,
            sy(y) - 4.0,
            &format!("{name} ({})", format_score(y)),
            TextStyle::new(9.0, "end").fill("#555555").class("reference-label"),
        );
    }
    let mut groups: Vec<&str> = Vec::new();
    for p in &finite {
        if !groups.contains(&p.group.as_str()) {
            groups.push(&p.group);
        }
    }
    for p in &finite {
        let g = groups.iter().position(|g| *g == p.group).unwrap_or(0);
        let color = series_color(g);
        let tip =
            format!("{} ({}): ({}, {})", p.label, p.group, format_score(p.x), format_score(p.y));
        canvas.circle("point", sx(p.x), sy(p.y), 3.5, color, color, Some(&tip));
        canvas.text(
            sx(p.x) + 5.0,
            sy(p.y) - 4.0,
            &p.label,
            TextStyle::new(8.5, "start").fill(color).class("point-label"),
        );
    }
    for (i, g) in groups.iter().enumerate() {
        let ly = top + 10.0 + 18.0 * i as f64;
        let color = series_color(i);
        canvas.circle("legend", left + plot_w + 22.0, ly, 3.5, color, color, None);
        canvas.text_with_tooltip(
            left + plot_w + 32.0,
            ly + 4.0,
            &truncate(g, 18),
            g,
            TextStyle::new(10.0, "start").class("legend-label"),
        );
    }
    canvas.finish()
}

/// Deletion and insertion curves (Petsiuk et al. 2018, arXiv:1806.07421): the model output
/// after removing (deletion) or restoring (insertion) the `i` top-ranked tokens, drawn over the
/// fraction of tokens `i / (len − 1)`. Either slice may be empty.
pub fn deletion_insertion_curves(
    deletion: &[f64],
    insertion: &[f64],
    options: &ChartOptions,
) -> Svg {
    let to_series = |name: &str, values: &[f64]| Series {
        name: name.to_owned(),
        points: values
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as f64 / (values.len().max(2) - 1) as f64, v))
            .collect(),
    };
    let series: Vec<Series> = [("deletion", deletion), ("insertion", insertion)]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(name, v)| to_series(name, v))
        .collect();
    line_chart(&series, "fraction of tokens removed / inserted", "model output", options)
}

/// A per-layer profile (e.g. gradient-flow norms): one bar per layer, on a log₁₀ axis when
/// `log_scale` (non-positive values are then missing). Layers are labelled by `labels`.
///
/// # Errors
/// [`Error::ShapeMismatch`] when `values` and `labels` differ in length.
pub fn layer_profile(
    labels: &[String],
    values: &[f64],
    log_scale: bool,
    options: &ChartOptions,
) -> Result<Svg> {
    if labels.len() != values.len() {
        return Err(mismatch(
            "layer values",
            format!("{} values (one per label)", labels.len()),
            &[values.len()],
        ));
    }
    let n = values.len();
    let slot = (800.0 / n.max(1) as f64).clamp(6.0, 40.0);
    let (left, top, plot_h) = (70.0, 40.0, 220.0);
    let room = label_room(options.max_label_width);
    let width = left + slot * n.max(1) as f64 + 20.0;
    let height = top + plot_h + room + 10.0;
    let mut canvas = Canvas::new(width.max(320.0), height, &options.title);
    canvas.heading(&options.title);
    let shown: Vec<f64> = values
        .iter()
        .map(|&v| {
            if log_scale { if v > 0.0 && v.is_finite() { v.log10() } else { f64::NAN } } else { v }
        })
        .collect();
    let finite: Vec<f64> = shown.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        canvas.no_data(if n == 0 { "no layers" } else { "no finite values" });
        return Ok(canvas.finish());
    }
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // Linear bars start at 0; log bars start one decade below the smallest value.
    let (base, top_value) = if log_scale {
        (lo.floor() - 1.0, hi.ceil().max(lo.floor()))
    } else {
        (lo.min(0.0), hi.max(0.0))
    };
    let span = if top_value > base { top_value - base } else { 1.0 };
    let sy = |v: f64| top + plot_h - (v - base) / span * plot_h;
    canvas.line("axis", (left, top), (left, top + plot_h), "#999999", 1.0);
    canvas.line(
        "axis",
        (left, sy(base.max(0.0).min(top_value))),
        (left + slot * n as f64, sy(base.max(0.0).min(top_value))),
        "#999999",
        1.0,
    );
    let tick_style = TextStyle::new(9.0, "end").fill("#555555").class("tick");
    for t in nice_ticks(base, top_value, 5) {
        let text = if log_scale { format!("1e{}", t.round() as i64) } else { format_tick(t) };
        if !log_scale || (t - t.round()).abs() < 1e-9 {
            canvas.text(left - 5.0, sy(t) + 3.0, &text, tick_style);
        }
    }
    let zero = if log_scale { base } else { 0.0_f64.clamp(base, top_value) };
    for (i, (&v, label)) in shown.iter().zip(labels).enumerate() {
        let x = left + slot * i as f64 + slot * 0.15;
        let tip = format!("{label}: {}", format_score(values[i]));
        if !v.is_finite() {
            canvas.rect(
                "bar missing",
                x,
                sy(zero) - 3.0,
                slot * 0.7,
                6.0,
                MISSING,
                Some("#888888"),
                Some(&tip),
            );
            continue;
        }
        let (y0, y1) = (sy(v).min(sy(zero)), sy(v).max(sy(zero)));
        let fill = if v >= zero { series_color(0) } else { NEGATIVE };
        canvas.rect("bar", x, y0, slot * 0.7, (y1 - y0).max(0.5), fill, None, Some(&tip));
    }
    token_axis(&mut canvas, labels, left, slot, top + plot_h + 12.0, options.max_label_width, true);
    Ok(canvas.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside() {
        let ticks = nice_ticks(0.0, 1.0, 5);
        assert_eq!(ticks, vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        assert_eq!(nice_ticks(1.0, 1.0, 5), vec![1.0]);
        assert_eq!(label_stride(20.0, 12.0), 1);
        assert_eq!(label_stride(3.0, 12.0), 4);
    }
}
