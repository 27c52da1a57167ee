//! `emr/step.json` run as Hadoop would run it, short of Hadoop: the step's `-D` settings
//! exported to the tasks' environment, `TextInputFormat` splits keyed by byte offset, the
//! step's mapper command, `KeyFieldBasedPartitioner -k1,1` (Java's hash), a sort on the two
//! key fields, the reducer command, and `TextOutputFormat`'s trailing tab. The outputs must
//! read as shards holding the reference records.

use std::collections::BTreeMap;

use fastdp_tests::*;
use shards::SchemaOptions;

/// The streaming arguments of the step's `hadoop-streaming` command.
struct Step {
    defines: BTreeMap<String, String>,
    options: BTreeMap<String, String>,
}

fn step() -> Step {
    let text = std::fs::read(root().join("emr/step.json")).unwrap();
    let steps: serde_json::Value = serde_json::from_slice(&text).unwrap();
    let args: Vec<&str> = steps[0]["Args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "hadoop-streaming");
    let mut s = Step {
        defines: BTreeMap::new(),
        options: BTreeMap::new(),
    };
    for pair in args[1..].chunks(2) {
        if pair[0] == "-D" {
            let (k, v) = pair[1].split_once('=').unwrap();
            s.defines.insert(k.to_string(), v.to_string());
        } else {
            s.options.insert(pair[0].to_string(), pair[1].to_string());
        }
    }
    s
}

/// `KeyFieldBasedPartitioner` over the first key field: Java's `31 * h + byte` hash.
fn partition(shard_field: &[u8], reducers: i32) -> usize {
    let mut h: i32 = 0;
    for &b in shard_field {
        h = h.wrapping_mul(31).wrapping_add(i32::from(b as i8));
    }
    ((h & i32::MAX) % reducers) as usize
}

#[test]
fn step_definition_runs_like_hadoop() {
    let s = step();
    assert_eq!(s.defines["stream.map.input.ignoreKey"], "false");
    assert_eq!(s.defines["stream.num.map.output.key.fields"], "2");
    assert_eq!(
        s.defines["mapreduce.partition.keypartitioner.options"],
        "-k1,1"
    );
    assert_eq!(
        s.options["-partitioner"],
        "org.apache.hadoop.mapred.lib.KeyFieldBasedPartitioner"
    );
    assert!(s.options["-archives"].ends_with("streaming-bin.tgz#bin"));
    let reducers: i32 = s.options["-numReduceTasks"].parse().unwrap();
    let mapper_cmd: Vec<&str> = s.options["-mapper"].split(' ').collect();
    assert_eq!(mapper_cmd[0], "bin/mapper");
    assert_eq!(s.options["-reducer"], "bin/reducer");
    let shards: u32 = mapper_cmd
        .windows(2)
        .find(|w| w[0] == "--shards")
        .map(|w| w[1].parse().unwrap())
        .unwrap();
    // Hadoop exports the job configuration to the tasks' environment, dots made underscores.
    let env: Vec<(String, String)> = s
        .defines
        .iter()
        .map(|(k, v)| (k.replace('.', "_"), v.clone()))
        .collect();

    let input = generate(6000, 21, true);
    let want = reference(&input, &SchemaOptions::default(), shards);
    let dir = tempfile::tempdir().unwrap();

    // Map tasks over TextInputFormat splits: the lines starting in each byte range, keyed.
    let mut partitions: Vec<Vec<Vec<u8>>> = vec![Vec::new(); reducers as usize];
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    for (start, end) in shards::lines::split_ranges(input.len() as u64, 3) {
        let from = start.saturating_sub(1) as usize;
        let mut lines = shards::LineReader::for_range(&input[from..], start, end).unwrap();
        let mut split = Vec::new();
        while let Some((offset, line)) = lines.next_line().unwrap() {
            split.extend_from_slice(format!("{offset}\t").as_bytes());
            split.extend_from_slice(line);
            split.push(b'\n');
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let o = run(mapper(), &mapper_cmd[1..], &env, &split);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for (k, v) in counters(&o.stderr) {
            *sums.entry(k).or_default() += v;
        }
        for line in o.stdout.split_inclusive(|&b| b == b'\n') {
            let tab = line.iter().position(|&b| b == b'\t').unwrap();
            partitions[partition(&line[..tab], reducers)].push(line.to_vec());
        }
    }
    assert_eq!(dropped(&sums), want.dropped);

    // Shuffle: each reducer's entries sorted on the two key fields (values unordered).
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let key = |l: &[u8]| -> Vec<u8> {
        let first = l.iter().position(|&b| b == b'\t').unwrap();
        let second = first + 1 + l[first + 1..].iter().position(|&b| b == b'\t').unwrap();
        l[..second].to_vec()
    };
    let mut busy = 0;
    for (i, mut entries) in partitions.into_iter().enumerate() {
        entries.sort_by_key(|l| key(l));
        let o = run(reducer(), &[], &[], &entries.concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // TextOutputFormat: a line without a tab is a key with an empty value, then a tab.
        let text: Vec<u8> = o
            .stdout
            .split_inclusive(|&b| b == b'\n')
            .flat_map(|l| [&l[..l.len() - 1], b"\t\n"].concat())
            .collect();
        busy += usize::from(!text.is_empty());
        std::fs::write(out.join(format!("part-{i:05}")), text).unwrap();
    }
    assert!(busy > 1, "the shards were spread over several reducers");
    let (got, header) = read_shards(&out, shards);
    assert_eq!(got, want.shards);
    assert_eq!(header, want.header);
}
