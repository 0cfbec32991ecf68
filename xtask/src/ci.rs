//! `cargo xtask ci`: the README's test command and what `.ci/run` runs. Steps run in order,
//! each with a header and its time; the first failure stops the run and is named.

use std::time::Instant;

use crate::parity;
use crate::project::{Project, Result, describe, run, seconds};
use crate::setup;

/// Profile flag of the test run. Release, because the integration tests run the real 135M
/// model (and `parity` must be release to be fast), so tests and parity share one optimised
/// build; clippy and rustdoc only need metadata, so the run compiles code for one profile
/// instead of two (libtorch's C++ wrapper included).
pub const TEST_PROFILE: &[&str] = &["--release"];

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
