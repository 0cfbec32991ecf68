//! Placing a model's parts on several devices when one does not hold it (a device map).
//!
//! A decoder is an embedding, `n` blocks and a head; each block is small next to any device (a
//! 70B Llama block is ≈ 1.7 GB in bf16), so whole blocks are placed, never split (no tensor
//! parallelism: attributions need every activation of a block on one device). The embedding goes
//! on the first device and the head on the last; activations move at block boundaries and
//! backward follows the placement. This module plans; the plan is a [`Placement`].
//!
//! * [`DeviceMap::Auto`] fills the devices in order, each up to its cap (accelerate's
//!   `device_map="auto"` / "sequential"): the fewest devices, the first ones fullest.
//! * [`DeviceMap::Balanced`] spreads the blocks over all the devices so that each holds about the
//!   same bytes, within the caps (accelerate's "balanced", as NDIF loads large models).
//! * [`DeviceMap::Explicit`] takes block ranges per device and checks them.
//!
//! Each device keeps an activation reserve on top of its weights (backward through a block
//! holds its activations; memory-bounded gradients hold one block's worth). A tied head
//! placed on another device than the embedding is a second copy of the embedding there, and is
//! counted. Nothing fits → [`Error::DeviceMap`] saying what was needed and what was offered.
//! Specs parse from the strings a command line takes: `auto`, `balanced`,
//! `0-11:cuda:0,12-23:cuda:1`, and budgets `cuda:0=70GiB,cpu=100GiB`.

use std::fmt;
use std::ops::Range;

use explainability_core::{Error, Result, tch::Device};

/// A device and the most bytes (weights plus its activation reserve) it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceBudget {
    /// The device.
    pub device: Device,
    /// Its cap in bytes.
    pub max_bytes: u64,
}

/// How to place a model on devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceMap {
    /// Everything on one device (no cap).
    Single(Device),
    /// Fill the devices in order, each up to its cap.
    Auto(Vec<DeviceBudget>),
    /// Spread the blocks so that the devices hold about the same bytes, within their caps.
    Balanced(Vec<DeviceBudget>),
    /// Block ranges per device, in order, covering every block once; the embedding goes with
    /// block 0, the head with the last block.
    Explicit(Vec<(Range<usize>, Device)>),
}

/// The bytes of a model's parts, what a plan places.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFootprint {
    /// The token (and position) embedding.
    pub embed_bytes: u64,
    /// Each block, in order.
    pub block_bytes: Vec<u64>,
    /// The final norm and the head (for a tied head: the embedding's bytes, counted only where
    /// the head lands on another device than the embedding).
    pub head_bytes: u64,
    /// Whether the head is the embedding matrix.
    pub tied_head: bool,
    /// Bytes kept free on every device that holds a part, for activations.
    pub activation_reserve_bytes: u64,
}

/// Where each part of a model goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Device of the embedding.
    pub embed: Device,
    /// Device of each block.
    pub blocks: Vec<Device>,
    /// Device of the final norm and the head.
    pub head: Device,
}

impl Placement {
    /// Everything on `device`.
    pub fn single(device: Device, n_blocks: usize) -> Self {
        Self { embed: device, blocks: vec![device; n_blocks], head: device }
    }

