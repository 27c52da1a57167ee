//! The HTML reports as a person sees them: rendered by headless Chromium to a PNG that is not
//! blank, with the expected titles and axes in the rendered DOM, and nothing fetched.
//!
//! Chromium is Debian's package (`scripts/test.sh` installs it). Without it the test says so and
//! skips, except under `CI=true`, where a missing browser fails it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fastdp_tests::pipeline;

/// The Chromium binary, or `None` (with a message) where it is not installed.
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .map(move |dir| dir.join(name))
        })
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but Chromium is not installed (scripts/test.sh installs Debian's chromium)"
        );
        eprintln!("skipped: Chromium not found (apt-get install chromium; scripts/test.sh does)");
    }
    found
}

/// Runs headless Chromium on `page` with `args` (a fresh profile, no network of its own).
fn headless(chromium: &Path, profile: &Path, page: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1000,2600",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .output()
        .expect("chromium starts");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Share of pixels of a PNG that are not (near) white.
fn inked_share(png_path: &Path) -> f64 {
    let file = std::fs::File::open(png_path).expect("the screenshot exists");
    let decoder = png::Decoder::new(std::io::BufReader::new(file));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a buffer size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    let total = pixels.len() / channels;
    let inked = pixels
        .chunks_exact(channels)
        .filter(|p| p.iter().take(3).any(|&c| c < 200))
        .count();
    inked as f64 / total as f64
}

/// Renders `page` to `png` and its DOM; checks the picture is not blank and the texts are in
/// the DOM, and that the page neither runs scripts nor loads anything.
fn check_rendered(page: &Path, texts: &[&str]) {
    let Some(chromium) = chromium() else { return };
    let dir = page.parent().unwrap();
    let profile = dir.join("chromium-profile");
    let png = dir.join(format!(
        "{}.png",
        page.file_stem().unwrap().to_string_lossy()
    ));
    headless(
        &chromium,
        &profile,
        page,
        &[&format!("--screenshot={}", png.display())],
    );
    let ink = inked_share(&png);
    assert!(
        ink > 0.01,
        "{}: the rendered page is blank ({:.4} of pixels inked)",
        page.display(),
        ink
    );
    let dom = headless(&chromium, &profile, page, &["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    for text in texts {
        assert!(dom.contains(text), "'{text}' is not in the rendered DOM");
    }
    assert!(dom.contains("<svg"), "the plots are in the DOM");
    let html = std::fs::read_to_string(page).unwrap();
    assert!(!html.contains("<script"), "the page runs no script");
    for attribute in ["src=", "href=", "@import", "url("] {
        assert!(
            !html.contains(attribute),
            "the page loads something ({attribute})"
        );
    }
}

#[test]
fn pipeline_report_renders_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        let out = Command::new(pipeline())
            .args(args)
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pipeline {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&[
        "generate",
        "--rows",
        "2000",
        "--na-rate",
        "0.05",
        "--output",
        "in.csv",
    ]);
    run(&[
        "run", "--input", "in.csv", "--output", "shards", "--shards", "4", "--quiet",
    ]);
    let said = run(&["report", "shards", "--out", "report.html"]);
    assert!(said.contains("report.html"), "{said}");
    check_rendered(
        &d.join("report.html"),
        &[
            "Shards: shards",
            "Dropped rows by reason",
            "Kept rows by label",
            "Feature means",
            "Rows per shard",
            "missing",
            "part-00003",
            "englishability",
        ],
    );
}
