//! The memory this process holds, for measurements (examples, benchmarks, memory tests): its
//! resident set now and its peak (Linux `/proc/self/status`: `VmRSS`, `VmHWM`).
//!
//! Peak memory is what decides whether a model or a long context fits, and it is what the
//! loading and long-context checks of this project assert on. Elsewhere than Linux the values
//! are unknown and [`ProcessMemory::now`] returns `None`.

use serde::{Deserialize, Serialize};

/// The resident set of this process now and at its peak, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessMemory {
    /// Resident set size now (`VmRSS`).
    pub resident_bytes: u64,
    /// Peak resident set size since the process started or since the last
    /// [`ProcessMemory::reset_peak`] (`VmHWM`).
    pub peak_bytes: u64,
}

impl ProcessMemory {
    /// The current values, or `None` where `/proc/self/status` cannot be read or lacks them.
    #[must_use]
    pub fn now() -> Option<Self> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        Some(Self {
            resident_bytes: status_field(&status, "VmRSS:")?,
            peak_bytes: status_field(&status, "VmHWM:")?,
        })
    }

    /// Makes the peak equal to the current resident set (Linux `clear_refs` value 5), so that a
    /// later [`now`](Self::now) reports the peak of what ran in between. Returns whether the
    /// kernel accepted it.
    pub fn reset_peak() -> bool {
        std::fs::write("/proc/self/clear_refs", "5").is_ok()
    }

    /// Resident set now, in MiB.
    #[must_use]
    pub fn resident_mib(&self) -> f64 {
        self.resident_bytes as f64 / MIB
    }

    /// Peak resident set, in MiB.
    #[must_use]
    pub fn peak_mib(&self) -> f64 {
        self.peak_bytes as f64 / MIB
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// A `kB` field of `/proc/self/status` in bytes.
fn status_field(status: &str, name: &str) -> Option<u64> {
    let rest = status.lines().find_map(|line| line.strip_prefix(name))?;
    let kib = rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_in_bytes() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t1024 kB\n";
        assert_eq!(status_field(status, "VmHWM:"), Some(2048 * 1024));
        assert_eq!(status_field(status, "VmRSS:"), Some(1024 * 1024));
        assert_eq!(status_field(status, "VmSwap:"), None);
        assert_eq!(status_field("VmRSS:\tlots kB\n", "VmRSS:"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_peak_is_at_least_the_resident_set_and_grows_with_an_allocation() {
        let before = ProcessMemory::now().expect("Linux has /proc/self/status");
        assert!(before.peak_bytes >= before.resident_bytes);
        let block = vec![1u8; 64 << 20];
        let after = ProcessMemory::now().expect("Linux has /proc/self/status");
        assert!(after.peak_bytes >= before.resident_bytes + (60 << 20), "{before:?} {after:?}");
        drop(block);
    }
}
