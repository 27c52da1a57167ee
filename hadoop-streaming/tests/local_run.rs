//! The local run of the streaming step (`mapper | sort | reducer`, with the input split into map
//! tasks and the sorted entries spread over reducers) against a sequential `shards` reference.

use std::collections::BTreeMap;
use std::path::Path;

use fastdp_tests::*;
use shards::SchemaOptions;

const SHARDS: u32 = 7;

fn shards_arg() -> String {
    SHARDS.to_string()
}

/// `cat input | mapper | sort | reducer`, with the system's `sort` as the user has it and in the
/// C locale, gives the reference records in every shard, in one output that reads as shards.
#[test]
fn pipe_through_sort_matches_reference() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(3000, 1, true);
    std::fs::write(dir.path().join("in.csv"), &input).unwrap();
    let want = reference(&input, &SchemaOptions::default(), SHARDS);
    assert!(
        want.dropped.values().all(|&n| n > 0),
        "every reason is exercised: {want:?}"
    );
    for (name, sort) in [("plain", "sort"), ("c", "LC_ALL=C sort")] {
        let out = dir.path().join(name);
        std::fs::create_dir(&out).unwrap();
        let script = format!(
            "\"$MAPPER\" --shards {SHARDS} < in.csv 2> map.err | {sort} | \"$REDUCER\" > {name}/part-00000 2> red.err"
        );
        sh(dir.path(), &script, &[]);
        let (got, header) = read_shards(&out, SHARDS);
        assert_eq!(got, want.shards, "sort: {name}");
        assert_eq!(header, want.header);
        let map = counters(&std::fs::read(dir.path().join("map.err")).unwrap());
        assert_eq!(dropped(&map), want.dropped);
        assert_eq!(map["mapper,kept"], want.kept);
        assert_eq!(map["mapper,input_rows"], want.input_rows);
        assert_eq!(map["mapper,header_lines"], want.header_lines);
        let red = counters(&std::fs::read(dir.path().join("red.err")).unwrap());
        assert_eq!(red["reducer,records"], want.kept);
        assert_eq!(red["reducer,shards"], u64::from(SHARDS));
    }
}

/// Hadoop's view of the input: `offset<TAB>line` for each line, lines re-ended with `\n`.
fn keyed(input: &[u8]) -> Vec<Vec<u8>> {
    let mut lines = shards::LineReader::new(input, 0);
    let mut out = Vec::new();
    while let Some((offset, line)) = lines.next_line().unwrap() {
        let mut l = format!("{offset}\t").into_bytes();
        l.extend_from_slice(line);
        l.push(b'\n');
        out.push(l);
    }
    out
}

/// Offset-keyed input gives exactly the mapper output of plain input.
#[test]
fn offset_keyed_input_equals_plain_input() {
    let input = generate(2000, 2, true);
    let plain = run(mapper(), &["--shards", "5"], &[], &input);
    assert!(plain.status.success());
    let keyed_input = keyed(&input).concat();
    let by_flag = run(
        mapper(),
        &["--shards", "5", "--input-keys", "offset"],
        &[],
        &keyed_input,
    );
    let by_env = run(
        mapper(),
        &["--shards", "5"],
        &[("stream_map_input_ignoreKey", "false")],
        &keyed_input,
    );
    for keyed in [by_flag, by_env] {
        assert!(
            keyed.status.success(),
            "{}",
            String::from_utf8_lossy(&keyed.stderr)
        );
        assert!(
            plain.stdout == keyed.stdout,
            "keyed and plain mapper outputs differ"
        );
        assert_eq!(counters(&plain.stderr), counters(&keyed.stderr));
    }
}

/// Sorts entry lines as `sort` would in the C locale.
fn sorted(mut lines: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    lines.sort();
    lines
}

