//! Using the crates from another project: `cargo xtask env` (the exports a downstream crate
//! needs) and the CI check that a crate outside the workspace builds and runs from the README's
//! "Using it from your own crate" section alone.
//!
//! The check reads that section's marked code blocks (`<!-- downstream: FILE -->` followed by a
//! fenced block): `Cargo.toml`, `build.rs` and `src/main.rs` become a crate in a temporary
//! folder outside the workspace, `setup.sh` and `run.sh` are run there by `bash` with an
//! environment stripped to what any shell has (no `LIBTORCH`, no `LD_LIBRARY_PATH`, none of the
//! variables cargo passes to xtask), with [`CHECKOUT_PLACEHOLDER`] replaced by this checkout.
//! The first line `run.sh` prints must start with [`EXPECTED_FIRST`]; the built binary is then
//! started once more on its own (no cargo, same stripped environment), which only works when
//! its rpath finds libtorch. So the check fails as soon as the README's instructions stop being
//! enough.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::pins::SMOLLM2;
use crate::project::{MODEL_DIR_ENV, PYTHON_ENV, Project, Result, describe, output, seconds};

/// The README that carries the marked blocks.
const README: &str = "README.md";
/// Marker that names the file a fenced block becomes: `<!-- downstream: src/main.rs -->`.
const MARKER_PREFIX: &str = "<!-- downstream:";
/// Blocks the check needs, in the order they are used.
const BLOCKS: &[&str] = &["Cargo.toml", "build.rs", "src/main.rs", "setup.sh", "run.sh"];
/// Stands for the checkout's path in the README's blocks.
pub const CHECKOUT_PLACEHOLDER: &str = "/path/to/explainability";
/// The README's example crate prints the most likely next tokens of "The capital of France
/// is", one per line, as `{token:?} {probability}`; SmolLM2 puts " Paris" first (as
/// transformers does on the same weights).
const EXPECTED_FIRST: &str = "\" Paris\" ";
/// Variables the stripped environment keeps: what any shell of the user has (where the tools
/// are, locale, proxies) and the project's own documented settings. Nothing that says where
/// libtorch is.
const KEPT_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TERM",
    "TMPDIR",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "CARGO_TERM_COLOR",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    MODEL_DIR_ENV,
    PYTHON_ENV,
];

/// The variables a downstream crate needs, as `(name, value)`: `LIBTORCH` (the wheel's `torch`
/// folder that `.libtorch` links to, resolved) and the model cache.
///
/// # Errors
/// When setup has not linked `.libtorch` yet.
pub fn exports(project: &Project) -> Result<Vec<(&'static str, PathBuf)>> {
    let link = project.libtorch_link();
    let libtorch = fs::canonicalize(&link)
        .map_err(|e| format!("{}: {e}; run `cargo xtask setup` first", link.display()))?;
    Ok(vec![("LIBTORCH", libtorch), (MODEL_DIR_ENV, project.model_dir.clone())])
}

/// `cargo xtask env`: prints the exports as shell lines for `eval "$(cargo xtask env)"`.
///
/// # Errors
/// See [`exports`].
pub fn env(project: &Project) -> Result<()> {
    let exports = exports(project)?;
    println!("# explainability: for building your own crate against this checkout's libtorch");
    for (name, value) in &exports {
        println!("export {name}={}", shell_quote(&value.to_string_lossy()));
    }
    println!(
        "# The binary finds libtorch through the rpath your build.rs adds (README, \"Using it \
         from your own crate\"); without that build.rs:"
    );
    println!("# export LD_LIBRARY_PATH=\"$LIBTORCH/lib${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\"");
    println!(
        "# SmolLM2 (the README's example model): \"${MODEL_DIR_ENV}/{}/{}\"",
        SMOLLM2.folder(),
        SMOLLM2.model_path
    );
    Ok(())
}

/// `value` in single quotes for a POSIX shell.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The marked blocks of `readme`, by file name.
///
/// # Errors
/// A marker without a fenced block after it, a file marked twice, or a needed block missing.
fn marked_blocks(readme: &str) -> Result<BTreeMap<String, String>> {
    let mut blocks = BTreeMap::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim().strip_prefix(MARKER_PREFIX) else { continue };
        let name = rest.trim_end_matches("-->").trim().to_owned();
        let fence = lines.next().map(str::trim_start).unwrap_or_default();
        if !fence.starts_with("```") {
            return Err(format!("{README}: marker `{name}` is not followed by a ``` block").into());
        }
        let mut body = String::new();
        loop {
            let Some(line) = lines.next() else {
                return Err(format!("{README}: the block of `{name}` is not closed").into());
            };
            if line.trim_start().starts_with("```") {
                break;
            }
            body.push_str(line);
            body.push('\n');
        }
        if blocks.insert(name.clone(), body).is_some() {
            return Err(format!("{README}: `{name}` is marked twice").into());
        }
    }
    let missing: Vec<&str> =
        BLOCKS.iter().copied().filter(|name| !blocks.contains_key(*name)).collect();
    if !missing.is_empty() {
        return Err(format!("{README}: no `{MARKER_PREFIX} NAME -->` block for {missing:?}").into());
    }
    Ok(blocks)
}

