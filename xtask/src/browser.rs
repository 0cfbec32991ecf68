//! `cargo xtask browser`: loads the reports of `explain-viz` in headless Chromium. Installs
//! Debian's `chromium` with apt-get when it is missing (and fails, naming why, when it cannot),
//! generates the gallery (`cargo run -p explain-viz --example report_gallery`), then checks:
//! the report's scripts ran without a JavaScript error (`data-report-ready` set, no
//! `data-js-errors` from the `error` hook), the markup payloads in the report show as text and
//! ran nothing (no `data-pwned` attribute, no `<img>` element), and screenshots of the report
//! and of an SVG chart are not blank (decoded PNG, share of non-white pixels, distinct colours).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::project::{Project, Result, describe, output, run};

/// Browser binaries tried in order.
const BROWSERS: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

/// Seconds a single headless Chromium run may take.
const BROWSER_TIMEOUT_S: &str = "120";

/// Smallest share of non-white pixels in a screenshot that counts as "not blank".
const MIN_INK: f64 = 0.02;

/// Smallest number of distinct colours in a screenshot (text, charts, token colours).
const MIN_COLOURS: usize = 16;

/// Runs the browser checks; see the module documentation.
///
/// # Errors
/// When Chromium cannot be found or installed, the gallery cannot be built, or a check fails.
pub fn browser(project: &Project) -> Result<()> {
    let chromium = find_or_install_chromium()?;
    println!("browser: using {}", chromium.display());
    let out = project.target_dir()?.join("viz-browser");
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    // The test step's profile, so that the example reuses what `cargo test` built.
    let profile_flags: &[&str] = if crate::ci::TEST_PROFILE.is_empty() {
        &["--profile", "test"]
    } else {
        crate::ci::TEST_PROFILE
    };
    let mut gallery = project.cargo();
    gallery
        .arg("run")
        .args(profile_flags)
        .args(["-p", "explain-viz", "--example", "report_gallery", "--"])
        .arg(&out);
    run("browser: build the report gallery", &mut gallery)?;
    let report = out.join("report.html");
    let profile = out.join("chromium-profile");

    let dom = output(
        "browser: load the report (--dump-dom)",
        chromium_command(&chromium, &profile).arg("--dump-dom").arg(file_url(&report)?),
    )?;
    check_dom(&dom)?;
    println!("browser: report loaded, scripts ran without error, payloads shown as text");

    for (name, page, size) in
        [("report", &report, "1280,2400"), ("heatmap", &out.join("heatmap.svg"), "900,500")]
    {
        let shot = out.join(format!("{name}.png"));
        run(
            &format!("browser: screenshot of {name}"),
            chromium_command(&chromium, &profile)
                .arg(format!("--screenshot={}", shot.display()))
                .arg(format!("--window-size={size}"))
                .arg(file_url(page)?),
        )?;
        let (ink, colours) = screenshot_stats(&shot)?;
        println!(
            "browser: {name} screenshot {}: {:.1} % non-white pixels, {colours} colours",
            shot.display(),
            100.0 * ink
        );
        if ink < MIN_INK || colours < MIN_COLOURS {
            return Err(format!(
                "browser: the {name} screenshot looks blank ({:.2} % non-white pixels, \
                 {colours} colours; need ≥ {:.0} % and ≥ {MIN_COLOURS})",
                100.0 * ink,
                100.0 * MIN_INK
            )
            .into());
        }
    }
    println!("browser: all checks passed ({})", out.display());
    Ok(())
}

/// A headless Chromium command with a throw-away profile. `--no-sandbox` because CI runs as
/// root, where Chromium refuses its sandbox.
fn chromium_command(chromium: &Path, profile: &Path) -> Command {
    let mut command = Command::new("timeout");
    command.arg(BROWSER_TIMEOUT_S).arg(chromium).args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    command
}

fn file_url(path: &Path) -> Result<String> {
    Ok(format!("file://{}", std::path::absolute(path)?.display()))
}

/// The first browser binary on `PATH`.
fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| BROWSERS.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Finds Chromium, installing Debian's package with apt-get when it is missing.
fn find_or_install_chromium() -> Result<PathBuf> {
    if let Some(found) = find_chromium() {
        return Ok(found);
    }
    println!("browser: chromium is missing; installing Debian's `chromium` with apt-get");
    let install = || -> Result<()> {
        let mut update = Command::new("apt-get");
        update.arg("update").env("DEBIAN_FRONTEND", "noninteractive");
        run("apt-get update", &mut update)?;
        let mut install = Command::new("apt-get");
        install
            .args(["install", "-y", "--no-install-recommends", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        run("apt-get install chromium", &mut install)
    };
    if let Err(e) = install() {
        return Err(format!(
            "browser: chromium is required for the report checks and could not be installed \
             ({e}); install Debian's `chromium` package (as root: apt-get install chromium) \
             and rerun"
        )
        .into());
    }
    find_chromium().ok_or_else(|| {
        format!(
            "browser: apt-get installed chromium but none of {BROWSERS:?} is on PATH; \
             check `{}`",
            describe(Command::new("dpkg").args(["-L", "chromium"]))
        )
        .into()
    })
}

/// The checks on the DOM Chromium serialised after running the page's scripts.
fn check_dom(dom: &str) -> Result<()> {
    let root = dom
        .find("<html")
        .and_then(|start| dom[start..].find('>').map(|end| &dom[start..start + end]))
        .ok_or("browser: the dumped DOM has no <html> element")?;
    if root.contains("data-js-errors") {
        return Err(format!("browser: the report raised JavaScript errors: {root}>").into());
    }
    if !root.contains("data-report-ready=\"1\"") {
        return Err(format!("browser: the report's script did not run to its end: {root}>").into());
    }
    if root.contains("data-pwned") {
        return Err(format!("browser: a markup payload in the report ran: {root}>").into());
    }
    if dom.contains("<img") {
        return Err("browser: a markup payload became an <img> element".into());
    }
    for text in ["&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;img src=x onerror="] {
        if !dom.contains(text) {
            return Err(format!("browser: the payload text {text:?} is not shown as text").into());
        }
    }
    Ok(())
}

/// Share of non-white pixels and number of distinct colours of a PNG screenshot.
fn screenshot_stats(path: &Path) -> Result<(f64, usize)> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("browser: no screenshot at {}: {e}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info()?;
    let mut buffer = vec![0; reader.output_buffer_size().ok_or("browser: screenshot too large")?];
    let info = reader.next_frame(&mut buffer)?;
    let channels = info.color_type.samples();
    let pixels = &buffer[..info.buffer_size()];
    let mut non_white = 0_usize;
    let mut colours = std::collections::HashSet::new();
    for pixel in pixels.chunks_exact(channels) {
        let rgb = match channels {
            1 | 2 => [pixel[0]; 3],
            _ => [pixel[0], pixel[1], pixel[2]],
        };
        if rgb.iter().any(|&c| c < 245) {
            non_white += 1;
        }
        colours.insert(rgb);
    }
    let total = (pixels.len() / channels).max(1);
    Ok((non_white as f64 / total as f64, colours.len()))
}