fn lines_of(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

/// One map task's input and environment.
type Task = (Vec<u8>, Vec<(&'static str, String)>);

/// Runs the map tasks, then spreads the sorted entries over `reducers` reduce tasks as
/// Hadoop's partitioner would (a shard to one reducer) and writes their outputs to `out`.
fn map_and_reduce(
    tasks: &[Task],
    args: &[&str],
    reducers: usize,
    out: &Path,
) -> BTreeMap<String, u64> {
    let mut entries = Vec::new();
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    for (input, env) in tasks {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let o = run(mapper(), args, &env, input);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        entries.extend(lines_of(&o.stdout));
        for (k, v) in counters(&o.stderr) {
            *sums.entry(k).or_default() += v;
        }
    }
    let mut parts = vec![Vec::new(); reducers];
    for line in sorted(entries) {
        let shard: usize = std::str::from_utf8(&line[..5]).unwrap().parse().unwrap();
        parts[shard % reducers].extend_from_slice(&line);
    }
    std::fs::create_dir_all(out).unwrap();
    for (i, part) in parts.iter().enumerate() {
        let o = run(reducer(), &[], &[], part);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::write(out.join(shards::format::part_name(i as u32)), &o.stdout).unwrap();
    }
    sums
}

/// Splits `input` after a `\n` near each of `parts` equal byte ranges, as mrjob's local runner
/// does; returns each split with its start offset in the environment, as mrjob sets it.
fn split_like_mrjob(input: &[u8], parts: usize) -> Vec<Task> {
    let size = input.len() / parts;
    let mut out = Vec::new();
    let mut start = 0;
    while start < input.len() {
        let mut end = (start + size.max(1)).min(input.len());
        while end < input.len() && input[end - 1] != b'\n' {
            end += 1;
        }
        out.push((
            input[start..end].to_vec(),
            vec![
                ("mapreduce_map_input_start", start.to_string()),
                ("map_input_start", start.to_string()),
            ],
        ));
        start = end;
    }
    out
}

/// Map tasks on line-aligned splits (mrjob) and on offset-keyed splits (Hadoop), several shards
/// per reducer: every reducer output reads as shards and together they hold the reference.
#[test]
fn split_map_tasks_and_several_reducers_match_reference() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(3000, 3, true);
    let want = reference(&input, &SchemaOptions::default(), SHARDS);
    let args = ["--shards", &shards_arg()].map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let mrjob_like = split_like_mrjob(&input, 4);
    assert!(mrjob_like.len() >= 4);
    let out = dir.path().join("mrjob");
    let sums = map_and_reduce(&mrjob_like, &args, 3, &out);
    assert_eq!(read_shards(&out, SHARDS).0, want.shards);
    assert_eq!(dropped(&sums), want.dropped);
    assert_eq!(sums["mapper,header_lines"], want.header_lines);

    let keyed = keyed(&input);
    let hadoop_like: Vec<_> = keyed
        .chunks(keyed.len() / 3 + 1)
        .map(|c| {
            (
                c.concat(),
                vec![("stream_map_input_ignoreKey", "false".to_string())],
            )
        })
        .collect();
    let out = dir.path().join("hadoop");
    let sums = map_and_reduce(&hadoop_like, &args, 4, &out);
    assert_eq!(read_shards(&out, SHARDS).0, want.shards);
    assert_eq!(dropped(&sums), want.dropped);
}

/// Values that reach the reducer out of offset order (mrjob sorts on the shard field alone,
/// Hadoop with one key field does not sort values) are still written in offset order.
#[test]
fn reducer_orders_unsorted_values() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(1500, 4, false);
    let want = reference(&input, &SchemaOptions::default(), SHARDS);
    std::fs::write(dir.path().join("in.csv"), &input).unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    // Reverse the order, then sort stably on the shard field only.
    sh(
        dir.path(),
        &format!(
            "\"$MAPPER\" --shards {SHARDS} < in.csv | tac | sort -t \"$(printf '\\t')\" -k1,1 -s | \"$REDUCER\" > out/part-00000"
        ),
        &[],
    );
    assert_eq!(read_shards(&dir.path().join("out"), SHARDS).0, want.shards);
}

/// The real FultonPUMS extract (other columns) with the feature list: whole-file and
/// split runs agree with the reference; splits need `--columns`, and say so without it.
#[test]
fn fulton_pums() {
    let input = fulton_pums_bytes();
    let features = "sex,black,asian,married,uscitizen,disability,militaryservice,englishability";
    let options = SchemaOptions {
        features: Some(features.split(',').map(String::from).collect()),
        ..SchemaOptions::default()
    };
    let want = reference(&input, &options, 16);
    assert!(want.kept > 20_000, "{}", want.kept);
    let dir = tempfile::tempdir().unwrap();
    let base = ["--label", "employed", "--features", features];

    let out = dir.path().join("whole");
    let sums = map_and_reduce(&[(input.clone(), vec![])], &base, 1, &out);
    let (got, header) = read_shards(&out, 16);
    assert_eq!(got, want.shards);
    assert_eq!(header, want.header);
    assert_eq!(dropped(&sums), want.dropped);

    let splits = split_like_mrjob(&input, 3);
    let first = &splits[0];
    let env: Vec<(&str, &str)> = first.1.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = run(mapper(), &base, &env, &first.0);
    assert!(!refused.status.success());
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(
        msg.contains("--columns \"state\"") || msg.contains("--columns state,puma"),
        "{msg}"
    );

    let header_line = input.split(|&b| b == b'\n').next().unwrap();
    let columns = shards::fields::split_names(header_line).unwrap().join(",");
    let mut args = base.to_vec();
    args.extend(["--columns", &columns]);
    let out = dir.path().join("split");
    let sums = map_and_reduce(&splits, &args, 3, &out);
    assert_eq!(read_shards(&out, 16).0, want.shards);
    assert_eq!(dropped(&sums), want.dropped);
}
