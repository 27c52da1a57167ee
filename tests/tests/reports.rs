//! The HTML reports as a person sees them: rendered by headless Chromium to a PNG that is not
//! blank, with the expected titles and axes in the rendered DOM, and nothing fetched.
//!
//! Chromium is Debian's package (`scripts/test.sh` installs it). Without it the test says so and
//! skips, except under `CI=true`, where a missing browser fails it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fastdp_tests::{pipeline, trainer};

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

/// Runs `program` with `args` in `dir`; its stdout, or a failure with its stderr.
fn run_in(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Generated rows in `dir/shards` (4 shards).
fn generated_shards(dir: &Path, rows: &str) {
    run_in(
        dir,
        pipeline(),
        &["generate", "--rows", rows, "--output", "in.csv"],
    );
    run_in(
        dir,
        pipeline(),
        &[
            "run", "--input", "in.csv", "--output", "shards", "--shards", "4", "--quiet",
        ],
    );
}

#[test]
fn trainer_report_renders_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generated_shards(d, "4000");
    // The columns as they are: on 3,200 training rows the default DP quantile bounds are too
    // coarse for 0/1 columns (docs/design.md, "What it needs"), and the attack on a column
    // that is no longer 0/1 is skipped.
    run_in(
        d,
        trainer(),
        &[
            "--auto-bounds",
            "off",
            "--epochs",
            "3",
            "--accountant",
            "rdp",
            "--seed",
            "1",
            "--no-progress",
        ],
    );
    // `trainer audit`'s output (epoch lines, a human line, its JSON line) saved in the run
    // folder, where the report finds it.
    let audit = run_in(
        d,
        trainer(),
        &[
            "audit",
            "--epochs",
            "1",
            "--canaries",
            "100",
            "--accountant",
            "rdp",
            "--seed",
            "1",
            "--no-progress",
        ],
    );
    std::fs::write(d.join("run/audit.jsonl"), &audit).unwrap();
    let mia_auc = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["membership_inference"]["auc"].as_f64())
        .expect("the audit's JSON line");
    let said = run_in(d, trainer(), &["report", "run"]);
    assert!(said.contains("run/report.html"), "{said}");
    check_rendered(
        &d.join("run/report.html"),
        &[
            "Training run: run",
            "Test accuracy per epoch",
            "Test loss per epoch",
            "Epsilon spent per epoch",
            "PLD",
            "RDP",
            "epoch",
            "epsilon",
            "Attack accuracy per epoch",
            "majority baseline",
            "imputer baseline",
            "Audited against accounted epsilon",
            "differential privacy by the rdp accountant",
            "Not private: the operator",
            "Train and test accuracy per epoch (train: not private)",
            "train accuracy",
            "membership inference",
        ],
    );
    let full = std::fs::read_to_string(d.join("run/report.html")).unwrap();
    assert!(
        full.contains(&mia_auc.to_string()),
        "the audit's AUC {mia_auc}"
    );
    // --public: only what epsilon covers: the card's noisy test accuracy, no exact held-out or
    // training-set figure, nothing of the audit (another run).
    run_in(
        d,
        trainer(),
        &[
            "report",
            "run",
            "--audit",
            "run/audit.jsonl",
            "--public",
            "--out",
            "public.html",
        ],
    );
    check_rendered(
        &d.join("public.html"),
        &[
            "Public page",
            "released (covered by epsilon)",
            "Epsilon spent per epoch",
        ],
    );
    let public = std::fs::read_to_string(d.join("public.html")).unwrap();
    for absent in [
        "Not private",
        "train accuracy",
        "Train and test",
        "membership inference",
        &mia_auc.to_string(),
        "Test accuracy per epoch",
        "Attack accuracy per epoch",
        "Audited against accounted epsilon",
    ] {
        assert!(!public.contains(absent), "{absent} is on the public page");
    }
    let again = Command::new(trainer())
        .args(["report", "run"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--overwrite"));
}

#[test]
fn trainer_sweep_writes_a_line_per_run_and_its_plot_renders() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    generated_shards(d, "3000");
    let args = [
        "sweep",
        "--target-epsilon",
        "1,4",
        "--repeats",
        "2",
        "--epochs",
        "2",
        "--accountant",
        "rdp",
        "--seed",
        "3",
        "--no-progress",
        "--out",
        "sw",
    ];
    let printed = run_in(d, trainer(), &args);
    let written = std::fs::read_to_string(d.join("sw/runs.jsonl")).unwrap();
    assert_eq!(printed, written, "the lines printed are the lines written");
    let lines: Vec<serde_json::Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "the baseline and 2 points x 2 repeats");
    assert!(lines[0]["target_epsilon"].is_null() && lines[0]["epsilon"].is_null());
    let targets: Vec<f64> = lines[1..]
        .iter()
        .map(|l| l["target_epsilon"].as_f64().unwrap())
        .collect();
    assert_eq!(targets, [1.0, 1.0, 4.0, 4.0]);
    for l in &lines[1..] {
        let (e, t) = (
            l["epsilon"].as_f64().unwrap(),
            l["target_epsilon"].as_f64().unwrap(),
        );
        assert!(e <= t && e > 0.9 * t, "spent {e} for target {t}");
        assert!(l["test_accuracy"].as_f64().unwrap() > 0.3);
        assert_eq!(l["non_private"]["private"], false);
    }
    // --seed: repeat r of every point has the same seed, repeats differ.
    assert_eq!(lines[1]["seed"], lines[3]["seed"]);
    assert_ne!(lines[1]["seed"], lines[2]["seed"]);
    assert_eq!(lines[0]["seed"], lines[1]["seed"]);
    check_rendered(
        &d.join("sw/report.html"),
        &[
            "Privacy-utility sweep: shards",
            "Test accuracy against epsilon",
            "epsilon (log scale; rdp)",
            "test accuracy",
            "non-private (--no-dp)",
            "majority class",
        ],
    );
    // An earlier sweep's results are not replaced unless asked; the same seed gives the same
    // figures.
    let refused = Command::new(trainer())
        .args(args)
        .current_dir(d)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("runs.jsonl"));
    let again = run_in(d, trainer(), &[&args[..], &["--overwrite"]].concat());
    let figures = |text: &str| -> Vec<(serde_json::Value, serde_json::Value)> {
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| (v["test_accuracy"].clone(), v["epsilon"].clone()))
            .collect()
    };
    assert_eq!(figures(&again), figures(&written));
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
