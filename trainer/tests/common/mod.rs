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
    shard_units(csv, out, None, None);
}

/// [`shard`] with `unit` as the privacy unit (`--privacy-unit`) and at most `max_rows` rows a
/// unit.
pub fn shard_units(csv: &Path, out: &Path, unit: Option<&str>, max_rows: Option<u32>) {
    let mut config = pipeline::RunConfig {
        shards: 4,
        overwrite: true,
        max_rows_per_unit: max_rows,
        ..pipeline::RunConfig::new(
            Location::Local(csv.to_path_buf()),
            Location::Local(out.to_path_buf()),
        )
    };
    config.schema.unit = unit.map(str::to_string);
    pipeline::run(&config).expect("pipeline run");
}

/// `rows` generated people in households (`pipeline generate --households`), sharded with the
/// household as the privacy unit, at most `max_rows` rows a unit, into `dir/households`.
pub fn household_shards(dir: &Path, rows: u64, seed: u64, max_rows: Option<u32>) -> PathBuf {
    let csv = dir.join("households.csv");
    let out = dir.join("households");
    pipeline::generate(&pipeline::GenerateConfig {
        households: true,
        rows,
        seed,
        na_rate: 0.01,
        output: Location::Local(csv.clone()),
        overwrite: true,
        s3: Default::default(),
    })
    .expect("generate");
    shard_units(&csv, &out, Some("household"), max_rows);
    out
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

/// The public feature spec of the Fulton fixture (ranges to standardize within, and categories,
/// from the PUMS codebook), committed next to it.
pub fn fulton_spec() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/FultonPUMS5full.spec.json")
}

/// The JSON file at `path`.
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("the file is there")).expect("JSON")
}

/// The flat parameters of a saved model, in file order.
pub fn weights(path: &Path) -> tch::Tensor {
    let mut named = tch::Tensor::read_safetensors(path).expect("a saved model");
    named.sort_by(|a, b| a.0.cmp(&b.0));
    tch::Tensor::cat(
        &named
            .iter()
            .map(|(_, t)| t.reshape([-1]))
            .collect::<Vec<_>>(),
        0,
    )
}

/// ||a - b|| / ||a||.
pub fn relative_difference(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    (a - b).norm().double_value(&[]) / a.norm().double_value(&[])
}