/// A command with the stripped environment (see the module documentation).
fn stripped(program: impl AsRef<std::ffi::OsStr>, dir: &Path, target: &Path) -> Command {
    let mut command = Command::new(program);
    command.current_dir(dir).env_clear();
    for name in KEPT_ENV {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    // Where the build goes is not something the README has to say; a dedicated folder keeps
    // the downstream build incremental between CI runs.
    command.env("CARGO_TARGET_DIR", target);
    command
}

/// The CI check; see the module documentation.
///
/// # Errors
/// A missing block, a failing command, or output that does not start with " Paris".
pub fn check(project: &Project) -> Result<()> {
    let readme = fs::read_to_string(project.root.join(README))?;
    let root = project.root.to_string_lossy().into_owned();
    let blocks: BTreeMap<String, String> = marked_blocks(&readme)?
        .into_iter()
        .map(|(name, body)| (name, body.replace(CHECKOUT_PLACEHOLDER, &root)))
        .collect();
    let target = project.target_dir()?.join("downstream");
    let dir =
        std::env::temp_dir().join(format!("explainability-downstream-{}", std::process::id()));
    if dir.starts_with(&project.root) {
        return Err(
            format!("{} is inside the workspace; set TMPDIR elsewhere", dir.display()).into()
        );
    }
    let _ = fs::remove_dir_all(&dir);
    let result = check_in(&blocks, &dir, &target, &project.model_path(&SMOLLM2));
    let _ = fs::remove_dir_all(&dir);
    result
}

fn check_in(
    blocks: &BTreeMap<String, String>,
    dir: &Path,
    target: &Path,
    model: &Path,
) -> Result<()> {
    for name in ["Cargo.toml", "build.rs", "src/main.rs"] {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, &blocks[name])?;
    }
    println!("downstream: crate {} (target folder {})", dir.display(), target.display());
    for script in ["setup.sh", "run.sh"] {
        fs::write(dir.join(script), &blocks[script])?;
    }

    let start = Instant::now();
    let mut setup = stripped("bash", dir, target);
    setup.args(["-euo", "pipefail", "setup.sh"]);
    crate::project::run("downstream setup.sh", &mut setup)?;

    let mut run = stripped("bash", dir, target);
    run.args(["-euo", "pipefail", "run.sh"]);
    let printed = output("downstream run.sh", &mut run)?;
    print!("{printed}");
    expect_paris("run.sh", &printed)?;
    println!("downstream: built and ran from the README in {}", seconds(start));

    // The same binary without cargo: only its rpath can find libtorch now.
    let name = package_name(&blocks["Cargo.toml"])?;
    let binary = target.join("release").join(&name);
    let mut alone = stripped(&binary, dir, target);
    alone.arg(model);
    let printed = output("downstream binary", &mut alone)
        .map_err(|e| format!("{e}\n  (`{}` without cargo)", describe(&alone)))?;
    expect_paris("the binary on its own", &printed)?;
    println!("downstream: {} runs on its own", binary.display());
    Ok(())
}

fn expect_paris(what: &str, printed: &str) -> Result<()> {
    let first = printed.lines().next().unwrap_or_default();
    if first.starts_with(EXPECTED_FIRST) {
        Ok(())
    } else {
        Err(format!(
            "{what}: expected a first line starting with {EXPECTED_FIRST:?}, got {first:?}"
        )
        .into())
    }
}

/// `name = "…"` of the `[package]` table of the README's `Cargo.toml` block.
fn package_name(manifest: &str) -> Result<String> {
    manifest
        .lines()
        .skip_while(|line| line.trim() != "[package]")
        .find_map(|line| {
            let value = line.trim().strip_prefix("name")?.trim().strip_prefix('=')?;
            Some(value.trim().trim_matches('"').to_owned())
        })
        .ok_or_else(|| "README: the Cargo.toml block has no `[package]` name".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_read_by_marker() {
        let readme = "text\n\
                      <!-- downstream: Cargo.toml -->\n```toml\n[package]\nname = \"x\"\n```\n\
                      <!-- downstream: build.rs -->\n```rust\nfn main() {}\n```\n\
                      <!-- downstream: src/main.rs -->\n```rust\nfn main() {}\n```\n\
                      <!-- downstream: setup.sh -->\n```sh\ntrue\n```\n\
                      <!-- downstream: run.sh -->\n```sh\ncargo run\n```\n";
        let blocks = marked_blocks(readme).unwrap();
        assert_eq!(blocks["Cargo.toml"], "[package]\nname = \"x\"\n");
        assert_eq!(package_name(&blocks["Cargo.toml"]).unwrap(), "x");
        assert!(marked_blocks("<!-- downstream: run.sh -->\n```sh\ntrue\n```\n").is_err());
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
