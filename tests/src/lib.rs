//! Fixtures and helpers for the end-to-end tests: the built binaries, the real-data fixture,
//! generated input with bad rows, a sequential reference built on `shards`, and reading shard
//! outputs back.
//!
//! The binaries are the ones cargo built for this test run (`cargo test --workspace` builds
//! every package's binaries before any test runs; `scripts/test.sh` also builds them once with
//! `cargo build --workspace --bins`). They are found next to the test executable, in the same
//! target profile directory; a test never runs cargo itself.
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use shards::schema::CAPUMS_COLUMNS;
use shards::{Cleaner, Dataset, DropReason, LineReader, Location, Outcome, Schema, SchemaOptions};

/// The target profile directory (`target/debug`) the running test executable was built into.
fn profile_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test executable's path");
        // target/debug/deps/<test>-<hash>: the binaries are in target/debug.
        let deps = exe.parent().expect("the executable is in a directory");
        let dir = if deps.ends_with("deps") {
            deps.parent().expect("deps is in the profile directory")
        } else {
            deps
        };
        dir.to_path_buf()
    })
}

/// The path of the workspace binary `name`, built by cargo for this run.
pub fn bin(name: &str) -> &'static str {
    static BINS: OnceLock<std::sync::Mutex<BTreeMap<String, &'static str>>> = OnceLock::new();
    let mut bins = BINS.get_or_init(Default::default).lock().unwrap();
    if let Some(path) = bins.get(name) {
        return path;
    }
    let path = profile_dir().join(name);
    assert!(
        path.is_file(),
        "{} is not built: run the tests with `cargo test --workspace`, or build the binaries \
         first with `cargo build --workspace --bins` (scripts/test.sh does both)",
        path.display()
    );
    let path: &'static str = Box::leak(path.to_str().expect("a UTF-8 path").into());
    bins.insert(name.to_string(), path);
    path
}

/// The `mapper` binary.
pub fn mapper() -> &'static str {
    bin("mapper")
}

/// The `reducer` binary.
pub fn reducer() -> &'static str {
    bin("reducer")
}

/// The `pipeline` binary.
pub fn pipeline() -> &'static str {
    bin("pipeline")
}

/// The `trainer` binary.
pub fn trainer() -> &'static str {
    bin("trainer")
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is in the workspace")
        .to_path_buf()
}

/// The real-data fixture: public PUMS microdata of Fulton County, GA (25,766 rows; columns
/// state, puma, sex, age, educ, income, ..., employed, englishability, fips).
pub fn fulton_pums() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/FultonPUMS5full.csv")
}

/// The bytes of [`fulton_pums`].
pub fn fulton_pums_bytes() -> Vec<u8> {
    let path = fulton_pums();
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (the fixture is in the repository)", path.display()))
}

/// Deterministic pseudo-random numbers (SplitMix64 as a generator).
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        shards::splitmix64(self.0 ^ 0x5555)
    }
    /// A number below `n` (with a negligible bias).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Bad lines mixed into generated data: one of each kind the cleaning rules name.
pub const BAD_LINES: &[&[u8]] = &[
    b"",                                     // blank line
    b"   ",                                  // whitespace only
    b"1,0,1,0,1,1,0,1,0,1,1",                // 11 fields
    b"1,0,1,0,1,1,0,1,0,1,1,0,0",            // 13 fields
    b"NA,0,1,0,1,1,0,1,0,1,1,0",             // NA
    b"1,0,1,0,1,1,0,1,0,1,,0",               // empty field
    b"x,0,1,0,1,1,0,1,0,1,1,0",              // not numeric
    b"1,0,1,0,1,2,0,1,0,1,1,0",              // label not binary
    b"1,0,1,0,1,yes,0,1,0,1,1,0",            // label not binary
    b"1.00E+00,0,1,0,1,1,0,1,0,1,1,0",       // exponent notation: kept
    b"\"1\",\"0\",1,0,1,1,0,1,0,1,1,0",      // quoted values: kept
    b"1,0\t,1,0,1,1,0,1,0,1,1,0",            // a tab inside a field (trimmed: kept)
    b"12\t1,0,1,0,1,1,0,1,0,1,1,0",          // digits and a tab: data, not an offset key
    b"1,0,1,\xff\xfe,1,1,0,1,0,1,1,0",       // invalid UTF-8
    b"sex,married,black,asian,collegedegree,employed,militaryservice,uscitizen,disability,englishability,blackfemale,targetted", // repeated header
    b"inf,0,1,0,1,1,0,1,0,1,1,0",            // not finite
];

