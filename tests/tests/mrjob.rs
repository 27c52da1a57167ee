//! The step under mrjob's local runner (`emr/local-run.sh mrjob`: several map tasks on splits,
//! several reducers) agrees with `pipeline run`. Needs `.venv-mrjob` (`bash emr/setup-mrjob.sh`)
//! or `MRJOB_PYTHON`, hence ignored by default; run with
//! `cargo test -p fastdp-tests --test mrjob -- --ignored`.

use std::collections::BTreeMap;
use std::path::Path;

use fastdp_tests::*;

/// Runs the mrjob local step and `pipeline run` on `input`; compares records and counters.
fn agree_under_mrjob(dir: &Path, input: &[u8], args: &[&str], shards: u32) {
    let csv = dir.join("in.csv");
    std::fs::write(&csv, input).unwrap();
    let shards_arg = shards.to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--shards", &shards_arg]);
    let manifest = pipeline_run(&csv, &dir.join("pipeline"), &all);
    let (want, want_header) = read_shards(&dir.join("pipeline"), shards);

    let bin_dir = Path::new(mapper()).parent().unwrap().to_str().unwrap();
    let quoted: Vec<String> = all.iter().map(|a| format!("'{a}'")).collect();
    let script = root().join("emr/local-run.sh");
    sh(
        dir,
        &format!(
            "bash '{}' mrjob in.csv mrjob {}",
            script.display(),
            quoted.join(" ")
        ),
        &[("BIN_DIR", bin_dir)],
    );
    let out = dir.join("mrjob");
    let parts = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("part-")
        })
        .count();
    assert!(
        parts > 1,
        "mrjob ran {parts} reducer(s); the test wants several"
    );
    let (got, header) = read_shards(&out, shards);
    assert_eq!(header, want_header);
    assert_eq!(got, want, "records per shard");

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_counters.json")).unwrap()).unwrap();
    let counter = |group: &str, name: &str| json[group][name].as_u64().unwrap_or(0);
    let dropped: BTreeMap<String, u64> = manifest_dropped(&manifest)
        .keys()
        .map(|r| (r.clone(), counter("dropped", r)))
        .collect();
    assert_eq!(
        dropped,
        manifest_dropped(&manifest),
        "dropped rows by reason"
    );
    assert_eq!(counter("mapper", "kept"), manifest.rows.kept);
    assert_eq!(
        counter("mapper", "header_lines"),
        manifest.rows.header_lines
    );
    assert_eq!(counter("reducer", "records"), manifest.rows.kept);
}

#[test]
#[ignore = "needs mrjob: bash emr/setup-mrjob.sh"]
fn mrjob_local_generated_data_with_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("gen.csv");
    pipeline_generate(&csv, 30000, 3, 0.02);
    let input = with_bad_lines(&std::fs::read(&csv).unwrap(), 50, 3);
    let work = dir.path().join("w");
    std::fs::create_dir(&work).unwrap();
    agree_under_mrjob(&work, &input, &[], 16);
}

#[test]
#[ignore = "needs mrjob: bash emr/setup-mrjob.sh"]
fn mrjob_local_fulton_pums() {
    let input = fulton_pums_bytes();
    let header = input.split(|&b| b == b'\n').next().unwrap();
    let columns = shards::fields::split_names(header).unwrap().join(",");
    let dir = tempfile::tempdir().unwrap();
    let features = "sex,black,asian,married,uscitizen,disability,militaryservice,englishability";
    agree_under_mrjob(
        dir.path(),
        &input,
        &[
            "--label",
            "employed",
            "--features",
            features,
            "--columns",
            &columns,
        ],
        16,
    );
}