    /// Plans `map` for `footprint`; see the module documentation.
    ///
    /// # Errors
    /// [`Error::DeviceMap`] when the blocks do not fit the caps, a map names no device, an
    /// explicit map does not cover every block exactly once in order, or the model has no
    /// blocks.
    pub fn plan(map: &DeviceMap, footprint: &ModelFootprint) -> Result<Self> {
        let n = footprint.block_bytes.len();
        if n == 0 {
            return Err(device_map_error("the model has no blocks to place"));
        }
        match map {
            DeviceMap::Single(device) => Ok(Self::single(*device, n)),
            DeviceMap::Explicit(ranges) => explicit(ranges, n),
            DeviceMap::Auto(budgets) => {
                check_budgets(budgets)?;
                let caps: Vec<u64> = budgets.iter().map(|b| b.max_bytes).collect();
                let owners = fill(footprint, &caps)?;
                Ok(Self::from_owners(budgets, &owners))
            }
            DeviceMap::Balanced(budgets) => {
                check_budgets(budgets)?;
                // The smallest per-device target ≥ the even share for which a sequential fill
                // within min(target, cap) succeeds: binary search over bytes.
                let total = footprint.embed_bytes
                    + footprint.block_bytes.iter().sum::<u64>()
                    + footprint.head_bytes
                    + footprint.activation_reserve_bytes * budgets.len() as u64;
                let mut low = total / budgets.len() as u64;
                let mut high = budgets.iter().map(|b| b.max_bytes).max().unwrap_or(0);
                let capped = |target: u64| -> Vec<u64> {
                    budgets.iter().map(|b| b.max_bytes.min(target)).collect()
                };
                // Fails exactly when the caps themselves are too small (the Auto error says so).
                let mut best = fill(footprint, &capped(high))?;
                while low < high {
                    let mid = low + (high - low) / 2;
                    match fill(footprint, &capped(mid)) {
                        Ok(owners) => {
                            best = owners;
                            high = mid;
                        }
                        Err(_) => low = mid + 1,
                    }
                }
                Ok(Self::from_owners(budgets, &best))
            }
        }
    }

    fn from_owners(budgets: &[DeviceBudget], owners: &Owners) -> Self {
        let device = |i: usize| budgets[i].device;
        Self {
            embed: device(owners.embed),
            blocks: owners.blocks.iter().map(|&i| device(i)).collect(),
            head: device(owners.head),
        }
    }

    /// The devices used, in the order activations visit them.
    pub fn devices(&self) -> Vec<Device> {
        let mut out = vec![self.embed];
        for &d in self.blocks.iter().chain(std::iter::once(&self.head)) {
            if out.last() != Some(&d) {
                out.push(d);
            }
        }
        out
    }

    /// Whether every part is on one device.
    pub fn is_single(&self) -> bool {
        self.blocks.iter().all(|&d| d == self.embed) && self.head == self.embed
    }

    /// Weight bytes per device (the tied head's copy counted where it is one), in order of
    /// first use.
    pub fn bytes_per_device(&self, footprint: &ModelFootprint) -> Vec<(Device, u64)> {
        let mut out: Vec<(Device, u64)> = Vec::new();
        let mut add = |device: Device, bytes: u64| match out.iter_mut().find(|(d, _)| *d == device)
        {
            Some((_, total)) => *total += bytes,
            None => out.push((device, bytes)),
        };
        add(self.embed, footprint.embed_bytes);
        for (&device, &bytes) in self.blocks.iter().zip(&footprint.block_bytes) {
            add(device, bytes);
        }
        let head = if footprint.tied_head && self.head == self.embed {
            footprint.head_bytes.saturating_sub(footprint.embed_bytes)
        } else {
            footprint.head_bytes
        };
        add(self.head, head);
        out
    }
}

impl fmt::Display for Placement {
    /// `embed cpu; blocks 0-11 cuda:0, 12-23 cuda:1; head cuda:1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "embed {}; blocks ", device_name(self.embed))?;
        let mut start = 0;
        for i in 1..=self.blocks.len() {
            if i == self.blocks.len() || self.blocks[i] != self.blocks[start] {
                if start > 0 {
                    write!(f, ", ")?;
                }
                write!(f, "{}-{} {}", start, i - 1, device_name(self.blocks[start]))?;
                start = i;
            }
        }
        write!(f, "; head {}", device_name(self.head))
    }
}

/// Indices into the budgets.
struct Owners {
    embed: usize,
    blocks: Vec<usize>,
    head: usize,
}