/// A CaPUMS5full-like CSV: BOM and quoted header, `rows` lines of which about 1% have NA and,
/// when `bad`, about 4% are [`BAD_LINES`]; `\n` line ends with some `\r\n` and bare `\r`; no
/// final newline.
pub fn generate(rows: usize, seed: u64, bad: bool) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = b"\xEF\xBB\xBF".to_vec();
    let header: Vec<String> = CAPUMS_COLUMNS.iter().map(|c| format!("\"{c}\"")).collect();
    out.extend_from_slice(header.join(",").as_bytes());
    for _ in 0..rows {
        out.extend_from_slice(match rng.below(20) {
            0 => b"\r\n",
            1 => b"\r",
            _ => b"\n",
        });
        if bad && rng.below(25) == 0 {
            out.extend_from_slice(BAD_LINES[rng.below(BAD_LINES.len() as u64) as usize]);
            continue;
        }
        let na = rng.below(100) == 0;
        let na_col = rng.below(12);
        let fields: Vec<String> = (0..12)
            .map(|i| {
                if na && i == na_col {
                    "NA".to_string()
                } else {
                    rng.below(2).to_string()
                }
            })
            .collect();
        out.extend_from_slice(fields.join(",").as_bytes());
    }
    out
}

/// What the engines must produce: each shard's record lines in offset order, and the counts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// Each shard's record lines, in offset order.
    pub shards: BTreeMap<u32, Vec<String>>,
    /// The shard files' header line.
    pub header: String,
    /// Lines equal to the header (skipped).
    pub header_lines: u64,
    /// Data rows read (kept and dropped).
    pub input_rows: u64,
    /// Rows kept.
    pub kept: u64,
    /// Rows dropped, by reason name.
    pub dropped: BTreeMap<String, u64>,
}

/// The sequential reference: one pass with `shards`' LineReader and Cleaner.
pub fn reference(input: &[u8], options: &SchemaOptions, num_shards: u32) -> Expected {
    reference_capped(input, options, num_shards, None)
}

/// [`reference`] with `--max-rows-per-unit`: records keyed by the design's rule written plainly
/// ([`shards::keys::plain_keys`]), each shard in input order.
pub fn reference_capped(
    input: &[u8],
    options: &SchemaOptions,
    num_shards: u32,
    max_rows: Option<u32>,
) -> Expected {
    let mut lines = LineReader::new(input, 0);
    let (_, first) = lines.next_line().unwrap().expect("input has a header");
    let schema = Schema::from_header(first, options).unwrap();
    let mut e = Expected {
        header: shards::format::header_line(
            schema.unit_name(),
            schema.label_name(),
            &schema.feature_names(),
        ),
        ..Expected::default()
    };
    // Each shard's (unit, content) in input order.
    type Records = Vec<(Option<u64>, Vec<u8>)>;
    let mut records: BTreeMap<u32, Records> = BTreeMap::new();
    for r in DropReason::ALL {
        e.dropped.insert(r.name().to_string(), 0);
    }
    let mut cleaner = Cleaner::new(schema);
    let mut lines = LineReader::new(input, 0);
    while let Some((offset, line)) = lines.next_line().unwrap() {
        match cleaner.clean(line) {
            Outcome::Kept => {
                let mut buf = Vec::new();
                cleaner.write_record(offset, &mut buf);
                buf.pop();
                let comma = buf.iter().position(|&b| b == b',').unwrap();
                let content = buf[comma + 1..].to_vec();
                let place = cleaner
                    .unit()
                    .unwrap_or_else(|| shards::keys::content_hash(&content));
                records
                    .entry(shards::shard_of(place, num_shards))
                    .or_default()
                    .push((cleaner.unit(), content));
                e.kept += 1;
                e.input_rows += 1;
            }
            Outcome::Header => e.header_lines += 1,
            Outcome::Dropped(r) => {
                *e.dropped.get_mut(r.name()).unwrap() += 1;
                e.input_rows += 1;
            }
        }
    }
    for (shard, records) in records {
        let plain: Vec<(Option<u64>, &[u8])> = records.iter().map(|(u, c)| (*u, &c[..])).collect();
        let keys = shards::keys::plain_keys(&plain, max_rows);
        let lines: Vec<String> = keys
            .into_iter()
            .zip(&records)
            .filter_map(|(k, (_, c))| k.map(|k| format!("{k},{}", String::from_utf8_lossy(c))))
            .collect();
        e.kept -= (records.len() - lines.len()) as u64;
        e.shards.insert(shard, lines);
    }
    e
}

