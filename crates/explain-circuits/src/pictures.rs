//! Pictures of the results, drawn by explain-viz's one labelled [`Heatmap`]: layer × position
//! grids of activation patching and causal tracing, layer × head grids of per-head patching and
//! direct logit attribution, the logit-lens table, and an HTML report section that embeds them.
//! Every picture is an [`Svg`] ([`Svg::write`], [`Svg::write_png`]).

use std::path::{Path, PathBuf};

use explain_viz::charts::{ChartOptions, Heatmap, HeatmapScale, layer_head_heatmap};
use explain_viz::{HtmlReport, Svg, format_score};
use explainability_core::Result;
use ndarray::Array2;

use crate::dla::{DirectLogitAttribution, DlaComponentKind};
use crate::lens::LogitLensResult;
use crate::patching::{PatchDirection, PatchSite, PatchingResult};
use crate::tracing::{CausalTrace, TOKEN_GROUPS, TraceKind};

/// Token labels of the columns of a position axis: `"{position} {token}"` (the token made
/// readable, `▁` → `␣`), so that repeated tokens stay apart; `mark` adds `*` after the position (the subject of a
/// causal trace), where truncation never cuts it.
fn position_labels(
    tokens: &[String],
    positions: impl IntoIterator<Item = usize>,
    mark: impl Fn(usize) -> bool,
) -> Vec<String> {
    positions
        .into_iter()
        .map(|p| {
            let token = tokens.get(p).map_or_else(String::new, |t| explain_viz::display_token(t));
            format!("{p}{} {token}", if mark(p) { "*" } else { "" })
        })
        .collect()
}

/// The hook name of a patching site (`resid_pre`, `attn.hook_z`, …).
pub fn site_name(site: PatchSite) -> &'static str {
    match site {
        PatchSite::ResidPre => "resid_pre",
        PatchSite::ResidMid => "resid_mid",
        PatchSite::ResidPost => "resid_post",
        PatchSite::AttnOut => "attn_out",
        PatchSite::MlpOut => "mlp_out",
        PatchSite::HeadZ => "attn.hook_z",
        PatchSite::HeadPattern => "attn.hook_pattern",
        PatchSite::HeadQ => "attn.hook_q",
        PatchSite::HeadK => "attn.hook_k",
        PatchSite::HeadV => "attn.hook_v",
    }
}

impl PatchingResult {
    /// The normalised scores as a heatmap on a diverging scale (1 = the clean metric, 0 = the
    /// corrupted one): layer × position for per-position sites; for per-head sites layer ×
    /// head when every position was patched at once, else (layer, head) × position.
    ///
    /// # Errors
    /// None expected (the result's axes give the labels); the heatmap's shape checks.
    pub fn heatmap(&self, title: &str) -> Result<Svg> {
        let (n_layers, n_heads, n_pos) = self.scores.dim();
        let metric = match self.direction {
            PatchDirection::Denoising => "recovery (1 = clean)",
            PatchDirection::Noising => "kept (1 = unaffected)",
        };
        let per_head = !self.heads.is_empty();
        let options = ChartOptions::titled(title);
        let columns = if self.positions.is_empty() {
            vec!["all positions".to_owned()]
        } else {
            position_labels(&self.tokens, self.positions.iter().copied(), |_| false)
        };
        let map = if per_head && self.positions.is_empty() {
            let grid = self.scores.index_axis(ndarray::Axis(2), 0).to_owned();
            layer_head_heatmap(&grid, metric)
                .rows("layer", self.layers.iter().map(|l| format!("L{l}")).collect())
        } else if per_head {
            let values = self
                .scores
                .to_shape((n_layers * n_heads, n_pos))
                .map_err(|e| explainability_core::Error::invalid_argument(e.to_string()))?
                .to_owned();
            let rows = self
                .layers
                .iter()
                .flat_map(|l| self.heads.iter().map(move |h| format!("L{l}H{h}")))
                .collect();
            Heatmap::new(values).rows("head", rows).columns("position", columns).metric(metric)
        } else {
            Heatmap::new(self.layer_position())
                .rows("layer", self.layers.iter().map(|l| format!("L{l}")).collect())
                .columns("position", columns)
                .metric(metric)
        };
        map.scale(HeatmapScale::Diverging).to_svg(&options)
    }
}

