//! The engines agree: `pipeline run` and `mapper | sort | reducer` (whole input, and map tasks
//! on splits with several shards per reducer) give the same records in every shard and the same
//! dropped-row counts, on generated data with bad rows and on the real FultonPUMS extract.

use std::path::Path;

use fastdp_tests::*;

/// Runs both engines on `input` and compares them; `args` are the shared options.
fn agree(dir: &Path, input: &[u8], args: &[&str], shards: u32) {
    let csv = dir.join("in.csv");
    std::fs::write(&csv, input).unwrap();
    let shards_arg = shards.to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--shards", &shards_arg]);

    let manifest = pipeline_run(
        &csv,
        &dir.join("pipeline"),
        &[&all[..], &["--threads", "2"]].concat(),
    );
    let (want, want_header) = read_shards(&dir.join("pipeline"), shards);
    assert_eq!(
        manifest.rows.kept,
        want.values().map(|v| v.len() as u64).sum::<u64>()
    );

    let quoted: Vec<String> = all.iter().map(|a| format!("'{a}'")).collect();
    std::fs::create_dir(dir.join("streaming")).unwrap();
    sh(
        dir,
        &format!(
            "\"$MAPPER\" {} < in.csv 2> map.err | LC_ALL=C sort | \"$REDUCER\" > streaming/part-00000",
            quoted.join(" ")
        ),
        &[],
    );
    let (got, header) = read_shards(&dir.join("streaming"), shards);
    assert_eq!(header, want_header);
    assert_eq!(got, want, "records per shard");
    let map = counters(&std::fs::read(dir.join("map.err")).unwrap());
    assert_eq!(
        dropped(&map),
        manifest_dropped(&manifest),
        "dropped rows by reason"
    );
    assert_eq!(map["mapper,kept"], manifest.rows.kept);
    assert_eq!(map["mapper,input_rows"], manifest.rows.input_rows);
    assert_eq!(map["mapper,header_lines"], manifest.rows.header_lines);
}

#[test]
fn generated_data_with_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("gen.csv");
    pipeline_generate(&csv, 20000, 7, 0.02);
    let input = with_bad_lines(&std::fs::read(&csv).unwrap(), 40, 7);
    let work = dir.path().join("a");
    std::fs::create_dir(&work).unwrap();
    agree(&work, &input, &[], 16);

    // The tests' own generator: BOM, quoted header, CR and CRLF line ends, no final newline.
    let work = dir.path().join("b");
    std::fs::create_dir(&work).unwrap();
    agree(
        &work,
        &generate(5000, 11, true),
        &["--exclude", "targetted"],
        5,
    );
}

#[test]
fn fulton_pums() {
    let input = fulton_pums_bytes();
    let dir = tempfile::tempdir().unwrap();
    let features = "sex,black,asian,married,uscitizen,disability,militaryservice,englishability";
    agree(
        dir.path(),
        &input,
        &["--label", "employed", "--features", features],
        16,
    );
}