/// Runs `bash -c script` in `dir` with extra environment, failing the test if it fails.
pub fn sh(dir: &Path, script: &str, env: &[(&str, &str)]) -> Output {
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("MAPPER", mapper())
        .env("REDUCER", reducer())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `bin args..` in `cwd` with no input and returns its output (success or not).
pub fn exec(bin: &str, cwd: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{bin} starts: {e}"))
}

/// Asserts that a run succeeded, naming `what` and showing its output if not.
pub fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Waits for `child` up to `limit`, a bound far above what it takes; kills it and fails,
/// naming `what`, if it is still running then.
pub fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("{what}: still running {limit:?} later");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a binary with `stdin` bytes and arguments, returning its output (success or not).
pub fn run(bin: &str, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = Command::new(bin)
        .args(args)
        .env_remove("mapreduce_map_input_start")
        .env_remove("map_input_start")
        .env_remove("stream_map_input_ignoreKey")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// Sums `reporter:counter:<group>,<name>,<n>` lines by `group,name`.
pub fn counters(stderr: &[u8]) -> BTreeMap<String, u64> {
    let mut sums = BTreeMap::new();
    for line in String::from_utf8_lossy(stderr).lines() {
        if let Some(c) = line.strip_prefix("reporter:counter:") {
            let (name, n) = c.rsplit_once(',').expect("group,name,n");
            *sums.entry(name.to_string()).or_insert(0) += n.parse::<u64>().unwrap();
        }
    }
    sums
}

/// The dropped-row counts by reason from summed counters.
pub fn dropped(counters: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    DropReason::ALL
        .iter()
        .map(|r| {
            let n = counters.get(&format!("dropped,{}", r.name())).copied();
            (r.name().to_string(), n.expect("every reason is reported"))
        })
        .collect()
}

/// Reads a directory of part files (reducer or pipeline outputs): checks that it loads as a
/// `shards::Dataset` and that every file has one header line at the top, and returns each
/// shard's record lines in file order (a file holds each of its shards' records together, in
/// offset order: compare with [`reference`] to check that), the shard being the one the design
/// places the record in (by its unit's hash, or its content's).
pub fn read_shards(dir: &Path, num_shards: u32) -> (BTreeMap<u32, Vec<String>>, String) {
    let location = Location::parse(dir.to_str().unwrap()).unwrap();
    // The shell pipelines here stand for a whole Hadoop job, whose committer writes _SUCCESS
    // once every reducer has finished; the reader requires it.
    if !dir.join("_SUCCESS").exists() {
        std::fs::write(dir.join("_SUCCESS"), "").unwrap();
    }
    let table = Dataset::open(&location, &shards::S3Options::default())
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .load()
        .unwrap();
    let mut shards: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut header = None::<String>;
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("part-"))
        .collect();
    names.sort();
    let mut total = 0;
    for name in names {
        let text = std::fs::read_to_string(dir.join(&name)).unwrap();
        let mut unit = false;
        for (i, line) in text.lines().enumerate() {
            let line = shards::format::trim_line(line);
            if i == 0 {
                assert!(line.starts_with("key,"), "{name}: no header at the top");
                unit = shards::format::parse_header(line).unwrap().unit.is_some();
                match &header {
                    Some(h) => assert_eq!(h, line, "{name}: header differs"),
                    None => header = Some(line.to_string()),
                }
                continue;
            }
            assert!(!line.starts_with("key,"), "{name}:{}: second header", i + 1);
            let content = line.split_once(',').unwrap().1;
            let place = if unit {
                content.split(',').next().unwrap().parse().unwrap()
            } else {
                shards::keys::content_hash(content.as_bytes())
            };
            let shard = shards::shard_of(place, num_shards);
            shards.entry(shard).or_default().push(line.to_string());
            total += 1;
        }
    }
    assert_eq!(
        total,
        table.len(),
        "Dataset and text agree on the record count"
    );
    (shards, header.map(|h| h + "\n").unwrap_or_default())
}

/// The CaPUMS default options.
pub fn default_options() -> SchemaOptions {
    SchemaOptions::default()
}

/// `pipeline generate` of `rows` synthetic CaPUMS-like rows with `seed` and a share `na_rate`
/// of rows with a missing value, into `csv`.
pub fn pipeline_generate(csv: &Path, rows: u64, seed: u64, na_rate: f64) {
    let o = Command::new(pipeline())
        .arg("generate")
        .args(["--rows", &rows.to_string(), "--seed", &seed.to_string()])
        .args(["--na-rate", &na_rate.to_string(), "--output"])
        .arg(csv)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pipeline generate failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `pipeline run` on `input` into `out` with extra arguments; returns its manifest.
pub fn pipeline_run(input: &Path, out: &Path, args: &[&str]) -> shards::Manifest {
    let o = Command::new(pipeline())
        .arg("run")
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .arg("--quiet")
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pipeline run failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let location = Location::parse(out.to_str().unwrap()).unwrap();
    Dataset::open(&location, &shards::S3Options::default())
        .unwrap()
        .manifest()
        .expect("pipeline writes a manifest")
        .clone()
}

/// A manifest's dropped counts by reason name.
pub fn manifest_dropped(m: &shards::Manifest) -> BTreeMap<String, u64> {
    DropReason::ALL
        .iter()
        .map(|r| {
            (
                r.name().to_string(),
                m.rows.dropped.get(r).copied().unwrap_or(0),
            )
        })
        .collect()
}

/// Mixes [`BAD_LINES`] into `input` after every `every`-th line (the header stays first).
pub fn with_bad_lines(input: &[u8], every: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(input.len() * 11 / 10);
    for (i, line) in input.split_inclusive(|&b| b == b'\n').enumerate() {
        out.extend_from_slice(line);
        if i > 0 && i % every == 0 {
            out.extend_from_slice(BAD_LINES[rng.below(BAD_LINES.len() as u64) as usize]);
            out.extend_from_slice(match rng.below(3) {
                0 => b"\r\n",
                1 => b"\r",
                _ => b"\n",
            });
        }
    }
    out
}

/// The f32 values of a safetensors file, tensor by tensor in name order (the format: an 8-byte
/// little-endian header length, a JSON header of names, dtypes and byte ranges, then the data).
pub fn weights(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).expect("a safetensors header");
    let data = &bytes[8 + n..];
    let mut names: Vec<&String> = header.keys().filter(|k| *k != "__metadata__").collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let t = &header[name];
        assert_eq!(t["dtype"], "F32", "{name}");
        let range = t["data_offsets"].as_array().unwrap();
        let (a, b) = (
            range[0].as_u64().unwrap() as usize,
            range[1].as_u64().unwrap() as usize,
        );
        out.extend(
            data[a..b]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap())),
        );
    }
    assert!(!out.is_empty(), "{}: no weights", path.display());
    out
}

