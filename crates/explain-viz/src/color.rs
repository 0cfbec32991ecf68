//! Colour scales: a diverging blue–white–red scale for signed scores, a sequential
//! white–purple scale for non-negative quantities (attention, metrics), and the grey used for
//! missing (NaN) values.

/// Colour of a missing (NaN) value.
pub const MISSING: &str = "#d9d9d9";
/// Colour of positive bars and scores.
pub const POSITIVE: &str = "#d6604d";
/// Colour of negative bars and scores.
pub const NEGATIVE: &str = "#4393c3";
/// A qualitative palette for series (methods, curves), colour-blind friendly (Okabe–Ito).
pub const PALETTE: [&str; 8] =
    ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000"];

/// The palette colour of series `index` (cycles).
pub fn series_color(index: usize) -> &'static str {
    PALETTE[index % PALETTE.len()]
}

fn mix(from: (f64, f64, f64), to: (f64, f64, f64), t: f64) -> String {
    let t = t.clamp(0.0, 1.0);
    let channel = |a: f64, b: f64| (a + (b - a) * t).round().clamp(0.0, 255.0) as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        channel(from.0, to.0),
        channel(from.1, to.1),
        channel(from.2, to.2)
    )
}

const WHITE: (f64, f64, f64) = (255.0, 255.0, 255.0);
const RED: (f64, f64, f64) = (178.0, 24.0, 43.0);
const BLUE: (f64, f64, f64) = (33.0, 102.0, 172.0);
const PURPLE: (f64, f64, f64) = (63.0, 0.0, 125.0);

/// A colour scale fitted to data: where a value falls decides its colour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ColorScale {
    /// Signed values: `-max_abs` is blue, 0 white, `+max_abs` red.
    Diverging {
        /// The largest finite |value| (the scale's end).
        max_abs: f64,
    },
    /// Values from `min` (white) to `max` (dark purple).
    Sequential {
        /// Lower end.
        min: f64,
        /// Upper end.
        max: f64,
    },
}

impl ColorScale {
    /// A diverging scale that spans the finite values given (NaN and infinities ignored).
    pub fn diverging(values: impl IntoIterator<Item = f64>) -> Self {
        let max_abs =
            values.into_iter().filter(|v| v.is_finite()).fold(0.0_f64, |m, v| m.max(v.abs()));
        Self::Diverging { max_abs }
    }

    /// A sequential scale that spans the finite values given; with no finite value, `[0, 1]`.
    pub fn sequential(values: impl IntoIterator<Item = f64>) -> Self {
        let (min, max) = values
            .into_iter()
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if min.is_finite() {
            Self::Sequential { min, max }
        } else {
            Self::Sequential { min: 0.0, max: 1.0 }
        }
    }

    /// Position of `value` on the scale in `[-1, 1]` (diverging) or `[0, 1]` (sequential);
    /// `None` for NaN.
    pub fn position(&self, value: f64) -> Option<f64> {
        if value.is_nan() {
            return None;
        }
        Some(match *self {
            Self::Diverging { max_abs } => {
                if max_abs > 0.0 {
                    (value / max_abs).clamp(-1.0, 1.0)
                } else {
                    0.0
                }
            }
            Self::Sequential { min, max } => {
                if max > min {
                    ((value - min) / (max - min)).clamp(0.0, 1.0)
                } else {
                    0.5
                }
            }
        })
    }

    /// The `#rrggbb` colour of `value`; [`MISSING`] for NaN.
    pub fn color(&self, value: f64) -> String {
        match (self, self.position(value)) {
            (_, None) => MISSING.to_owned(),
            (Self::Diverging { .. }, Some(t)) if t >= 0.0 => mix(WHITE, RED, t),
            (Self::Diverging { .. }, Some(t)) => mix(WHITE, BLUE, -t),
            (Self::Sequential { .. }, Some(t)) => mix(WHITE, PURPLE, t),
        }
    }

    /// Whether text drawn over `value`'s colour should be white rather than black.
    pub fn needs_light_text(&self, value: f64) -> bool {
        self.position(value).is_some_and(|t| t.abs() > 0.6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diverging_scale_is_symmetric_and_ignores_nan() {
        let scale = ColorScale::diverging([1.0, -2.0, f64::NAN, f64::INFINITY]);
        assert_eq!(scale, ColorScale::Diverging { max_abs: 2.0 });
        assert_eq!(scale.color(0.0), "#ffffff");
        assert_eq!(scale.color(2.0), "#b2182b");
        assert_eq!(scale.color(-2.0), "#2166ac");
        assert_eq!(scale.color(f64::NAN), MISSING);
        assert_eq!(scale.position(f64::INFINITY), Some(1.0));
    }

    #[test]
    fn sequential_scale_handles_constant_and_empty_data() {
        assert_eq!(ColorScale::sequential([]), ColorScale::Sequential { min: 0.0, max: 1.0 });
        let constant = ColorScale::sequential([3.0, 3.0]);
        assert_eq!(constant.position(3.0), Some(0.5));
    }
}
