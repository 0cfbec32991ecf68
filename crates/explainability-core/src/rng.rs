//! A small seeded generator for everything in the workspace that draws random numbers
//! (random test models, SmoothGrad noise, random token blocks, random baselines).
//!
//! libtorch's global generator is shared by every thread of a process, so two explainers (or
//! two tests) running at once would interleave their draws and lose reproducibility; a private
//! [`SplitMix64`] per call keeps "same seed, bit-identical result" true.

/// SplitMix64 (Steele, Lea & Flood 2014): a fast 64-bit generator with good mixing, plus
/// uniform and Box–Muller normal draws.
///
/// # Examples
/// ```
/// use explainability_core::SplitMix64;
/// let mut a = SplitMix64::new(7);
/// let mut b = SplitMix64::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let u = a.uniform();
/// assert!((0.0..1.0).contains(&u));
/// ```
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]: ln is finite
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Uniform integer in `0..n` (`n > 0`; 0 when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_reproducible_and_in_range() {
        let mut a = SplitMix64::new(1);
        let first: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let mut b = SplitMix64::new(1);
        assert_eq!(first, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        let mut g = SplitMix64::new(9);
        let normals: Vec<f64> = (0..20_000).map(|_| g.normal()).collect();
        let mean = normals.iter().sum::<f64>() / normals.len() as f64;
        let var = normals.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / normals.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "mean {mean}, var {var}");
        assert!((0..1000).all(|_| g.below(7) < 7));
        assert_eq!(g.below(0), 0);
    }
}