/// ||a - b|| / ||a||.
pub fn relative_difference(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "the models have different shapes");
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let norm: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
    (diff / norm).sqrt()
}

/// The `epsilon` of the last line of a metrics file.
pub fn last_epsilon(path: &Path) -> f64 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let last: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("a metrics line")).unwrap();
    last["epsilon"].as_f64().expect("epsilon in the metrics")
}

/// Asserts that two outputs read by [`dir_files`] hold the same files, byte for byte, and
/// that `one` was committed (has `_SUCCESS`), naming `what` if not.
pub fn assert_same_files(what: &str, one: &[(String, Vec<u8>)], other: &[(String, Vec<u8>)]) {
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(one), names(other), "{what}: different files");
    assert!(
        one.iter().any(|f| f.0 == "_SUCCESS"),
        "{what}: not committed"
    );
    for ((name, a), (_, b)) in one.iter().zip(other) {
        assert!(a == b, "{what}: {name} differs from the one-process output");
    }
}

/// The files of `dir` (not its subdirectories' contents), by name in name order, with their
/// bytes: two outputs compare byte for byte by comparing these.
pub fn dir_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(dir.join(&n)).unwrap_or_else(|e| panic!("{n}: {e}"));
            (n, bytes)
        })
        .collect()
}

/// Asserts that the model and metrics `b` (a cluster's run) match `a` (one process's): weights
/// within 1e-4 relative (float summation order differs) and the same final epsilon.
pub fn assert_same_model(a: (&Path, &Path), b: (&Path, &Path)) {
    let diff = relative_difference(&weights(a.0), &weights(b.0));
    assert!(
        diff <= 1e-4,
        "the cluster's model differs by {diff:e} relative"
    );
    assert_eq!(last_epsilon(a.1), last_epsilon(b.1));
}

