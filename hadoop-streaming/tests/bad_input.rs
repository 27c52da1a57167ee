//! Bad input through the real binaries: each case of the cleaning rules, the tab that is not an
//! offset key, invalid UTF-8, clear errors, broken pipes, and counters on stderr.

use std::collections::BTreeMap;

use fastdp_tests::*;

const H: &str = "sex,married,black,asian,collegedegree,employed,militaryservice,uscitizen,\
                 disability,englishability,blackfemale,targetted";
const ROW: &str = "1,0,1,0,1,1,0,1,0,1,1,0";
/// `ROW`'s record after its offset: label, then the 9 default features.
const REC: &str = "1,1,0,1,0,1,0,1,0,1";

/// mapper | sort | reducer on `input`: the reducer's output lines and the dropped counts.
fn stream(input: &[u8], args: &[&str]) -> (Vec<String>, BTreeMap<String, u64>) {
    let map = run(mapper(), args, &[], input);
    assert!(
        map.status.success(),
        "mapper: {}",
        String::from_utf8_lossy(&map.stderr)
    );
    let mut entries: Vec<&[u8]> = map.stdout.split_inclusive(|&b| b == b'\n').collect();
    entries.sort();
    let red = run(reducer(), &[], &[], &entries.concat());
    assert!(red.status.success());
    let out = String::from_utf8(red.stdout).unwrap();
    let mut lines: Vec<String> = out.lines().map(String::from).collect();
    if !lines.is_empty() {
        assert!(lines.remove(0).starts_with("key,employed,sex,"));
    }
    lines.sort_by_key(|l| l.split(',').next().unwrap().parse::<u64>().unwrap());
    let dropped = dropped(&counters(&map.stderr))
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    (lines, dropped)
}

