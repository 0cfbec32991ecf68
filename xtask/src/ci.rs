//! `cargo xtask ci`: the README's test command and what `.ci/run` runs. Steps run in order,
//! each with a header and its time; the first failure stops the run and is named.

use std::time::Instant;

use crate::project::{Project, Result, describe, run, seconds};
use crate::setup;
use crate::{browser, downstream, parity, ray};

/// Profile flags of the test run and of the parity test: none, i.e. cargo's `test` profile
/// (workspace crates at opt-level 1 with debug assertions and overflow checks, dependencies
/// at opt-level 2). Measured on the 2-core machine: the real-SmolLM2 integration tests and the
/// parity test run as fast as in `--release` (libtorch does the arithmetic), libtorch's C++
/// wrapper compiles twice either way (once for clippy/rustdoc, once for the test build), and
/// the test profile keeps overflow checks on in the GGUF parser and shares its build with a
/// developer's plain `cargo test`. Write `&["--release"]` here to switch both.
pub const TEST_PROFILE: &[&str] = &[];

/// The packaging check, part 1: `cargo package` of every library crate in one run, so that
/// (cargo 1.89+) they resolve each other, dependencies first, from a local registry overlay
/// before any is published. It checks manifests, metadata and file lists; the tarballs are not
/// built (`--no-verify`) because building one needs libtorch and compiles torch-sys's C++
/// wrapper and `tch` afresh: each crate resolves its own dependency graph, so the builds
/// share little (measured on 2 cores: 4 min for explainability-core alone, and explain-viz's
/// rebuilt torch-sys and tch again), so seven would add an estimated 15–30 min.
/// `--allow-dirty` lets a developer run CI before committing.
const PACKAGE_ARGS: &[&str] = &[
    "package",
    "--workspace",
    "--exclude",
    "xtask",
    "--exclude",
    "benches",
    "--no-verify",
    "--allow-dirty",
];

/// The packaging check, part 2: explainability-core, which every other crate depends on and
/// which has no path dependency of its own, packaged and built from its tarball (the one
/// verification CI pays for: one libtorch-linked build; incremental when `target` is cached).
const PACKAGE_VERIFY_ARGS: &[&str] = &["package", "-p", "explainability-core", "--allow-dirty"];

/// One CI step.
struct Step<'a> {
    name: &'static str,
    what: String,
    action: Box<dyn Fn() -> Result<()> + 'a>,
}

/// A step that runs a cargo command.
fn cargo_step<'a>(
    project: &'a Project,
    name: &'static str,
    args: &[&str],
    env: &[(&'static str, String)],
) -> Step<'a> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let env = env.to_vec();
    let what = {
        let mut command = project.cargo();
        command.args(&args);
        let prefix: String = env.iter().map(|(k, v)| format!("{k}={v:?} ")).collect();
        format!("{prefix}{}", describe(&command))
    };
    Step {
        name,
        what,
        action: Box::new(move || {
            let mut command = project.cargo();
            command.args(&args).envs(env.iter().map(|(k, v)| (k, v)));
            run(name, &mut command)
        }),
    }
}

/// Runs the CI steps; see the module documentation.
///
/// # Errors
/// The first failing step, named.
pub fn ci(project: &Project) -> Result<()> {
    let start = Instant::now();
    let rustdocflags = match std::env::var("RUSTDOCFLAGS") {
        Ok(flags) if !flags.trim().is_empty() => format!("{flags} -D warnings"),
        _ => "-D warnings".to_owned(),
    };
    let test_args: Vec<&str> =
        ["test", "--workspace"].iter().chain(TEST_PROFILE).copied().collect();
    let steps = [
        Step {
            name: "setup",
            what: "cargo xtask setup".into(),
            action: Box::new(|| setup::setup(project)),
        },
        cargo_step(project, "fmt", &["fmt", "--all", "--", "--check"], &[]),
        cargo_step(
            project,
            "clippy",
            &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
            &[],
        ),
        cargo_step(project, "test", &test_args, &[]),
        Step {
            name: "browser",
            what: "cargo xtask browser".into(),
            action: Box::new(|| browser::browser(project)),
        },
        Step {
            name: "ray",
            what: "cargo xtask ray".into(),
            action: Box::new(|| ray::ray(project)),
        },
        Step {
            name: "parity",
            what: "cargo xtask parity".into(),
            action: Box::new(|| parity::parity(project, false)),
        },
        cargo_step(
            project,
            "doc",
            &["doc", "--workspace", "--no-deps"],
            &[("RUSTDOCFLAGS", rustdocflags)],
        ),
        cargo_step(project, "package", PACKAGE_ARGS, &[]),
        cargo_step(project, "verify", PACKAGE_VERIFY_ARGS, &[]),
        Step {
            name: "downstream",
            what: "cargo xtask downstream".into(),
            action: Box::new(|| downstream::check(project)),
        },
    ];
    let total = steps.len();
    let mut timings = Vec::with_capacity(total);
    for (index, step) in steps.iter().enumerate() {
        let header = format!("[{}/{total}] {}", index + 1, step.name);
        println!("\n==> ci {header}: {}", step.what);
        let step_start = Instant::now();
        if let Err(e) = (step.action)() {
            println!("==> ci {header} FAILED after {}", seconds(step_start));
            return Err(format!("ci step `{}` failed: {e}", step.name).into());
        }
        println!("==> ci {header} passed in {}", seconds(step_start));
        timings.push((step.name, step_start.elapsed().as_secs_f64()));
    }
    println!("\n==> ci passed in {}", seconds(start));
    for (name, secs) in timings {
        println!("    {name:<8} {secs:>8.1} s");
    }
    Ok(())
}
