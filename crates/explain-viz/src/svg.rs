//! [`Svg`], a finished SVG document, and the crate-internal canvas that writes one. All text
//! reaches the document through the canvas, which escapes it.

use std::fmt::{self, Write as _};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use resvg::{tiny_skia, usvg};

use explainability_core::{Error, Result};

use crate::text::{FONT_FAMILY, escape_xml, num};

/// A complete, standalone SVG document produced by this crate. Every string in it that came
/// from a model or a user is escaped, so it can be inlined into HTML as is.
#[derive(Debug, Clone, PartialEq)]
pub struct Svg {
    markup: String,
    width: f64,
    height: f64,
}

impl Svg {
    /// The SVG markup (starts with `<svg`).
    pub fn as_str(&self) -> &str {
        &self.markup
    }

    /// The SVG markup, owned.
    pub fn into_string(self) -> String {
        self.markup
    }

    /// Width in CSS pixels.
    pub fn width(&self) -> f64 {
        self.width
    }

    /// Height in CSS pixels.
    pub fn height(&self) -> f64 {
        self.height
    }

    /// Writes the document to `path` (UTF-8, with an XML declaration).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be written.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let document = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}\n", self.markup);
        std::fs::write(path, document).map_err(|e| Error::io(path, e))
    }
}

/// Largest width or height, in pixels, of a PNG rendered by [`Svg::to_png`]: a 1,000-token
/// chart stays well inside it, and a bug that sizes a chart by a huge number becomes an error
/// instead of a multi-gigabyte allocation.
pub const MAX_PNG_SIDE: u32 = 16_384;

/// The system's fonts, loaded once per process (DejaVu and, where installed, Noto CJK).
fn fonts() -> Arc<usvg::fontdb::Database> {
    static FONTS: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    Arc::clone(FONTS.get_or_init(|| {
        let mut db = usvg::fontdb::Database::new();
        db.load_system_fonts();
        Arc::new(db)
    }))
}

impl Svg {
    /// Renders the document to PNG bytes at `scale` × its CSS size, on a white background,
    /// with resvg (pure Rust; text uses the system's fonts, so CJK glyphs need a CJK font
    /// such as Noto CJK installed — without one they are drawn as boxes, as in a browser).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a scale that is not positive and finite or an image
    /// side above [`MAX_PNG_SIDE`]; [`Error::InvalidArgument`] if the markup does not parse
    /// (not expected for documents of this crate).
    pub fn to_png(&self, scale: f32) -> Result<Vec<u8>> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(Error::invalid_argument(format!(
                "PNG scale must be positive, got {scale}"
            )));
        }
        let options = usvg::Options { fontdb: fonts(), ..usvg::Options::default() };
        let tree = usvg::Tree::from_str(&self.markup, &options)
            .map_err(|e| Error::invalid_argument(format!("SVG does not parse: {e}")))?;
        let size = tree.size();
        let (w, h) = ((size.width() * scale).ceil(), (size.height() * scale).ceil());
        if !(w >= 1.0 && h >= 1.0 && w <= MAX_PNG_SIDE as f32 && h <= MAX_PNG_SIDE as f32) {
            return Err(Error::invalid_argument(format!(
                "a {w}×{h} pixel PNG is outside 1..={MAX_PNG_SIDE} pixels per side; lower the scale"
            )));
        }
        let mut pixmap = tiny_skia::Pixmap::new(w as u32, h as u32)
            .ok_or_else(|| Error::invalid_argument(format!("cannot allocate a {w}×{h} image")))?;
        pixmap.fill(tiny_skia::Color::WHITE);
        resvg::render(&tree, tiny_skia::Transform::from_scale(scale, scale), &mut pixmap.as_mut());
        pixmap
            .encode_png()
            .map_err(|e| Error::invalid_argument(format!("PNG encoding failed: {e}")))
    }

    /// The PNG scale for a sharp picture: 2× the CSS size, less when that would pass
    /// [`MAX_PNG_SIDE`].
    pub fn png_scale(&self) -> f32 {
        let side = self.width.max(self.height).max(1.0);
        (2.0_f64).min(f64::from(MAX_PNG_SIDE - 2) / side) as f32
    }

    /// Writes [`Svg::to_png`] at `scale` to `path`.
    ///
    /// # Errors
    /// As [`Svg::to_png`]; [`Error::Io`] when the file cannot be written.
    pub fn write_png(&self, path: impl AsRef<Path>, scale: f32) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_png(scale)?;
        std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
    }
}

