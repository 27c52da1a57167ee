//! Helpers shared by the pipeline's integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pipeline::{Cluster, GenerateConfig, RunConfig};
use shards::Location;

/// A config for a local run with default schema options.
pub fn config(input: &Path, output: &Path, shards: u32, cluster: Cluster) -> RunConfig {
    RunConfig {
        shards,
        cluster,
        connect_timeout: Duration::from_secs(30),
        ..RunConfig::new(
            Location::Local(input.into()),
            Location::Local(output.into()),
        )
    }
}

/// Generated rows followed by every kind of awkward line the cleaning rules cover.
pub fn messy_csv(dir: &Path, rows: u64) -> PathBuf {
    let clean = dir.join("gen.csv");
    pipeline::generate(&GenerateConfig {
        rows,
        seed: 7,
        na_rate: 0.03,
        households: false,
        output: Location::Local(clean.clone()),
        overwrite: false,
        s3: Default::default(),
    })
    .unwrap();
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend(std::fs::read(&clean).unwrap());
    let header = "sex,married,black,asian,collegedegree,employed,militaryservice,uscitizen,disability,englishability,blackfemale,targetted";
    let extra = [
        "1,0,1,0,1,1,0,1,0,1,1,0\r\n",       // CRLF
        "0,1,0,0,1,0,0,1,0,1,0,0\r",         // bare CR
        "1,0,1,0,1,1,0,1,0,1\n",             // ragged (short)
        "\n",                                // blank line
        "1,0,1,0,1,1,0,1,0,1,1,0,1\n",       // ragged (long)
        "1,NA,1,0,1,1,0,1,0,1,1,0\n",        // NA
        "1,,1,0,1,1,0,1,0,1,1,0\n",          // empty
        "1,x,1,0,1,1,0,1,0,1,1,0\n",         // not numeric
        "1.00E+00,0,1,0,1,1,0,1,0,1,1,0\n",  // exponent notation
        "1,0,1,0,1,2,0,1,0,1,1,0\n",         // label not binary
        "\"1\",\"0\",1,0,1,1,0,1,0,1,1,0\n", // quoted values
    ];
    for e in extra {
        bytes.extend_from_slice(e.as_bytes());
    }
    bytes.extend_from_slice(header.as_bytes()); // a repeated, unquoted header
    bytes.extend_from_slice(b"\n");
    bytes.extend_from_slice(b"\xff\xfe,0,1,0,1,1,0,1,0,1,1,0\n"); // invalid UTF-8
    bytes.extend_from_slice(b"0,0,0,0,0,1,0,1,0,1,0,0"); // no final newline
    let path = dir.join("messy.csv");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Every file of a directory, by name, with its bytes.
pub fn read_dir(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Asserts two outputs hold the same files with the same bytes.
pub fn assert_same_output(a: &Path, b: &Path) {
    let (a, b) = (read_dir(a), read_dir(b));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, bytes) in &a {
        assert!(bytes == &b[name], "{name} differs");
    }
}
