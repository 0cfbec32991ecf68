//! What this process uses, for measurements (examples, benchmarks, memory tests): its resident
//! set now and its peak (Linux `/proc/self/status`: `VmRSS`, `VmHWM`), and the CPU time its
//! threads have run ([`process_cpu_seconds`]).
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

/// CPU time run by all of this process's threads so far, in seconds (Linux
/// `/proc/self/task/*/schedstat`, nanoseconds), or `None` where it cannot be read.
///
/// On a shared machine wall time stretches with what else runs, CPU time does not: a
/// measurement made with one compute thread reports the work done. Threads that have already
/// exited are not counted, so take differences around work whose threads stay alive (as a
/// libtorch thread pool does).
#[must_use]
pub fn process_cpu_seconds() -> Option<f64> {
    let mut nanos: u64 = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path().join("schedstat");
        // A thread that exits between the listing and the read is skipped.
        let Ok(stat) = std::fs::read_to_string(path) else { continue };
        nanos = nanos.checked_add(schedstat_run_nanos(&stat)?)?;
    }
    Some(nanos as f64 * 1e-9)
}

/// The first field of a `schedstat` line: nanoseconds run on a CPU.
fn schedstat_run_nanos(stat: &str) -> Option<u64> {
    stat.split_whitespace().next()?.parse().ok()
}

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

    #[test]
    fn schedstat_gives_nanoseconds_run() {
        assert_eq!(schedstat_run_nanos("138377280 139968137 463\n"), Some(138_377_280));
        assert_eq!(schedstat_run_nanos(""), None);
    }

    /// CPU time of the calling thread alone (other tests run in parallel threads of this
    /// process, so the process total is not theirs to assert on).
    fn thread_cpu_seconds() -> f64 {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("readable");
        schedstat_run_nanos(&stat).expect("a number") as f64 * 1e-9
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn cpu_time_grows_with_work_and_not_with_sleep() {
        let process = process_cpu_seconds().expect("Linux has /proc/self/task/*/schedstat");
        let start = thread_cpu_seconds();
        assert!(process >= start);
        std::thread::sleep(std::time::Duration::from_millis(200));
        let slept = thread_cpu_seconds() - start;
        let begin = std::time::Instant::now();
        let mut x = 0u64;
        while begin.elapsed().as_millis() < 200 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let worked = thread_cpu_seconds() - start - slept;
        // Sleeping runs (almost) nothing; 200 ms of spinning runs at least a fraction of that
        // even on a machine busy enough to take most of the CPU away.
        assert!(slept < 0.05, "slept {slept} s of CPU");
        assert!(worked > 0.01, "worked {worked} s of CPU");
        assert!(process_cpu_seconds().expect("readable") >= process + worked);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_peak_is_at_least_the_resident_set_and_grows_with_an_allocation() {
        let before = ProcessMemory::now().expect("Linux has /proc/self/status");
        assert!(before.peak_bytes >= before.resident_bytes);
        // black_box: an optimised build would otherwise drop the unread allocation.
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let after = ProcessMemory::now().expect("Linux has /proc/self/status");
        assert!(after.peak_bytes >= before.resident_bytes + (60 << 20), "{before:?} {after:?}");
        drop(block);
    }
}
