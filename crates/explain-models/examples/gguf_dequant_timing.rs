//! Times the dequantisation of every tensor of a GGUF file, per GGML type, with a given number
//! of threads: our side of `cargo xtask bench-dequant` (gguf-py's side is
//! `reference/gguf_dequant_reference.py`).
//!
//! Each tensor is dequantised from the memory-mapped file into a freshly allocated `Vec<f32>`
//! (as gguf-py allocates its output array); the best of `--repeat` passes is kept per type.
//! The file is read once before timing so the page cache holds it for both sides.
//!
//! With `--convert NAME`, it first loads that tensor as bf16 twice, first with
//! [`GgufFile::tensor_as`] (chunked), then from its whole f32 values (`tensor_f32`, a tensor
//! of them, `to_kind(BFloat16)`: what loading in f32 and converting costs), and reports each one's time and the growth of the process's peak resident
//! memory (`VmHWM`, Linux) it caused.
//!
//! Usage: `cargo run --release -p explain-models --example gguf_dequant_timing -- --gguf PATH
//! [--threads N] [--repeat R] [--convert NAME]`; prints JSON on stdout, a table on stderr.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use explain_models::GgufFile;
use explain_models::gguf::dequantize_into;
use explainability_core::Result;

struct Args {
    gguf: PathBuf,
    threads: NonZeroUsize,
    repeat: usize,
    convert: Option<String>,
}

fn parse() -> std::result::Result<Args, String> {
    let mut gguf = None;
    let mut threads = NonZeroUsize::MIN;
    let mut repeat = 3;
    let mut convert = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--gguf" => gguf = Some(PathBuf::from(value)),
            "--threads" => {
                threads = value.parse().map_err(|_| format!("--threads: bad number {value:?}"))?;
            }
            "--repeat" => {
                repeat = value.parse().map_err(|_| format!("--repeat: bad number {value:?}"))?;
            }
            "--convert" => convert = Some(value),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        gguf: gguf.ok_or("--gguf PATH is required")?,
        threads,
        repeat: repeat.max(1),
        convert,
    })
}

/// Per type: (best seconds, values, tensors).
type Timing = BTreeMap<&'static str, (f64, u64, usize)>;

fn time_file(args: &Args) -> Result<(Timing, f64)> {
    let file = GgufFile::open(&args.gguf)?;
    // Touch every byte once so both sides start from the page cache.
    let mut checksum = 0u8;
    for info in file.tensor_infos() {
        checksum ^= file.tensor_bytes(info.name())?.iter().fold(0u8, |a, &b| a ^ b);
    }
    std::hint::black_box(checksum);
    let mut timing = Timing::new();
    let mut best_total = f64::INFINITY;
    for pass in 0..args.repeat {
        let mut seconds: BTreeMap<&'static str, f64> = BTreeMap::new();
        for info in file.tensor_infos() {
            let bytes = file.tensor_bytes(info.name())?;
            let start = Instant::now();
            let mut out = vec![0f32; info.n_elements() as usize];
            dequantize_into(info.ggml_type(), bytes, &mut out, args.threads)?;
            std::hint::black_box(&out);
            *seconds.entry(info.type_name()).or_default() += start.elapsed().as_secs_f64();
            if pass == 0 {
                let entry = timing.entry(info.type_name()).or_insert((f64::INFINITY, 0, 0));
                entry.1 += info.n_elements();
                entry.2 += 1;
            }
        }
        for (name, s) in &seconds {
            if let Some(entry) = timing.get_mut(name) {
                entry.0 = entry.0.min(*s);
            }
        }
        best_total = best_total.min(seconds.values().sum());
    }
    Ok((timing, best_total))
}

/// Peak resident memory of this process so far, in bytes (`VmHWM`); 0 where unknown.
fn peak_rss() -> u64 {
    explainability_core::ProcessMemory::now().map_or(0, |m| m.peak_bytes)
}

/// `tensor_as(name, BFloat16)` and then `Tensor::from_slice(&tensor_f32(name)).to_kind(
/// BFloat16)` (the whole f32 copy first): seconds and growth of the peak resident memory of
/// each, in that order (the second can only raise the peak above the first's).
fn convert(path: &std::path::Path, name: &str) -> Result<serde_json::Value> {
    let file = GgufFile::open(path)?;
    std::hint::black_box(file.tensor_bytes(name)?.iter().fold(0u8, |a, &b| a ^ b));
    // libtorch's first calls fault in code and thread pools: keep that out of the figures.
    let warm = tch::Tensor::f_zeros([1 << 16], (tch::Kind::BFloat16, tch::Device::Cpu))?;
    warm.f_narrow(0, 0, 1 << 15)?.f_copy_(&tch::Tensor::f_from_slice(&[0.5f32; 1 << 15])?)?;
    let before = peak_rss();
    let start = Instant::now();
    let chunked = file.tensor_as(name, tch::Kind::BFloat16)?;
    let chunked_s = start.elapsed().as_secs_f64();
    let chunked_peak = peak_rss().saturating_sub(before);
    let before = peak_rss();
    let start = Instant::now();
    let values = file.tensor_f32(name)?;
    let whole = tch::Tensor::f_from_slice(&values)?
        .f_reshape(file.tensor_info(name).map(|i| i.shape()).unwrap_or_default())?
        .f_to_kind(tch::Kind::BFloat16)?;
    drop(values);
    let whole_s = start.elapsed().as_secs_f64();
    let whole_peak = peak_rss().saturating_sub(before);
    let equal = chunked.equal(&whole);
    let mb = |b: u64| b as f64 / 1e6;
    eprintln!(
        "{name} as bf16: tensor_as {chunked_s:.3} s, peak +{:.0} MB; from f32 values {whole_s:.3} s, \
         peak +{:.0} MB more; equal: {equal}",
        mb(chunked_peak),
        mb(whole_peak)
    );
    Ok(serde_json::json!({
        "tensor": name,
        "equal": equal,
        "tensor_as_seconds": chunked_s,
        "tensor_as_peak_growth_bytes": chunked_peak,
        "to_kind_seconds": whole_s,
        "to_kind_further_peak_growth_bytes": whole_peak,
    }))
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // First, while the process's peak memory is still low.
    let conversion = match args.convert.as_deref().map(|name| convert(&args.gguf, name)) {
        None => serde_json::Value::Null,
        Some(Ok(report)) => report,
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (timing, total) = match time_file(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut per_type = serde_json::Map::new();
    for (name, (seconds, values, tensors)) in &timing {
        eprintln!("{name:7} {tensors:4} tensors {values:>11} values {seconds:8.4} s");
        per_type.insert(
            (*name).to_owned(),
            serde_json::json!({"seconds": seconds, "elements": values, "tensors": tensors}),
        );
    }
    eprintln!("total {total:.4} s with {} thread(s)", args.threads);
    let report = serde_json::json!({
        "threads": args.threads.get(),
        "repeat": args.repeat,
        "total_seconds": total,
        "per_type": per_type,
        "bf16_conversion": conversion,
    });
    println!("{report}");
    ExitCode::SUCCESS
}