impl CausalTrace {
    /// The indirect effect `p(answer | restored) − p(answer | corrupted)` as a layer × position
    /// heatmap (subject positions marked `*`), on a diverging scale.
    ///
    /// # Errors
    /// None expected; the heatmap's shape checks.
    pub fn heatmap(&self, title: &str) -> Result<Svg> {
        let (n_layers, n_pos) = self.indirect_effect.dim();
        let subject = self.subject.clone();
        Heatmap::new(self.indirect_effect.clone())
            .rows("layer", layer_labels(self.kind, n_layers))
            .columns("position", position_labels(&self.tokens, 0..n_pos, |p| subject.contains(&p)))
            .metric("indirect effect on p(answer)")
            .scale(HeatmapScale::Diverging)
            .to_svg(&ChartOptions::titled(title))
    }
}

/// Row labels of a trace: `L{l}`, or the window's centre `L{l}±` for MLP and attention.
fn layer_labels(kind: TraceKind, n_layers: usize) -> Vec<String> {
    let suffix = if kind == TraceKind::Hidden { "" } else { " (window)" };
    (0..n_layers).map(|l| format!("L{l}{suffix}")).collect()
}

/// An average indirect effect by Meng et al.'s token groups, `[group, layer]` as
/// [`average_by_token_group`](crate::average_by_token_group) returns it, drawn group ×
/// layer (groups no trace has are missing, grey).
///
/// # Errors
/// [`explainability_core::Error::ShapeMismatch`] when `average` does not have one row per
/// token group.
pub fn token_group_heatmap(average: &Array2<f64>, counts: &[usize; 6], title: &str) -> Result<Svg> {
    let rows = TOKEN_GROUPS.iter().zip(counts).map(|(g, n)| format!("{g} ({n})")).collect();
    let layers = (0..average.ncols()).map(|l| l.to_string()).collect();
    Heatmap::new(average.clone())
        .rows("token group (prompts)", rows)
        .columns("layer", layers)
        .metric("average indirect effect")
        .scale(HeatmapScale::Diverging)
        .to_svg(&ChartOptions::titled(title))
}

impl DirectLogitAttribution {
    /// Each head's direct effect on the metric as a layer × head grid (diverging). Models
    /// whose heads are not split (no `hook_z` or no resident `W_O`, e.g. streamed weights)
    /// give a "no data" chart: use [`DirectLogitAttribution::layer_heatmap`].
    pub fn head_heatmap(&self, title: &str) -> Result<Svg> {
        layer_head_heatmap(&self.heads, "direct effect on the logit difference")
            .scale(HeatmapScale::Diverging)
            .to_svg(&ChartOptions::titled(title))
    }

    /// Attention (heads and the rest together) and MLP of every layer as a layer × {attn,
    /// mlp} grid (diverging); embedding and norm bias are in the tooltip of the title row.
    pub fn layer_heatmap(&self, title: &str) -> Result<Svg> {
        let n_layers = self.components.iter().filter_map(|c| c.layer).max().map_or(0, |l| l + 1);
        let mut values = Array2::<f64>::zeros((n_layers, 2));
        for c in &self.components {
            let column = match c.kind {
                DlaComponentKind::Head | DlaComponentKind::AttnRest => 0,
                DlaComponentKind::Mlp => 1,
                DlaComponentKind::Embed | DlaComponentKind::NormBias => continue,
            };
            if let Some(l) = c.layer {
                values[(l, column)] += c.value;
            }
        }
        let others: Vec<String> = self
            .components
            .iter()
            .filter(|c| c.layer.is_none())
            .map(|c| format!("{} {}", c.label, format_score(c.value)))
            .collect();
        let title = format!("{title} (also {})", others.join(", "));
        Heatmap::new(values)
            .rows("layer", (0..n_layers).map(|l| format!("L{l}")).collect())
            .columns("component", vec!["attn".into(), "mlp".into()])
            .metric("direct effect on the logit difference")
            .scale(HeatmapScale::Diverging)
            .to_svg(&ChartOptions::titled(title))
    }
}