/// Sequential fill: the embedding on device 0, blocks in order on the current device while
/// they fit (its reserve included), the head on the device of the last block when it fits
/// there, else on the next device that takes it.
fn fill(footprint: &ModelFootprint, caps: &[u64]) -> Result<Owners> {
    let reserve = footprint.activation_reserve_bytes;
    let mut used = vec![0u64; caps.len()];
    let fits = |used: &[u64], device: usize, bytes: u64| {
        used[device] == 0 && reserve + bytes <= caps[device]
            || used[device] > 0 && used[device] + bytes <= caps[device]
    };
    let take = |used: &mut [u64], device: usize, bytes: u64| {
        used[device] += if used[device] == 0 { reserve + bytes } else { bytes };
    };
    let total: u64 =
        footprint.embed_bytes + footprint.block_bytes.iter().sum::<u64>() + footprint.head_bytes;
    let offered: u64 = caps.iter().sum();
    let too_small = |what: String| {
        device_map_error(format!(
            "{what}; the model needs {} of weights plus {} of activation reserve per device, \
             the devices offer {} in all",
            bytes_text(total),
            bytes_text(reserve),
            bytes_text(offered)
        ))
    };
    if !fits(&used, 0, footprint.embed_bytes) {
        return Err(too_small(format!(
            "the embedding ({}) does not fit the first device",
            bytes_text(footprint.embed_bytes)
        )));
    }
    take(&mut used, 0, footprint.embed_bytes);
    let mut current = 0;
    let mut blocks = Vec::with_capacity(footprint.block_bytes.len());
    for (index, &bytes) in footprint.block_bytes.iter().enumerate() {
        while !fits(&used, current, bytes) {
            current += 1;
            if current == caps.len() {
                return Err(too_small(format!(
                    "block {index} ({}) fits on no device left",
                    bytes_text(bytes)
                )));
            }
        }
        take(&mut used, current, bytes);
        blocks.push(current);
    }
    // A tied head on the embedding's device costs nothing more; anywhere else, a copy.
    let head_cost = |device: usize| {
        if footprint.tied_head && device == 0 {
            footprint.head_bytes.saturating_sub(footprint.embed_bytes)
        } else {
            footprint.head_bytes
        }
    };
    let mut head = current;
    while !fits(&used, head, head_cost(head)) {
        head += 1;
        if head == caps.len() {
            return Err(too_small(format!(
                "the head ({}) fits on no device left",
                bytes_text(footprint.head_bytes)
            )));
        }
    }
    Ok(Owners { embed: 0, blocks, head })
}

fn explicit(ranges: &[(Range<usize>, Device)], n: usize) -> Result<Placement> {
    let mut blocks = Vec::with_capacity(n);
    for (range, device) in ranges {
        if range.start != blocks.len() || range.end <= range.start {
            return Err(device_map_error(format!(
                "block ranges must cover 0..{n} in order without gaps or overlaps; {}..{} \
                 follows block {}",
                range.start,
                range.end,
                blocks.len()
            )));
        }
        if range.end > n {
            return Err(device_map_error(format!(
                "block range {}..{} reaches past the model's {n} blocks",
                range.start, range.end
            )));
        }
        blocks.extend(std::iter::repeat_n(*device, range.end - range.start));
    }
    if blocks.len() != n {
        return Err(device_map_error(format!(
            "block ranges cover {} of the model's {n} blocks",
            blocks.len()
        )));
    }
    let (Some(&embed), Some(&head)) = (blocks.first(), blocks.last()) else {
        return Err(device_map_error("the model has no blocks to place"));
    };
    Ok(Placement { embed, blocks, head })
}

fn check_budgets(budgets: &[DeviceBudget]) -> Result<()> {
    if budgets.is_empty() {
        return Err(device_map_error("the device map names no device"));
    }
    for (i, b) in budgets.iter().enumerate() {
        if budgets[..i].iter().any(|o| o.device == b.device) {
            return Err(device_map_error(format!(
                "device {} is listed twice",
                device_name(b.device)
            )));
        }
    }
    Ok(())
}