/// The flags several binaries share (cluster, schema, S3), for the tests that check each binary
/// reads them alike: one argv per group, and each group parsed on its own.
pub mod flags {
    /// Every cluster flag, set away from its default (the hidden `--cluster-child` is set by
    /// the process that starts the others, and `--hostfile` excludes it; parsing alone does not
    /// check that `--insecure-plaintext` and `--cluster-key-file` exclude each other).
    pub const CLUSTER: &[&str] = &[
        "--workers",
        "3",
        "--threads",
        "2",
        "--hostfile",
        "hosts.txt",
        "--process",
        "1",
        "--connect-timeout",
        "7",
        "--peer-timeout",
        "9",
        "--cluster-key-file",
        "cluster.key",
        "--insecure-plaintext",
        "--listen-on-stdin",
    ];

    /// Every schema flag, set away from its default.
    pub const SCHEMA: &[&str] = &[
        "--label",
        "y",
        "--features",
        "a,b",
        "--exclude",
        "c",
        "--columns",
        "a,b,c,y",
        "--na-values",
        "NA,?,",
    ];

    /// Every S3 flag, set away from its default.
    pub const S3: &[&str] = &[
        "--s3-path-style=false",
        "--s3-connect-timeout",
        "3",
        "--s3-read-timeout",
        "4",
        "--s3-operation-timeout",
        "5",
        "--s3-max-attempts",
        "6",
        "--s3-concurrency",
        "7",
    ];

    /// A binary, a subcommand (or none) and the flag groups its `--help` lists.
    pub type Help = (
        &'static str,
        &'static [&'static str],
        &'static [&'static [&'static str]],
    );

    /// The flags each binary lists in its `--help`.
    pub const IN_HELP: &[Help] = &[
        ("pipeline", &["run"], &[CLUSTER, SCHEMA, S3]),
        ("pipeline", &["generate"], &[S3]),
        ("pipeline", &["report"], &[S3]),
        ("trainer", &[], &[CLUSTER, S3]),
        ("trainer", &["audit"], &[CLUSTER, S3]),
        ("trainer", &["sweep"], &[CLUSTER, S3]),
        ("mapper", &[], &[SCHEMA]),
    ];

    /// The flag names (`--x`) of an argv.
    pub fn names(argv: &[&str]) -> Vec<String> {
        argv.iter()
            .filter(|a| a.starts_with("--"))
            .map(|a| a.split('=').next().unwrap_or(a).to_string())
            .collect()
    }

    /// A binary's reading of [`CLUSTER`]: the same as the group's alone, and what it says.
    pub fn assert_cluster<const PEER_TIMEOUT: u64>(a: &cluster::ClusterArgs<PEER_TIMEOUT>) {
        assert_eq!(*a, parse_alone(CLUSTER));
        let layout = cluster::Layout {
            processes: Some(3),
            threads: 2,
            hostfile: Some("hosts.txt".into()),
            process: Some(1),
            key_file: Some("cluster.key".into()),
            insecure_plaintext: true,
            listen_on_stdin: true,
            cluster_child: false,
        };
        assert_eq!(a.layout(), layout);
        assert_eq!((a.connect_timeout, a.peer_timeout), (7, 9));
    }

    /// A binary's reading of [`SCHEMA`].
    pub fn assert_schema(a: &shards::cli::SchemaArgs) {
        assert_eq!(*a, parse_alone(SCHEMA));
        let want = shards::SchemaOptions {
            label: "y".into(),
            features: Some(vec!["a".into(), "b".into()]),
            exclude: Some(vec!["c".into()]),
            columns: Some(["a", "b", "c", "y"].map(String::from).to_vec()),
            na_values: ["NA", "?", ""].map(String::from).to_vec(),
            unit: None,
        };
        assert_eq!(shards::SchemaOptions::from(a.clone()), want);
    }

    /// A binary's reading of [`S3`] (the `FASTDP_S3_*` variables would set some of them).
    pub fn assert_s3(a: &shards::cli::S3Args) {
        assert_eq!(*a, parse_alone(S3));
        assert_eq!(
            (a.s3_path_style, a.s3_connect_timeout, a.s3_read_timeout),
            (Some(false), 3, 4)
        );
        assert_eq!(
            (a.s3_operation_timeout, a.s3_max_attempts, a.s3_concurrency),
            (5, Some(6), 7)
        );
    }

