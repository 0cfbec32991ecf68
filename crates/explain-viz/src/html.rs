//! [`HtmlReport`]: one self-contained HTML file (inline CSS, JS and SVG; no external
//! resource, works offline) built from sections, paragraphs, highlighted token texts, charts
//! and tables. Every string from a model or a user is escaped; a Content-Security-Policy
//! forbids any external load.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;

use explainability_core::{Error, Explanation, Result};

use crate::color::ColorScale;
use crate::svg::Svg;
use crate::text::{FONT_FAMILY, escape_xml, format_score};

const STYLE: &str = "\
body{margin:0;padding:24px 32px;color:#222;background:#fafafa;line-height:1.45}\
h1{font-size:1.6em;margin:0 0 12px}\
details{background:#fff;border:1px solid #ddd;border-radius:6px;margin:12px 0;padding:6px 14px}\
summary{font-weight:600;font-size:1.15em;cursor:pointer;padding:4px 0}\
figure{margin:12px 0;overflow-x:auto}figcaption{color:#555;font-size:.9em;margin-top:4px}\
.tokens{white-space:pre-wrap;word-break:break-word;line-height:1.9;max-height:60vh;overflow-y:auto;\
border:1px solid #eee;padding:8px;background:#fff;font-size:15px}\
.tok{border-radius:3px;padding:1px 0;cursor:default}.tok:hover{outline:2px solid #333}\
.tok.missing{background:#d9d9d9;text-decoration:underline dotted}.tok.dim{opacity:.25}\
.controls{font-size:.9em;color:#444;margin:6px 0}\
table{border-collapse:collapse;margin:10px 0;font-size:.92em;background:#fff}\
th,td{border:1px solid #ddd;padding:4px 10px;text-align:left}th{background:#f0f0f0}\
td.num{text-align:right;font-variant-numeric:tabular-nums}\
pre{background:#f4f4f4;padding:10px;overflow-x:auto}\
.legend span{display:inline-block;padding:0 6px;margin-right:4px;border-radius:3px}\
.tok.span{padding:2px 1px;border:1px solid #bbb}.tok.span sup{font-size:.7em;font-weight:600;\
margin-left:2px;opacity:.85}";

const ERROR_HOOK: &str = "window.addEventListener('error',function(){var r=document.documentElement;\
r.setAttribute('data-js-errors',String(Number(r.getAttribute('data-js-errors')||0)+1));});";

const BEHAVIOUR: &str = "(function(){\
var inputs=document.querySelectorAll('input.threshold');\
for(var i=0;i<inputs.length;i++){(function(inp){\
var box=document.getElementById(inp.getAttribute('data-target'));var out=inp.nextElementSibling;\
inp.addEventListener('input',function(){var t=parseFloat(inp.value);out.textContent=t.toFixed(2);\
var spans=box.querySelectorAll('span.tok');for(var j=0;j<spans.length;j++){\
var v=parseFloat(spans[j].getAttribute('data-r'));spans[j].classList.toggle('dim',!(v>=t));}});\
})(inputs[i]);}\
document.documentElement.setAttribute('data-report-ready','1');})();";

/// A self-contained HTML report, built block by block.
///
/// # Examples
/// ```
/// use explain_viz::HtmlReport;
/// let mut report = HtmlReport::new("Why \"Paris\"?");
/// report.section("Tokens", true).paragraph("Scores of gradient × input.");
/// report.token_highlight(&["The".into(), "▁capital".into()], &[0.2, -0.7], "gradient × input")?;
/// report.table(&["metric", "value"], &[vec!["AOPC".into(), "0.42".into()]])?;
/// let html = report.render();
/// assert!(html.contains("&quot;Paris&quot;"));
/// # Ok::<(), explainability_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct HtmlReport {
    title: String,
    body: String,
    section_open: bool,
    blocks: usize,
}

/// The multi-token feature spans of an explanation and their scores, when its metadata has
/// them (`features`: `[[start, end], …]`, `feature_scores`) and some span is longer than one
/// token.
fn feature_spans(e: &Explanation) -> Option<(Vec<Range<usize>>, Vec<f64>)> {
    let features = e.metadata.get("features")?.as_array()?;
    let scores = e.metadata.get("feature_scores")?.as_array()?;
    let spans: Vec<Range<usize>> = features
        .iter()
        .map(|f| {
            let pair = f.as_array()?;
            Some(pair.first()?.as_u64()? as usize..pair.get(1)?.as_u64()? as usize)
        })
        .collect::<Option<_>>()?;
    let scores: Vec<f64> = scores.iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect();
    (spans.iter().any(|s| s.len() > 1) && spans.len() == scores.len()).then_some((spans, scores))
}

