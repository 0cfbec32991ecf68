//! Where things live (repository root, virtualenv, model cache, target folder) and how child
//! processes are started: every command xtask runs goes through [`Project::command`] so that
//! it sees the same model cache and thread settings.

use std::error::Error;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::pins::{ChunkedModel, ModelPackage};

/// The error type of every xtask operation: a message a person can act on.
pub type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Environment variable that overrides the model cache folder (default `.cache/models`).
pub const MODEL_DIR_ENV: &str = "EXPLAINABILITY_MODEL_DIR";
/// Environment variable that carries the reference outputs' folder to the parity test.
pub const PARITY_DIR_ENV: &str = "EXPLAINABILITY_PARITY_DIR";
/// Environment variable read by our benches and examples for the intra-op thread count.
pub const THREADS_ENV: &str = "EXPLAINABILITY_THREADS";
/// Environment variable naming the Python used to create the virtualenv (default `python3`).
pub const PYTHON_ENV: &str = "EXPLAINABILITY_PYTHON";

/// Paths of this checkout.
#[derive(Debug, Clone)]
pub struct Project {
    /// Repository root (the folder of the workspace `Cargo.toml`).
    pub root: PathBuf,
    /// Model cache: `$EXPLAINABILITY_MODEL_DIR`, else `<root>/.cache/models`; always absolute.
    pub model_dir: PathBuf,
}

impl Project {
    /// Locates the repository root and the model cache.
    ///
    /// # Errors
    /// When the current directory cannot be read (needed to absolutise a relative override).
    pub fn locate() -> Result<Self> {
        // `cargo run` sets CARGO_MANIFEST_DIR at run time too; the compile-time value is the
        // fallback for a binary started by hand.
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let root = manifest.parent().map(Path::to_path_buf).unwrap_or(manifest);
        let model_dir = match std::env::var_os(MODEL_DIR_ENV) {
            Some(dir) if !dir.is_empty() => absolute(Path::new(&dir))?,
            _ => root.join(".cache").join("models"),
        };
        Ok(Self { root, model_dir })
    }

    /// The project-local virtualenv.
    pub fn venv(&self) -> PathBuf {
        self.root.join(".venv")
    }

    /// The virtualenv's Python interpreter.
    pub fn venv_python(&self) -> PathBuf {
        self.venv().join("bin").join("python")
    }

    /// The `.libtorch` link that `.cargo/config.toml` points `LIBTORCH` at.
    pub fn libtorch_link(&self) -> PathBuf {
        self.root.join(".libtorch")
    }

    /// Cargo's target folder (`$CARGO_TARGET_DIR` when set).
    pub fn target_dir(&self) -> Result<PathBuf> {
        match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => absolute(Path::new(&dir)),
            _ => Ok(self.root.join("target")),
        }
    }

    /// Folder a model package is extracted into.
    pub fn package_dir(&self, package: &ModelPackage) -> PathBuf {
        self.model_dir.join(package.folder())
    }

    /// The model (file or folder) inside an extracted package.
    pub fn model_path(&self, package: &ModelPackage) -> PathBuf {
        self.package_dir(package).join(package.model_path)
    }

    /// The assembled file of a chunked model.
    pub fn chunked_model_path(&self, model: &ChunkedModel) -> PathBuf {
        self.model_dir.join(model.folder()).join(model.file)
    }

    /// A command run from the repository root with the model cache made explicit, so cargo
    /// tests, examples and Python scripts all resolve the same folder.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        command.current_dir(&self.root).env(MODEL_DIR_ENV, &self.model_dir);
        command
    }

    /// `cargo` (the one that runs xtask) with [`Project::command`]'s settings.
    pub fn cargo(&self) -> Command {
        self.command(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
    }

    /// The virtualenv's Python with [`Project::command`]'s settings.
    pub fn python(&self) -> Command {
        self.command(self.venv_python())
    }

    /// The LXT reference environment (see `pins::LXT_PACKAGES`).
    pub fn lxt_env(&self) -> PathBuf {
        self.root.join(crate::pins::LXT_ENV_DIR)
    }

    /// [`Project::python`] with the LXT reference environment first on `PYTHONPATH`.
    pub fn lxt_python(&self) -> Command {
        let mut command = self.python();
        command.env("PYTHONPATH", self.lxt_env());
        command
    }
}

/// `path` made absolute against the current directory (not resolved through links).
///
/// # Errors
/// When the current directory cannot be read.
pub fn absolute(path: &Path) -> Result<PathBuf> {
    Ok(std::path::absolute(path)?)
}

/// Runs a command to completion with inherited stdio.
///
/// # Errors
/// When it cannot start or exits unsuccessfully; the message names `what`.
pub fn run(what: &str, command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .map_err(|e| format!("{what}: could not start `{}`: {e}", describe(command)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what}: `{}` failed ({status})", describe(command)).into())
    }
}

/// Runs a command and returns its standard output; standard error passes through.
///
/// # Errors
/// When it cannot start or exits unsuccessfully.
pub fn output(what: &str, command: &mut Command) -> Result<String> {
    let out = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("{what}: could not start `{}`: {e}", describe(command)))?;
    if !out.status.success() {
        return Err(format!("{what}: `{}` failed ({})", describe(command), out.status).into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// A command line for messages: program and arguments, space-separated.
pub fn describe(command: &Command) -> String {
    let program = Path::new(command.get_program());
    // The cargo that runs xtask is a long toolchain path; its file name reads better.
    let shown = if program.file_name().is_some_and(|name| name == "cargo") {
        Path::new("cargo")
    } else {
        program
    };
    let mut text = shown.to_string_lossy().into_owned();
    for arg in command.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Seconds since `start`, for progress lines.
pub fn seconds(start: Instant) -> String {
    format!("{:.1} s", start.elapsed().as_secs_f64())
}