fn device_map_error(reason: impl Into<String>) -> Error {
    Error::DeviceMap { reason: reason.into() }
}

/// `cpu`, `cuda:0`, `mps`, `vulkan`.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".to_owned(),
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".to_owned(),
        Device::Vulkan => "vulkan".to_owned(),
    }
}

/// Parses `cpu`, `cuda` (= `cuda:0`), `cuda:N`, `mps`.
///
/// # Errors
/// [`Error::DeviceMap`] for anything else.
pub fn parse_device(text: &str) -> Result<Device> {
    match text.trim() {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        "mps" => Ok(Device::Mps),
        other => other
            .strip_prefix("cuda:")
            .and_then(|i| i.parse::<usize>().ok())
            .map(Device::Cuda)
            .ok_or_else(|| {
                device_map_error(format!("{other:?} is not a device (cpu, cuda, cuda:N, mps)"))
            }),
    }
}

/// Parses a byte size: `123`, `512MiB`, `70GiB`, `1.5GB`, `800MB`, `64KiB` (binary and decimal
/// units).
///
/// # Errors
/// [`Error::DeviceMap`] for a malformed size or one beyond `u64`.
pub fn parse_bytes(text: &str) -> Result<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(device_map_error(format!(
                "{other:?} is not a size unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            )));
        }
    };
    let value = number
        .parse::<f64>()
        .map_err(|_| device_map_error(format!("{text:?} is not a size such as 70GiB")))?;
    let bytes = value * scale;
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(device_map_error(format!("{text:?} is not a representable size")));
    }
    Ok(bytes as u64)
}

/// Parses per-device caps: `cuda:0=70GiB,cuda:1=70GiB,cpu=100GiB` (in that order of use).
///
/// # Errors
/// [`Error::DeviceMap`] for a malformed entry or a device listed twice.
pub fn parse_budgets(text: &str) -> Result<Vec<DeviceBudget>> {
    let mut budgets = Vec::new();
    for entry in text.split(',').filter(|e| !e.trim().is_empty()) {
        let Some((device, size)) = entry.split_once('=') else {
            return Err(device_map_error(format!(
                "{entry:?} is not DEVICE=SIZE (e.g. cuda:0=70GiB)"
            )));
        };
        budgets.push(DeviceBudget { device: parse_device(device)?, max_bytes: parse_bytes(size)? });
    }
    check_budgets(&budgets)?;
    Ok(budgets)
}

impl DeviceMap {
    /// Parses `auto`, `balanced` (both over `budgets`) or explicit ranges
    /// `0-11:cuda:0,12-23:cuda:1` (inclusive block ranges).
    ///
    /// # Errors
    /// [`Error::DeviceMap`] for a malformed map, or `auto` / `balanced` without budgets.
    pub fn parse(text: &str, budgets: &[DeviceBudget]) -> Result<Self> {
        match text.trim() {
            "auto" | "balanced" if budgets.is_empty() => Err(device_map_error(
                "auto and balanced maps need per-device caps (e.g. cuda:0=70GiB,cpu=100GiB)",
            )),
            "auto" => Ok(Self::Auto(budgets.to_vec())),
            "balanced" => Ok(Self::Balanced(budgets.to_vec())),
            explicit => {
                let mut ranges = Vec::new();
                for entry in explicit.split(',').filter(|e| !e.trim().is_empty()) {
                    let malformed = || {
                        device_map_error(format!(
                            "{entry:?} is not FIRST-LAST:DEVICE (e.g. 0-11:cuda:0)"
                        ))
                    };
                    let (range, device) = entry.split_once(':').ok_or_else(malformed)?;
                    let (first, last) = range.split_once('-').ok_or_else(malformed)?;
                    let first: usize = first.trim().parse().map_err(|_| malformed())?;
                    let last: usize = last.trim().parse().map_err(|_| malformed())?;
                    if last < first {
                        return Err(malformed());
                    }
                    ranges.push((first..last + 1, parse_device(device)?));
                }
                if ranges.is_empty() {
                    return Err(device_map_error("an empty device map"));
                }
                Ok(Self::Explicit(ranges))
            }
        }
    }
}