/// How a token reads inside running text: SentencePiece / byte-level word markers become
/// spaces, newlines a visible `⏎` followed by a line break.
fn token_text(token: &str) -> String {
    let mut out = String::with_capacity(token.len());
    for c in token.chars() {
        match c {
            '▁' | 'Ġ' => out.push(' '),
            '\n' | 'Ċ' => out.push_str("⏎\n"),
            c => out.push(c),
        }
    }
    out
}

impl HtmlReport {
    /// An empty report with a title.
    pub fn new(title: impl Into<String>) -> Self {
        Self { title: title.into(), body: String::new(), section_open: false, blocks: 0 }
    }

    /// Starts a collapsible section (`<details>`), open or closed at load; the previous
    /// section ends here.
    pub fn section(&mut self, title: &str, open: bool) -> &mut Self {
        self.end_section();
        let _ = writeln!(
            self.body,
            "<details{}><summary>{}</summary>",
            if open { " open" } else { "" },
            escape_xml(title)
        );
        self.section_open = true;
        self
    }

    /// Ends the current section (later blocks go to the top level).
    pub fn end_section(&mut self) -> &mut Self {
        if self.section_open {
            self.body.push_str("</details>\n");
            self.section_open = false;
        }
        self
    }

    /// A paragraph of plain text (escaped).
    pub fn paragraph(&mut self, text: &str) -> &mut Self {
        let _ = writeln!(self.body, "<p>{}</p>", escape_xml(text));
        self
    }

    /// Preformatted text, e.g. JSON (escaped).
    pub fn preformatted(&mut self, text: &str) -> &mut Self {
        let _ = writeln!(self.body, "<pre>{}</pre>", escape_xml(text));
        self
    }

    /// The text as highlighted tokens: background blue (negative) – white – red (positive)
    /// on one symmetric scale, grey and dotted for NaN; hovering a token shows its position
    /// and score. A slider dims tokens below a fraction of the largest |score|, which keeps
    /// 1,000+ token texts readable; the box scrolls.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `scores` does not have one value per token.
    pub fn token_highlight(
        &mut self,
        tokens: &[String],
        scores: &[f64],
        caption: &str,
    ) -> Result<&mut Self> {
        if tokens.len() != scores.len() {
            return Err(Error::ShapeMismatch {
                what: "token scores".into(),
                expected: format!("{} values (one per token)", tokens.len()),
                actual: vec![scores.len() as i64],
            });
        }
        self.blocks += 1;
        let id = format!("tokens-{}", self.blocks);
        let scale = ColorScale::diverging(scores.iter().copied());
        let max_abs = match scale {
            ColorScale::Diverging { max_abs } => max_abs,
            ColorScale::Sequential { .. } => 0.0,
        };
        self.body.push_str("<figure>");
        if tokens.is_empty() {
            self.body.push_str("<div class=\"tokens empty\"><em>(no tokens)</em></div>");
        } else {
            let _ = write!(
                self.body,
                "<div class=\"controls\"><label>hide tokens below |score| / max \
                 <input type=\"range\" class=\"threshold\" data-target=\"{id}\" min=\"0\" max=\"1\" \
                 step=\"0.01\" value=\"0\"><output>0.00</output></label> \
                 <span class=\"legend\"><span style=\"background:{};color:#fff\">negative</span>\
                 <span style=\"background:{};color:#fff\">positive</span>\
                 <span style=\"background:#d9d9d9\">n/a</span> (max |score| {})</span></div>",
                ColorScale::Diverging { max_abs: 1.0 }.color(-1.0),
                ColorScale::Diverging { max_abs: 1.0 }.color(1.0),
                escape_xml(&format_score(max_abs))
            );
            let _ = write!(self.body, "<div class=\"tokens\" id=\"{id}\">");
            for (i, (token, &score)) in tokens.iter().zip(scores).enumerate() {
                let relative = if score.is_nan() {
                    String::new()
                } else if max_abs > 0.0 {
                    format!("{:.4}", (score.abs() / max_abs).min(1.0))
                } else {
                    "0".to_owned()
                };
                let light = if scale.needs_light_text(score) { ";color:#fff" } else { "" };
                let _ = write!(
                    self.body,
                    "<span class=\"tok{}\" style=\"background:{}{light}\" data-r=\"{relative}\" \
                     title=\"#{i} {}: {}\">{}</span>",
                    if score.is_nan() { " missing" } else { "" },
                    scale.color(score),
                    escape_xml(token),
                    escape_xml(&format_score(score)),
                    escape_xml(&token_text(token))
                );
            }
            self.body.push_str("</div>");
        }
        let _ = writeln!(self.body, "<figcaption>{}</figcaption></figure>", escape_xml(caption));
        Ok(self)
    }