/// `blocks.3.hook_resid_pre` → `L3 pre`, `blocks.29.hook_resid_post` → `L29 post`; other
/// labels unchanged.
fn short_entry(label: &str) -> String {
    let parts: Vec<&str> = label.split('.').collect();
    match parts.as_slice() {
        ["blocks", layer, "hook_resid_pre"] => format!("L{layer} pre"),
        ["blocks", layer, "hook_resid_post"] => format!("L{layer} post"),
        _ => label.to_owned(),
    }
}

impl LogitLensResult {
    /// The logit-lens table: entries (layers) × positions, each cell showing the lens's top
    /// token and, with a target, the target's rank (`#0` = top-1); coloured by the target's
    /// log-probability (by the top token's when there is no target), sequential scale. The
    /// tooltip lists the top tokens with probabilities, the target's rank and log-probability
    /// and the KL divergence to the output.
    ///
    /// # Errors
    /// None expected; the heatmap's shape checks.
    pub fn table(&self, title: &str) -> Result<Svg> {
        let n_entries = self.cells.len();
        let n_pos = self.cells.first().map_or(0, Vec::len);
        let start = self.start;
        let has_target = self.cells.iter().flatten().any(|c| c.target_log_prob.is_some());
        let cell = |e: usize, p: usize| self.cells.get(e).and_then(|row| row.get(p));
        let values = Array2::from_shape_fn((n_entries, n_pos), |(e, p)| {
            cell(e, p).map_or(f64::NAN, |c| {
                if has_target {
                    c.target_log_prob.unwrap_or(f64::NAN)
                } else {
                    c.top.first().map_or(f64::NAN, |t| t.probability.ln())
                }
            })
        });
        let text = Array2::from_shape_fn((n_entries, n_pos), |(e, p)| {
            let Some(c) = cell(e, p) else { return String::new() };
            let top =
                c.top.first().map_or_else(String::new, |t| explain_viz::display_token(&t.token));
            match c.target_rank {
                Some(rank) => format!("{top}\n#{rank}"),
                None => top,
            }
        });
        let tooltips = Array2::from_shape_fn((n_entries, n_pos), |(e, p)| {
            let Some(c) = cell(e, p) else { return String::new() };
            let top: Vec<String> =
                c.top.iter().map(|t| format!("{:?} {:.3}", t.token, t.probability)).collect();
            let target = match (c.target_rank, c.target_log_prob) {
                (Some(rank), Some(lp)) => {
                    format!("; target rank {rank}, log p {}", format_score(lp))
                }
                _ => String::new(),
            };
            format!(
                "{} at position {} {:?}: top {}{target}; KL to output {}",
                self.labels.get(e).map_or("", String::as_str),
                start + p,
                self.tokens.get(start + p).map_or("", String::as_str),
                top.join(", "),
                format_score(c.kl_to_final)
            )
        });
        let metric = if has_target { "log p(target)" } else { "log p(top token)" };
        Heatmap::new(values)
            .rows("entry", self.labels.iter().map(|l| short_entry(l)).collect())
            .columns("position", position_labels(&self.tokens, start..start + n_pos, |_| false))
            .metric(metric)
            .scale(HeatmapScale::Sequential)
            .cell_text(text)
            .tooltips(tooltips)
            .to_svg(&ChartOptions::titled(title))
    }
}

/// What [`report_section`] draws; every part is optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct InternalsPictures<'a> {
    /// The logit lens (its table).
    pub lens: Option<&'a LogitLensResult>,
    /// A direct logit attribution (per-head and per-layer grids).
    pub dla: Option<&'a DirectLogitAttribution>,
    /// Patching results, each with the method's name (`activation patching`, `AtP`): one
    /// heatmap each.
    pub patching: &'a [(String, PatchingResult)],
    /// Causal traces (one heatmap each).
    pub traces: &'a [CausalTrace],
}

