//! Text helpers shared by every output: XML/HTML escaping, DOT quoting, display width,
//! truncation with an ellipsis, number formatting, and the font-family fallback list.

use std::fmt::Write as _;

/// Font-family list used by every SVG and the HTML report: system UI fonts first, then fonts
/// that cover Chinese, Japanese and Korean, then the generic `sans-serif`.
pub const FONT_FAMILY: &str = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Noto Sans', \
'Noto Sans CJK SC', 'Source Han Sans SC', 'PingFang SC', 'Hiragino Sans GB', 'Microsoft YaHei', \
'WenQuanYi Micro Hei', 'Noto Sans CJK JP', 'Noto Sans CJK KR', 'DejaVu Sans', Arial, sans-serif";

/// Escapes text for XML or HTML element content and for double- or single-quoted attribute
/// values (`&`, `<`, `>`, `"`, `'`). Control characters other than tab, newline and carriage
/// return, which XML 1.0 forbids, become U+FFFD.
pub fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{7f}' || c == '\u{fffe}' || c == '\u{ffff}' => {
                out.push('\u{fffd}');
            }
            c => out.push(c),
        }
    }
    out
}

/// Quotes a string for Graphviz DOT: surrounded by double quotes, with `"` and `\` escaped and
/// line breaks written as `\n`.
pub fn quote_dot(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c if (c as u32) < 0x20 => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Makes a token readable as a label: the SentencePiece / byte-level BPE word-start markers
/// (`▁`, `Ġ`) become a visible space `␣`, newlines `⏎`, tabs `⇥`, other control characters
/// are dropped; an empty token becomes `∅`.
pub fn display_token(token: &str) -> String {
    let mut out = String::with_capacity(token.len());
    for c in token.chars() {
        match c {
            '▁' | 'Ġ' | ' ' => out.push('␣'),
            '\n' | 'Ċ' => out.push('⏎'),
            '\t' | 'ĉ' => out.push('⇥'),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    if out.is_empty() {
        out.push('∅');
    }
    out
}

/// Whether a character is drawn about twice as wide as a Latin letter (CJK ideographs,
/// kana, Hangul, full-width forms).
fn is_wide(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x115F | 0x2E80..=0x303E | 0x3041..=0x33FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6 | 0x1F300..=0x1F64F | 0x20000..=0x3FFFD)
}

/// Display width in "Latin letter" units: wide (CJK) characters count 2, others 1.
pub fn display_width(text: &str) -> usize {
    text.chars().map(|c| if is_wide(c) { 2 } else { 1 }).sum()
}

/// Shortens `text` to at most `max_width` display units (see [`display_width`]), replacing the
/// cut part with `…`. Works on characters, never splits a UTF-8 sequence. `max_width` below 1
/// is treated as 1.
pub fn truncate(text: &str, max_width: usize) -> String {
    let max_width = max_width.max(1);
    if display_width(text) <= max_width {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut width = 0;
    for c in text.chars() {
        let w = if is_wide(c) { 2 } else { 1 };
        if width + w > max_width - 1 {
            break;
        }
        width += w;
        out.push(c);
    }
    out.push('…');
    out
}

/// Shortens `text` to at most `max_width` display units by cutting its middle (`model.…
/// 12.mlp`), for labels whose end tells them apart (parameter and layer names).
pub fn truncate_middle(text: &str, max_width: usize) -> String {
    let max_width = max_width.max(3);
    if display_width(text) <= max_width {
        return text.to_owned();
    }
    let width = |c: char| if is_wide(c) { 2 } else { 1 };
    let budget = max_width - 1;
    // The end usually tells labels apart: it gets the larger half.
    let tail_budget = budget.div_ceil(2);
    let head_budget = budget - tail_budget;
    let mut tail = Vec::new();
    let mut used = 0;
    for c in text.chars().rev() {
        if used + width(c) > tail_budget {
            break;
        }
        used += width(c);
        tail.push(c);
    }
    let mut head = String::new();
    used = 0;
    for c in text.chars() {
        if used + width(c) > head_budget {
            break;
        }
        used += width(c);
        head.push(c);
    }
    let tail: String = tail.into_iter().rev().collect();
    format!("{head}…{tail}")
}

/// Formats an axis tick: like [`format_score`] without trailing zeros (`0.2`, `1`).
pub(crate) fn format_tick(value: f64) -> String {
    let s = format_score(value);
    if s.contains('.') && !s.contains('e') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// Formats a score for labels and tooltips: `n/a` for NaN, `±∞` for infinities, otherwise
/// four significant digits (scientific notation outside `[1e-3, 1e5)`).
pub fn format_score(value: f64) -> String {
    if value.is_nan() {
        return "n/a".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+∞".to_owned() } else { "−∞".to_owned() };
    }
    let magnitude = value.abs();
    let mut out = String::new();
    if magnitude == 0.0 {
        out.push('0');
    } else if !(1e-3..1e5).contains(&magnitude) {
        let _ = write!(out, "{value:.3e}");
    } else {
        let decimals = (3 - magnitude.log10().floor() as i32).clamp(0, 6) as usize;
        let _ = write!(out, "{value:.decimals$}");
    }
    out
}

/// Formats a coordinate for SVG with two decimals at most and no trailing zeros.
pub(crate) fn num(value: f64) -> String {
    if !value.is_finite() {
        return "0".to_owned();
    }
    let rounded = (value * 100.0).round() / 100.0;
    if rounded == rounded.trunc() {
        format!("{}", rounded as i64)
    } else {
        let s = format!("{rounded:.2}");
        s.trim_end_matches('0').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape_xml("<script>alert(\"x\")</script> & 'y'"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(escape_xml("a\u{1}b"), "a\u{fffd}b");
        assert_eq!(quote_dot("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
    }

    #[test]
    fn truncation_respects_characters_and_width() {
        assert_eq!(truncate("hello", 5), "hello");
        assert_eq!(truncate("hello world", 6), "hello…");
        // Each ideograph counts 2: 5 units fit two ideographs and the ellipsis.
        assert_eq!(truncate("巴黎是法国的首都", 5), "巴黎…");
        assert_eq!(display_width("巴黎ab"), 6);
        assert_eq!(display_token("▁Paris"), "␣Paris");
        assert_eq!(display_token(""), "∅");
        assert_eq!(truncate_middle("model.layers.12.mlp", 12), "model…12.mlp");
        assert_eq!(truncate_middle("short", 12), "short");
        assert_eq!(format_tick(0.2), "0.2");
        assert_eq!(format_tick(1.0), "1");
    }

    #[test]
    fn scores_format_readably() {
        assert_eq!(format_score(f64::NAN), "n/a");
        assert_eq!(format_score(0.12345), "0.1235");
        assert_eq!(format_score(-12.5), "-12.50");
        assert_eq!(format_score(1e-6), "1.000e-6");
        assert_eq!(num(1.0), "1");
        assert_eq!(num(1.25), "1.25");
        assert_eq!(num(f64::NAN), "0");
    }
}