    /// The text with whole spans highlighted (context attribution: which sentences or
    /// passages support the output): each span is one box coloured by its score on the
    /// diverging scale, with its rank as a superscript and its score on hover; tokens outside
    /// every span stay plain. The threshold slider dims spans below a fraction of the largest
    /// |score|. A table of the spans, highest score first, follows.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `scores` does not have one value per span;
    /// [`Error::SpanOutOfRange`] for an empty span or one past the tokens;
    /// [`Error::InvalidArgument`] for overlapping or unordered spans.
    pub fn span_highlight(
        &mut self,
        tokens: &[String],
        spans: &[Range<usize>],
        scores: &[f64],
        caption: &str,
    ) -> Result<&mut Self> {
        if spans.len() != scores.len() {
            return Err(Error::ShapeMismatch {
                what: "span scores".into(),
                expected: format!("{} values (one per span)", spans.len()),
                actual: vec![scores.len() as i64],
            });
        }
        let mut end = 0;
        for s in spans {
            if s.start >= s.end || s.end > tokens.len() {
                return Err(Error::SpanOutOfRange {
                    start: s.start,
                    end: s.end,
                    len: tokens.len(),
                });
            }
            if s.start < end {
                return Err(Error::invalid_argument(format!(
                    "span {}..{} overlaps or precedes the span before it; spans must be ordered \
                     and disjoint",
                    s.start, s.end
                )));
            }
            end = s.end;
        }
        self.blocks += 1;
        let id = format!("tokens-{}", self.blocks);
        let scale = ColorScale::diverging(scores.iter().copied());
        let max_abs = match scale {
            ColorScale::Diverging { max_abs } => max_abs,
            ColorScale::Sequential { .. } => 0.0,
        };
        let mut order: Vec<usize> = (0..spans.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let mut rank = vec![0; spans.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r + 1;
        }
        let text_of = |r: &Range<usize>| -> String {
            tokens[r.clone()].iter().map(|t| token_text(t)).collect()
        };
        let _ = write!(
            self.body,
            "<figure><div class=\"controls\"><label>hide spans below |score| / max \
             <input type=\"range\" class=\"threshold\" data-target=\"{id}\" min=\"0\" \
             max=\"1\" step=\"0.01\" value=\"0\"><output>0.00</output></label> \
             <span class=\"legend\">superscript: rank; max |score| {}</span></div>\
             <div class=\"tokens\" id=\"{id}\">",
            escape_xml(&format_score(max_abs))
        );
        let mut at = 0;
        for (i, (span, &score)) in spans.iter().zip(scores).enumerate() {
            if at < span.start {
                let _ = write!(self.body, "{}", escape_xml(&text_of(&(at..span.start))));
            }
            let relative = if score.is_nan() {
                String::new()
            } else if max_abs > 0.0 {
                format!("{:.4}", (score.abs() / max_abs).min(1.0))
            } else {
                "0".to_owned()
            };
            let light = if scale.needs_light_text(score) { ";color:#fff" } else { "" };
            let _ = write!(
                self.body,
                "<span class=\"tok span{}\" style=\"background:{}{light}\" data-r=\"{relative}\" \
                 data-span=\"{i}\" title=\"span {i} (tokens {}..{}), rank {}: {}\">{}<sup>{}</sup>\
                 </span>",
                if score.is_nan() { " missing" } else { "" },
                scale.color(score),
                span.start,
                span.end,
                rank[i],
                escape_xml(&format_score(score)),
                escape_xml(&text_of(span)),
                rank[i]
            );
            at = span.end;
        }
        if at < tokens.len() {
            let _ = write!(self.body, "{}", escape_xml(&text_of(&(at..tokens.len()))));
        }
        let _ =
            writeln!(self.body, "</div><figcaption>{}</figcaption></figure>", escape_xml(caption));
        let rows: Vec<Vec<String>> = order
            .iter()
            .map(|&i| {
                vec![
                    rank[i].to_string(),
                    format_score(scores[i]),
                    text_of(&spans[i]).trim().to_owned(),
                ]
            })
            .collect();
        self.table(&["rank", "score", "span"], &rows)
    }

    /// [`HtmlReport::token_highlight`] of an explanation, captioned with its method and target;
    /// an explanation over multi-token spans (metadata `features` and `feature_scores`, as the
    /// perturbation explainers write them: ContextCite, feature ablation over sentences) is
    /// shown with [`HtmlReport::span_highlight`] instead when its spans are disjoint.
    pub fn explanation(&mut self, explanation: &Explanation) -> &mut Self {
        let scores = explanation.scores.to_vec();
        let caption = match &explanation.target_token {
            Some(target) => format!("{} — target {target:?}", explanation.method),
            None => explanation.method.clone(),
        };
        if let Some((spans, span_scores)) = feature_spans(explanation) {
            // span_highlight checks everything before it writes: on an error nothing is
            // written and the tokens are shown instead.
            if self.span_highlight(&explanation.tokens, &spans, &span_scores, &caption).is_ok() {
                return self;
            }
        }
        // Tokens and scores of an `Explanation` have equal lengths by construction; a
        // malformed one is shown as a paragraph instead of failing the report.
        if let Err(e) = self.token_highlight(&explanation.tokens, &scores, &caption) {
            self.paragraph(&format!("cannot show {caption}: {e}"));
        }
        self
    }

    /// A chart produced by this crate, inlined, with a caption.
    pub fn svg(&mut self, svg: &Svg, caption: &str) -> &mut Self {
        let _ = writeln!(
            self.body,
            "<figure>{}<figcaption>{}</figcaption></figure>",
            svg.as_str(),
            escape_xml(caption)
        );
        self
    }

    /// A table; cells that parse as numbers are right-aligned.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when a row has another number of cells than `headers`.
    pub fn table<H: AsRef<str>>(
        &mut self,
        headers: &[H],
        rows: &[Vec<String>],
    ) -> Result<&mut Self> {
        if let Some((r, row)) = rows.iter().enumerate().find(|(_, row)| row.len() != headers.len())
        {
            return Err(Error::ShapeMismatch {
                what: format!("table row {r}"),
                expected: format!("{} cells (one per header)", headers.len()),
                actual: vec![row.len() as i64],
            });
        }
        self.body.push_str("<table><thead><tr>");
        for h in headers {
            let _ = write!(self.body, "<th>{}</th>", escape_xml(h.as_ref()));
        }
        self.body.push_str("</tr></thead><tbody>");
        for row in rows {
            self.body.push_str("<tr>");
            for cell in row {
                let class = if cell.trim().parse::<f64>().is_ok() { " class=\"num\"" } else { "" };
                let _ = write!(self.body, "<td{class}>{}</td>", escape_xml(cell));
            }
            self.body.push_str("</tr>");
        }
        self.body.push_str("</tbody></table>\n");
        Ok(self)
    }

    /// A two-column table of named numbers (NaN shown as `n/a`).
    pub fn metrics(&mut self, metrics: &[(&str, f64)]) -> &mut Self {
        let rows: Vec<Vec<String>> =
            metrics.iter().map(|(name, v)| vec![(*name).to_owned(), format_score(*v)]).collect();
        // Every row has two cells, as the headers.
        if let Err(e) = self.table(&["metric", "value"], &rows) {
            self.paragraph(&e.to_string());
        }
        self
    }

    /// The complete HTML document.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(self.body.len() + 4096);
        let title = escape_xml(&self.title);
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
             style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n\
             <title>{title}</title>\n<script>{ERROR_HOOK}</script>\n\
             <style>body{{font-family:{}}}{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n",
            escape_xml(FONT_FAMILY),
        );
        out.push_str(&self.body);
        if self.section_open {
            out.push_str("</details>\n");
        }
        let _ = write!(out, "<script>{BEHAVIOUR}</script>\n</body>\n</html>\n");
        out
    }

    /// Writes [`HtmlReport::render`] to `path` (parent folders created).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be written.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::write(path, self.render()).map_err(|e| Error::io(path, e))
    }
}