    /// `argv` (flags only) parsed by the `Args` struct `T` alone, as one binary's group.
    pub fn parse_alone<T: clap::Args + clap::FromArgMatches>(argv: &[&str]) -> T {
        let command = T::augment_args(clap::Command::new("alone").no_binary_name(true));
        let matches = command
            .try_get_matches_from(argv)
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        T::from_arg_matches(&matches).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
    }
}

/// A hostfile cluster of processes on this machine, started one by one as on separate machines:
/// each process's listener is bound here (port 0, so the kernel picks a free port) and handed
/// to it as its stdin (`--listen-on-stdin`), never released to be bound again, and every
/// process reads the same key file (readable by its owner only), so its links are keyed as
/// across machines.
#[derive(Debug)]
pub struct LoopbackCluster {
    /// The hostfile (one loopback address per process).
    pub hostfile: PathBuf,
    /// The key file (`None`: no key; on loopback the links are then in clear).
    pub key_file: Option<PathBuf>,
    addresses: Vec<String>,
    /// Each process's listener until it is started.
    listeners: Vec<Option<std::net::TcpListener>>,
}

impl LoopbackCluster {
    /// `processes` listeners, the hostfile `dir/{name}.hosts` and the key file
    /// `dir/{name}.key` (a fresh key).
    pub fn new(dir: &Path, name: &str, processes: usize) -> LoopbackCluster {
        LoopbackCluster::with_key(dir, name, processes, true)
    }

    /// [`LoopbackCluster::new`] without a key (links in clear, as on loopback without one).
    pub fn plaintext(dir: &Path, name: &str, processes: usize) -> LoopbackCluster {
        LoopbackCluster::with_key(dir, name, processes, false)
    }

    fn with_key(dir: &Path, name: &str, processes: usize, keyed: bool) -> LoopbackCluster {
        let listeners: Vec<std::net::TcpListener> = (0..processes)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback listener"))
            .collect();
        let addresses: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().to_string())
            .collect();
        let hostfile = dir.join(format!("{name}.hosts"));
        std::fs::write(&hostfile, addresses.join("\n") + "\n").unwrap();
        let key_file = keyed.then(|| {
            let path = dir.join(format!("{name}.key"));
            write_key_file(&path, &cluster::ClusterKey::generate().unwrap());
            path
        });
        LoopbackCluster {
            hostfile,
            key_file,
            addresses,
            listeners: listeners.into_iter().map(Some).collect(),
        }
    }

    /// Where process `i` listens.
    pub fn address(&self, i: usize) -> &str {
        &self.addresses[i]
    }

    /// Makes `command` process `i`: `--hostfile --process i --cluster-key-file
    /// --listen-on-stdin`, its listener as stdin.
    pub fn member<'c>(&mut self, i: usize, command: &'c mut Command) -> &'c mut Command {
        let listener = self.take_listener(i);
        self.member_on(i, listener, command)
    }

    /// [`LoopbackCluster::member`], listening on `listener` rather than at its hostfile
    /// address (where a relay may stand instead).
    pub fn member_on<'c>(
        &self,
        i: usize,
        listener: std::net::TcpListener,
        command: &'c mut Command,
    ) -> &'c mut Command {
        command
            .args(["--hostfile", self.hostfile.to_str().unwrap()])
            .args(["--process", &i.to_string()])
            .arg("--listen-on-stdin")
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(listener)));
        if let Some(key) = &self.key_file {
            command.arg("--cluster-key-file").arg(key);
        }
        command
    }

    /// The links' security as the processes see it (for a test that plays one of them).
    pub fn security(&self) -> cluster::Security {
        match &self.key_file {
            Some(path) => cluster::Security::Keyed {
                key: cluster::ClusterKey::read_file(path).unwrap(),
                run: [0; 16],
            },
            None => cluster::Security::Plaintext,
        }
    }

    /// Takes process `i`'s listener (for a test that plays process `i` itself, or puts a
    /// stranger at its address).
    pub fn take_listener(&mut self, i: usize) -> std::net::TcpListener {
        self.listeners[i]
            .take()
            .expect("each process is started once")
    }
}

/// Writes `key` as 64 hex digits to `path`, readable by its owner only.
pub fn write_key_file(path: &Path, key: &cluster::ClusterKey) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    f.write_all(key.to_hex().as_bytes()).unwrap();
}