/// `1.50 GiB`.
fn bytes_text(bytes: u64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;
    if bytes as f64 >= GIB {
        format!("{:.2} GiB", bytes as f64 / GIB)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// A 70B-shaped Llama in bf16: 80 blocks of 1.7 GiB, a 2 GiB embedding and head.
    fn llama70b() -> ModelFootprint {
        ModelFootprint {
            embed_bytes: 2 * GIB,
            block_bytes: vec![17 * GIB / 10; 80],
            head_bytes: 2 * GIB,
            tied_head: false,
            activation_reserve_bytes: 4 * GIB,
        }
    }

    fn cuda(caps: &[u64]) -> Vec<DeviceBudget> {
        caps.iter()
            .enumerate()
            .map(|(i, &max_bytes)| DeviceBudget { device: Device::Cuda(i), max_bytes })
            .collect()
    }

    fn check_caps(placement: &Placement, footprint: &ModelFootprint, budgets: &[DeviceBudget]) {
        for (device, bytes) in placement.bytes_per_device(footprint) {
            let cap = budgets.iter().find(|b| b.device == device).unwrap().max_bytes;
            assert!(
                bytes + footprint.activation_reserve_bytes <= cap,
                "{} holds {bytes} + reserve over its cap {cap}",
                device_name(device)
            );
        }
    }

    #[test]
    fn auto_fills_devices_in_order() {
        let model = llama70b();
        let budgets = cuda(&[80 * GIB, 80 * GIB, 80 * GIB]);
        let p = Placement::plan(&DeviceMap::Auto(budgets.clone()), &model).unwrap();
        // cuda:0: 4 reserve + 2 embed + 43 × 1.7 = 79.1 ≤ 80; the 44th would be 80.8.
        let on_0 = p.blocks.iter().filter(|&&d| d == Device::Cuda(0)).count();
        assert_eq!(on_0, 43);
        assert_eq!(p.embed, Device::Cuda(0));
        assert_eq!(p.head, Device::Cuda(1));
        assert_eq!(p.devices(), [Device::Cuda(0), Device::Cuda(1)]);
        assert_eq!(p.to_string(), "embed cuda:0; blocks 0-42 cuda:0, 43-79 cuda:1; head cuda:1");
        check_caps(&p, &model, &budgets);
    }

    #[test]
    fn balanced_spreads_evenly_within_caps() {
        let model = llama70b();
        let budgets = cuda(&[80 * GIB, 80 * GIB, 80 * GIB]);
        let p = Placement::plan(&DeviceMap::Balanced(budgets.clone()), &model).unwrap();
        let bytes = p.bytes_per_device(&model);
        assert_eq!(bytes.len(), 3, "{p}");
        let (min, max) =
            bytes.iter().fold((u64::MAX, 0), |(lo, hi), &(_, b)| (lo.min(b), hi.max(b)));
        // Within one block plus the embedding or head of each other.
        assert!(max - min <= 17 * GIB / 10 + 2 * GIB, "{bytes:?}");
        assert_eq!(p.embed, Device::Cuda(0));
        assert_eq!(p.head, Device::Cuda(2));
        check_caps(&p, &model, &budgets);
        // Blocks stay in order: devices never go back.
        assert!(p.blocks.windows(2).all(|w| match (w[0], w[1]) {
            (Device::Cuda(a), Device::Cuda(b)) => a <= b,
            _ => false,
        }));
    }

    #[test]
    fn nothing_fits_is_a_typed_error_with_the_numbers() {
        let model = llama70b();
        for map in
            [DeviceMap::Auto(cuda(&[40 * GIB; 3])), DeviceMap::Balanced(cuda(&[40 * GIB; 3]))]
        {
            let err = Placement::plan(&map, &model).unwrap_err();
            let Error::DeviceMap { reason } = &err else { panic!("{err:?}") };
            assert!(reason.contains("fits on no device left"), "{reason}");
            assert!(err.to_string().contains("GiB"), "{err}");
        }
        let err = Placement::plan(&DeviceMap::Auto(cuda(&[GIB])), &model).unwrap_err();
        assert!(err.to_string().contains("embedding"), "{err}");
        let err = Placement::plan(&DeviceMap::Auto(vec![]), &model).unwrap_err();
        assert!(err.to_string().contains("names no device"), "{err}");
        let empty = ModelFootprint { block_bytes: vec![], ..model };
        assert!(Placement::plan(&DeviceMap::Single(Device::Cpu), &empty).is_err());
    }

    #[test]
    fn a_tied_head_away_from_the_embedding_is_a_copy() {
        let model = ModelFootprint {
            embed_bytes: 10,
            block_bytes: vec![10, 10],
            head_bytes: 10,
            tied_head: true,
            activation_reserve_bytes: 0,
        };
        // One device: the head is the embedding, 30 bytes in all.
        let one = cuda(&[30]);
        let p = Placement::plan(&DeviceMap::Auto(one), &model).unwrap();
        assert!(p.is_single());
        assert_eq!(p.bytes_per_device(&model), [(Device::Cuda(0), 30)]);
        // Two devices of 20: the second block and the head's copy go to cuda:1.
        let p = Placement::plan(&DeviceMap::Auto(cuda(&[20, 20])), &model).unwrap();
        assert_eq!(p.head, Device::Cuda(1));
        assert_eq!(p.bytes_per_device(&model), [(Device::Cuda(0), 20), (Device::Cuda(1), 20)]);
    }

    #[test]
    fn explicit_maps_are_checked() {
        let model = llama70b();
        let map = DeviceMap::parse("0-39:cuda:0, 40-79:cuda:1", &[]).unwrap();
        let p = Placement::plan(&map, &model).unwrap();
        assert_eq!((p.embed, p.head), (Device::Cuda(0), Device::Cuda(1)));
        assert_eq!(p.blocks.iter().filter(|&&d| d == Device::Cuda(1)).count(), 40);
        for (text, needle) in [
            ("0-39:cuda:0,41-79:cuda:1", "in order"),
            ("0-39:cuda:0", "cover 40 of"),
            ("0-99:cuda:0", "reaches past"),
        ] {
            let map = DeviceMap::parse(text, &[]).unwrap();
            let err = Placement::plan(&map, &model).unwrap_err();
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
        for bad in ["", "0-39", "a-b:cuda:0", "5-2:cpu", "0-3:tpu", "auto", "balanced"] {
            assert!(matches!(DeviceMap::parse(bad, &[]), Err(Error::DeviceMap { .. })), "{bad}");
        }
    }

    #[test]
    fn sizes_devices_and_budgets_parse() {
        assert_eq!(parse_bytes("70GiB").unwrap(), 70 * GIB);
        assert_eq!(parse_bytes("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_bytes("512 MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("123").unwrap(), 123);
        for bad in ["", "GiB", "12 parsecs", "1e400GiB", "-5GiB", "99999999999TiB"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_device("cuda").unwrap(), Device::Cuda(0));
        assert_eq!(parse_device("cuda:3").unwrap(), Device::Cuda(3));
        assert!(parse_device("cuda:x").is_err());
        let budgets = parse_budgets("cuda:0=70GiB,cpu=100GiB").unwrap();
        assert_eq!(budgets[1], DeviceBudget { device: Device::Cpu, max_bytes: 100 * GIB });
        assert!(parse_budgets("cpu=1GiB,cpu=2GiB").is_err());
        assert!(parse_budgets("cpu").is_err());
        assert!(matches!(DeviceMap::parse("auto", &budgets), Ok(DeviceMap::Auto(_))));
    }
}