fn drops(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// A case: its name, the input, the records expected, the dropped counts expected.
type Case = (&'static str, Vec<u8>, Vec<String>, BTreeMap<String, u64>);

#[test]
fn cleaning_cases() {
    let o = H.len() + 1; // offset of the first row after a `\n`-ended header
    let quoted: Vec<String> = H.split(',').map(|c| format!("\"{c}\"")).collect();
    let quoted = quoted.join(",");
    let cases: Vec<Case> = vec![
        (
            "unquoted header",
            format!("{H}\n{ROW}\n").into(),
            vec![format!("{o},{REC}")],
            drops(&[]),
        ),
        (
            "quoted header with BOM",
            format!("\u{feff}{quoted}\n{ROW}\n").into(),
            vec![format!("{},{REC}", quoted.len() + 4)],
            drops(&[]),
        ),
        (
            "crlf and bare cr line ends, no final newline",
            format!("{H}\r\n{ROW}\r{ROW}\r\n{ROW}").into(),
            vec![
                format!("{},{REC}", o + 1),
                format!("{},{REC}", o + 1 + ROW.len() + 1),
                format!("{},{REC}", o + 1 + 2 * ROW.len() + 3),
            ],
            drops(&[]),
        ),
        (
            "NA and empty fields",
            format!("{H}\nNA,0,1,0,1,1,0,1,0,1,1,0\n1,0,1,0,1,1,0,1,0,1,,0\n").into(),
            vec![],
            drops(&[("missing", 2)]),
        ),
        (
            "ragged rows",
            format!("{H}\n1,0,1\n{ROW},1\n").into(),
            vec![],
            drops(&[("field_count", 2)]),
        ),
        (
            "non-numeric and infinite values",
            format!("{H}\nx,0,1,0,1,1,0,1,0,1,1,0\n1,inf,1,0,1,1,0,1,0,1,1,0\n").into(),
            vec![],
            drops(&[("not_numeric", 2)]),
        ),
        (
            "exponent notation",
            format!("{H}\n1.00E+05,0,1,0,1,1,0,1,0,1,1,0\n").into(),
            vec![format!("{o},1,100000,0,1,0,1,0,1,0,1")],
            drops(&[]),
        ),
        (
            "label not 0/1",
            format!("{H}\n1,0,1,0,1,2,0,1,0,1,1,0\n1,0,1,0,1,yes,0,1,0,1,1,0\n").into(),
            vec![],
            drops(&[("label_not_binary", 2)]),
        ),
        (
            "blank lines",
            format!("{H}\n\n  \n{ROW}\n").into(),
            vec![format!("{},{REC}", o + 4)],
            drops(&[("blank_line", 2)]),
        ),
        (
            "repeated header lines are skipped",
            format!("{H}\n{quoted}\n{ROW}\n{H}\n").into(),
            vec![format!("{},{REC}", o + quoted.len() + 1)],
            drops(&[]),
        ),
        (
            "invalid UTF-8 is counted and skipped",
            [format!("{H}\n").as_bytes(), b"1,0,\xff,0,1,1,0,1,0,1,1,0\n"].concat(),
            vec![],
            drops(&[("invalid_utf8", 1)]),
        ),
        (
            "a tab that is not an offset key is data",
            format!("{H}\n12\t1,0,1,0,1,1,0,1,0,1,1,0\n1,0\t,1,0,1,1,0,1,0,1,1,0\n").into(),
            vec![format!("{},1,1,0,1,0,1,0,1,0,1", o + ROW.len() + 4)],
            drops(&[("not_numeric", 1)]),
        ),
        ("header only", format!("{H}\n").into(), vec![], drops(&[])),
    ];
    for (name, input, records, dropped) in cases {
        let got = stream(&input, &[]);
        assert_eq!(got, (keyed(&records), dropped), "{name}");
    }
}

/// Record lines `offset,content` (in offset order) as the reducer writes them, `key,content`,
/// sorted by key: the key counts the rank of each content among the lines before it.
fn keyed(records: &[String]) -> Vec<String> {
    let mut ranks: BTreeMap<&str, u64> = BTreeMap::new();
    let mut lines: Vec<(u64, String)> = records
        .iter()
        .map(|r| {
            let content = r.split_once(',').unwrap().1;
            let rank = ranks.entry(content).or_insert(0);
            *rank += 1;
            let h = shards::keys::content_hash(content.as_bytes());
            let key = shards::keys::record_key(h, *rank - 1);
            (key, format!("{key},{content}"))
        })
        .collect();
    lines.sort();
    lines.into_iter().map(|(_, l)| l).collect()
}

#[test]
fn clear_errors() {
    let empty = run(mapper(), &[], &[], b"");
    assert_eq!(empty.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&empty.stderr);
    assert!(msg.contains("empty") && msg.contains("no header"), "{msg}");

    let no_label = run(mapper(), &[], &[], b"a,b,c\n1,0,1\n");
    assert_eq!(no_label.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&no_label.stderr);
    assert!(msg.contains("'employed'") && msg.contains("a,b,c"), "{msg}");

    let keyed = run(
        mapper(),
        &["--input-keys", "offset"],
        &[],
        format!("0\t{H}\n{ROW}\n").as_bytes(),
    );
    assert_eq!(keyed.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&keyed.stderr);
    assert!(
        msg.contains("line 2") && msg.contains("ignoreKey=false"),
        "{msg}"
    );

    let bad_flag = run(mapper(), &["--shards", "0"], &[], b"");
    assert_eq!(bad_flag.status.code(), Some(2));

    let not_entries = run(reducer(), &[], &[], format!("{H}\n").as_bytes());
    assert_eq!(not_entries.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&not_entries.stderr);
    assert!(
        msg.contains("line 1") && msg.contains("not a mapper entry"),
        "{msg}"
    );
}

/// `mapper < big.csv | head` and `reducer < entries | head` end quietly with status 0.
#[test]
fn broken_pipe_is_a_normal_end() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.csv"), generate(200_000, 5, false)).unwrap();
    let out = sh(
        dir.path(),
        "set -o pipefail; \"$MAPPER\" < big.csv 2> map.err | head -n 3 > head.out; \
         \"$MAPPER\" < big.csv 2>/dev/null | sort > entries; \
         \"$REDUCER\" < entries 2> red.err | head -n 2 > /dev/null",
        &[],
    );
    assert!(out.status.success());
    let lines = std::fs::read_to_string(dir.path().join("head.out")).unwrap();
    assert_eq!(lines.lines().count(), 3);
    for err in ["map.err", "red.err"] {
        let text = std::fs::read_to_string(dir.path().join(err)).unwrap();
        assert!(text.is_empty(), "{err}: {text}");
    }
}

/// Counters and the summary go to stderr, never to stdout.
#[test]
fn counters_and_summary_on_stderr() {
    let input = format!("{H}\n{ROW}\nNA,0,1,0,1,1,0,1,0,1,1,0\n");
    let map = run(mapper(), &["--shards", "2"], &[], input.as_bytes());
    let err = String::from_utf8(map.stderr).unwrap();
    let c = counters(err.as_bytes());
    assert_eq!(c["mapper,kept"], 1);
    assert_eq!(c["mapper,input_rows"], 2);
    assert_eq!(c["mapper,header_lines"], 1);
    assert_eq!(c["dropped,missing"], 1);
    assert_eq!(c.len(), 3 + shards::DropReason::ALL.len());
    let summary = err.lines().last().unwrap();
    assert!(
        summary.starts_with("mapper: 2 rows, 1 kept, 1 dropped (missing 1)"),
        "{summary}"
    );
    let out = String::from_utf8(map.stdout).unwrap();
    assert!(out.lines().all(|l| l.starts_with("0000")), "{out}");

    let mut entries: Vec<&str> = out.split_inclusive('\n').collect();
    entries.sort();
    let red = run(reducer(), &[], &[], entries.concat().as_bytes());
    let err = String::from_utf8(red.stderr).unwrap();
    assert_eq!(counters(err.as_bytes())["reducer,records"], 1);
    assert!(
        err.lines()
            .last()
            .unwrap()
            .starts_with("reducer: 1 records in 2 shards")
    );
}