impl fmt::Display for Svg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.markup)
    }
}

/// How a piece of text is placed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TextStyle {
    pub size: f64,
    pub anchor: &'static str,
    pub rotate: Option<f64>,
    pub bold: bool,
    pub fill: &'static str,
    pub class: &'static str,
}

impl TextStyle {
    pub(crate) const fn new(size: f64, anchor: &'static str) -> Self {
        Self { size, anchor, rotate: None, bold: false, fill: "#222222", class: "label" }
    }
    pub(crate) const fn rotated(mut self, degrees: f64) -> Self {
        self.rotate = Some(degrees);
        self
    }
    pub(crate) const fn bold(mut self) -> Self {
        self.bold = true;
        self
    }
    pub(crate) const fn fill(mut self, fill: &'static str) -> Self {
        self.fill = fill;
        self
    }
    pub(crate) const fn class(mut self, class: &'static str) -> Self {
        self.class = class;
        self
    }
}

/// Writes SVG elements into a string; every text and attribute value is escaped here.
pub(crate) struct Canvas {
    out: String,
    /// Id of the arrow marker, derived from the title and size so that several charts
    /// inlined into one HTML page do not share an id, while output stays deterministic.
    marker_id: String,
    width: f64,
    height: f64,
}

impl Canvas {
    /// Opens a document of the given size with a white background and an accessible title.
    pub(crate) fn new(width: f64, height: f64, title: &str) -> Self {
        let mut out = String::with_capacity(4096);
        let _ = write!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
             viewBox=\"0 0 {w} {h}\" font-family=\"{font}\" role=\"img\">\
             <title>{title}</title>\
             <rect class=\"background\" x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>",
            w = num(width),
            h = num(height),
            font = escape_xml(FONT_FAMILY),
            title = escape_xml(title),
        );
        // FNV-1a over the opening tag (title and size).
        let hash = out.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Self { out, marker_id: format!("arrow-{hash:016x}"), width, height }
    }

    /// A rectangle; `tooltip` becomes a `<title>` child (shown on hover).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rect(
        &mut self,
        class: &str,
        x: f64,
        y: f64,
        w: f64,
        h: f64,
        fill: &str,
        stroke: Option<&str>,
        tooltip: Option<&str>,
    ) {
        let _ = write!(
            self.out,
            "<rect class=\"{}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\"",
            escape_xml(class),
            num(x),
            num(y),
            num(w.max(0.0)),
            num(h.max(0.0)),
            escape_xml(fill)
        );
        if let Some(stroke) = stroke {
            let _ = write!(self.out, " stroke=\"{}\" stroke-width=\"0.5\"", escape_xml(stroke));
        }
        self.close_with_tooltip("rect", tooltip);
    }

    /// A straight line.
    pub(crate) fn line(
        &mut self,
        class: &str,
        from: (f64, f64),
        to: (f64, f64),
        stroke: &str,
        width: f64,
    ) {
        let _ = write!(
            self.out,
            "<line class=\"{}\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"{}\"/>",
            escape_xml(class),
            num(from.0),
            num(from.1),
            num(to.0),
            num(to.1),
            escape_xml(stroke),
            num(width)
        );
    }

    /// An open polyline through `points` (non-finite points are skipped by the caller).
    pub(crate) fn polyline(
        &mut self,
        class: &str,
        points: &[(f64, f64)],
        stroke: &str,
        width: f64,
    ) {
        let list: Vec<String> =
            points.iter().map(|(x, y)| format!("{},{}", num(*x), num(*y))).collect();
        let _ = write!(
            self.out,
            "<polyline class=\"{}\" points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\"/>",
            escape_xml(class),
            list.join(" "),
            escape_xml(stroke),
            num(width)
        );
    }

    /// A path with the given `d`, stroke and opacity; `tooltip` as for [`Canvas::rect`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn path(
        &mut self,
        class: &str,
        d: &str,
        stroke: &str,
        width: f64,
        opacity: f64,
        marker: bool,
        tooltip: Option<&str>,
    ) {
        let _ = write!(
            self.out,
            "<path class=\"{}\" d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\" stroke-opacity=\"{}\"",
            escape_xml(class),
            escape_xml(d),
            escape_xml(stroke),
            num(width),
            num(opacity.clamp(0.0, 1.0))
        );
        if marker {
            let _ = write!(self.out, " marker-end=\"url(#{})\"", self.marker_id);
        }
        self.close_with_tooltip("path", tooltip);
    }

    /// A circle; `tooltip` as for [`Canvas::rect`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn circle(
        &mut self,
        class: &str,
        cx: f64,
        cy: f64,
        r: f64,
        fill: &str,
        stroke: &str,
        tooltip: Option<&str>,
    ) {
        let _ = write!(
            self.out,
            "<circle class=\"{}\" cx=\"{}\" cy=\"{}\" r=\"{}\" fill=\"{}\" stroke=\"{}\" stroke-width=\"1\"",
            escape_xml(class),
            num(cx),
            num(cy),
            num(r.max(0.0)),
            escape_xml(fill),
            escape_xml(stroke)
        );
        self.close_with_tooltip("circle", tooltip);
    }

    /// Text at `(x, y)`, escaped, optionally rotated around its anchor point.
    pub(crate) fn text(&mut self, x: f64, y: f64, text: &str, style: TextStyle) {
        let _ = write!(
            self.out,
            "<text class=\"{}\" x=\"{}\" y=\"{}\" font-size=\"{}\" text-anchor=\"{}\" fill=\"{}\"",
            style.class,
            num(x),
            num(y),
            num(style.size),
            style.anchor,
            style.fill
        );
        if style.bold {
            self.out.push_str(" font-weight=\"bold\"");
        }
        if let Some(angle) = style.rotate {
            let _ = write!(self.out, " transform=\"rotate({} {} {})\"", num(angle), num(x), num(y));
        }
        let _ = write!(self.out, ">{}</text>", escape_xml(text));
    }

    /// Text with a hover tooltip holding the full (untruncated) string.
    pub(crate) fn text_with_tooltip(
        &mut self,
        x: f64,
        y: f64,
        text: &str,
        full: &str,
        style: TextStyle,
    ) {
        if text == full {
            self.text(x, y, text, style);
            return;
        }
        self.out.push_str("<g>");
        let _ = write!(self.out, "<title>{}</title>", escape_xml(full));
        self.text(x, y, text, style);
        self.out.push_str("</g>");
    }

    /// Defines the arrow-head marker used by directed edges.
    pub(crate) fn arrow_marker(&mut self) {
        let _ = write!(self.out, "<defs><marker id=\"{}\"", self.marker_id);
        self.out.push_str(
            " viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" \
             markerWidth=\"6\" markerHeight=\"6\" orient=\"auto-start-reverse\">\
             <path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"#555555\"/></marker></defs>",
        );
    }

    /// A centred title line at the top.
    pub(crate) fn heading(&mut self, title: &str) {
        let width = self.width;
        self.text(width / 2.0, 20.0, title, TextStyle::new(14.0, "middle").bold().class("title"));
    }

    /// A "nothing to draw" message in the middle of the canvas.
    pub(crate) fn no_data(&mut self, message: &str) {
        let (w, h) = (self.width, self.height);
        self.text(
            w / 2.0,
            h / 2.0,
            message,
            TextStyle::new(13.0, "middle").fill("#777777").class("no-data"),
        );
    }

    fn close_with_tooltip(&mut self, element: &str, tooltip: Option<&str>) {
        match tooltip {
            Some(tip) => {
                let _ = write!(self.out, "><title>{}</title></{element}>", escape_xml(tip));
            }
            None => self.out.push_str("/>"),
        }
    }

    /// Closes the document.
    pub(crate) fn finish(mut self) -> Svg {
        self.out.push_str("</svg>");
        Svg { markup: self.out, width: self.width, height: self.height }
    }
}
