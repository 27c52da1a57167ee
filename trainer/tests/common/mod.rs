//! Helpers shared by the integration tests: shards made by the real pipeline, and running the
//! real `trainer` binary in a fresh directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use shards::{Location, SchemaOptions};

/// Generates `rows` synthetic CaPUMS-like rows (`pipeline generate`) and shards them with the
/// timely pipeline (`pipeline run`, 4 shards, one worker) into `dir/shards`.
pub fn generated_shards(dir: &Path, rows: u64, seed: u64) -> PathBuf {
    let csv = dir.join("input.csv");
    let out = dir.join("shards");
    pipeline::generate(&pipeline::GenerateConfig {
        households: false,
        rows,
        seed,
        na_rate: 0.01,
        output: Location::Local(csv.clone()),
        overwrite: true,
        s3: Default::default(),
    })
    .expect("generate");
    shard(&csv, &out);
    out
}

/// Shards the CSV `csv` with the timely pipeline (4 shards, one worker) into `out`.
pub fn shard(csv: &Path, out: &Path) {
    pipeline::run(&pipeline::RunConfig {
        shards: 4,
        overwrite: true,
        ..pipeline::RunConfig::new(
            Location::Local(csv.to_path_buf()),
            Location::Local(out.to_path_buf()),
        )
    })
    .expect("pipeline run");
}

/// Runs `trainer args..` in `cwd`; no progress bar.
pub fn trainer(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .current_dir(cwd)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("trainer runs")
}

/// stdout of a run that must succeed.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "trainer failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr of a run that must fail.
pub fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "trainer should fail; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The value printed as `key = value` by `trainer privacy`.
pub fn value(stdout: &str, key: &str) -> f64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no '{key} = ' in {stdout}"))
        .parse()
        .expect("a number")
}

/// The metrics file's lines.
pub fn metrics(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("metrics file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The repository's real-data fixture (Fulton County PUMS) sharded by the pipeline into
/// `dir/fulton` (label `employed`, every column but the constant `state` and `fips`).
pub fn fulton_shards(dir: &Path) -> PathBuf {
    let csv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/FultonPUMS5full.csv");
    let out = dir.join("fulton");
    pipeline::run(&pipeline::RunConfig {
        shards: 4,
        schema: SchemaOptions {
            exclude: Some(vec!["state".into(), "fips".into()]),
            ..SchemaOptions::default()
        },
        overwrite: true,
        ..pipeline::RunConfig::new(Location::Local(csv), Location::Local(out.clone()))
    })
    .expect("pipeline run on the Fulton fixture");
    out
}

/// The public feature spec of the Fulton fixture (bounds and categories from the PUMS
/// codebook's ranges), committed next to it.
pub fn fulton_spec() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/FultonPUMS5full.spec.json")
}

/// The JSON file at `path`.
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("the file is there")).expect("JSON")
}