impl InternalsPictures<'_> {
    /// Every picture as `(file stem, caption, svg)`, in the order of the fields; stems are
    /// `logit_lens`, `dla_heads`, `dla_layers`, `patching_{i}_{site}`, `causal_trace_{kind}_{i}`.
    ///
    /// # Errors
    /// As the pictures (none expected for consistent results).
    pub fn pictures(&self) -> Result<Vec<(String, String, Svg)>> {
        let mut out = Vec::new();
        if let Some(lens) = self.lens {
            out.push((
                "logit_lens".to_owned(),
                "Logit lens: each entry's top token and the target's rank (#0 = top-1), \
                 coloured by the target's log-probability"
                    .to_owned(),
                lens.table("Logit lens")?,
            ));
        }
        if let Some(dla) = self.dla {
            let against =
                dla.metric.against.map_or_else(String::new, |id| format!(" − logit(#{id})"));
            let metric = format!(
                "direct logit attribution of logit(#{}){against} at position {} (Σ components {}, \
                 model {})",
                dla.metric.answer,
                dla.position,
                format_score(dla.total),
                format_score(dla.metric_value)
            );
            if !dla.heads.is_empty() {
                out.push((
                    "dla_heads".to_owned(),
                    format!("Per head: {metric}"),
                    dla.head_heatmap("DLA per head")?,
                ));
            }
            out.push((
                "dla_layers".to_owned(),
                format!("Per layer (attention, MLP): {metric}"),
                dla.layer_heatmap("DLA per layer")?,
            ));
        }
        for (i, (method, p)) in self.patching.iter().enumerate() {
            let name = site_name(p.site);
            let title = format!("{method} of {name} ({:?})", p.direction);
            out.push((
                format!("patching_{i}_{}", name.replace('.', "_")),
                format!(
                    "{title}: (patched − corrupted) / (clean − corrupted); clean {}, corrupted {}",
                    format_score(p.clean_metric),
                    format_score(p.corrupted_metric)
                ),
                p.heatmap(&title)?,
            ));
        }
        for (i, t) in self.traces.iter().enumerate() {
            let title = format!("Causal tracing, {:?} states", t.kind);
            let kind = format!("{:?}", t.kind).to_lowercase();
            out.push((
                format!("causal_trace_{kind}_{i}"),
                format!(
                    "{title}: p(answer) clean {}, corrupted {}; subject tokens marked *",
                    format_score(t.clean_probability),
                    format_score(t.corrupted_probability)
                ),
                t.heatmap(&title)?,
            ));
        }
        Ok(out)
    }

    /// Writes every picture as `{stem}.svg` and `{stem}.png` into `dir` (created when
    /// missing), and `report.html` (titled `title`) that embeds them all in one
    /// [`report_section`]; returns the paths written.
    ///
    /// # Errors
    /// [`explainability_core::Error::Io`] naming the file; as [`InternalsPictures::pictures`].
    pub fn write(&self, dir: impl AsRef<Path>, title: &str) -> Result<Vec<PathBuf>> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| explainability_core::Error::io(dir, e))?;
        let mut written = Vec::new();
        for (stem, _, svg) in self.pictures()? {
            let path = dir.join(format!("{stem}.svg"));
            svg.write(&path)?;
            written.push(path);
            let path = dir.join(format!("{stem}.png"));
            svg.write_png(&path, svg.png_scale())?;
            written.push(path);
        }
        let mut report = HtmlReport::new(title);
        report_section(&mut report, self, &[])?;
        let path = dir.join("report.html");
        report.write(&path)?;
        written.push(path);
        Ok(written)
    }
}

/// Adds a "Model internals" section to `report`: the paragraphs of `intro`, then every
/// picture of `pictures`, each captioned; a paragraph says so when there is nothing to draw.
///
/// # Errors
/// As [`InternalsPictures::pictures`].
pub fn report_section(
    report: &mut HtmlReport,
    pictures: &InternalsPictures<'_>,
    intro: &[String],
) -> Result<()> {
    let all = pictures.pictures()?;
    report.section("Model internals", true);
    for line in intro {
        report.paragraph(line);
    }
    if all.is_empty() {
        report.paragraph("No internals were computed.");
    }
    for (_, caption, svg) in &all {
        report.svg(svg, caption);
    }
    report.end_section();
    Ok(())
}
