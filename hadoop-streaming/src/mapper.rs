//! The map task: cleans input lines with the `shards` rules and sends each record to its shard.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use shards::scan::{Scanned, Scanner};
use shards::schema::CAPUMS_COLUMNS;
use shards::{DropReason, LineReader, Schema, SchemaOptions, shard_of};

use crate::counters::Counters;
use crate::error::{Error, Result};
use crate::frame;

/// Where each input line's byte offset (its record key) comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKeys {
    /// Plain lines: offsets are counted from `start`, the first byte of this task's split
    /// (exact for `cat file | mapper` and for runners that split on line boundaries).
    Counted {
        /// Byte offset of the first input byte in the whole input.
        start: u64,
    },
    /// Lines arrive as `offset<TAB>line`, keyed by Hadoop's `TextInputFormat`
    /// (`-D stream.map.input.ignoreKey=false`).
    Offset,
}

/// Everything a map task needs, checked.
#[derive(Debug, Clone)]
pub struct MapperConfig {
    /// Column selection and missing values, as `pipeline run` takes them.
    pub schema: SchemaOptions,
    /// Number of shards (at least 1).
    pub shards: u32,
    /// Where record offsets come from.
    pub keys: InputKeys,
    /// This task reads one split of a larger input (under Hadoop or mrjob), so other tasks
    /// may not see the header line and must assume `--columns` or the CaPUMS columns.
    pub split: bool,
    /// How often counters are reported while running.
    pub counter_interval: Duration,
}

/// Counter indices; the drop reasons follow, in [`DropReason::ALL`] order.
const HEADER_LINES: usize = 0;
const INPUT_ROWS: usize = 1;
const KEPT: usize = 2;
const DROPPED: usize = 3;

fn counter_names() -> &'static [(&'static str, &'static str)] {
    static NAMES: std::sync::OnceLock<Vec<(&'static str, &'static str)>> =
        std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        let mut names = vec![
            ("mapper", "header_lines"),
            ("mapper", "input_rows"),
            ("mapper", "kept"),
        ];
        names.extend(DropReason::ALL.iter().map(|r| ("dropped", r.name())));
        names
    })
}

/// What a map task did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapSummary {
    /// Header lines skipped.
    pub header_lines: u64,
    /// Lines that are not headers.
    pub input_rows: u64,
    /// Records sent to the reducers.
    pub kept: u64,
    /// Dropped rows, by [`DropReason::index`].
    pub dropped: [u64; DropReason::ALL.len()],
    /// Number of shards.
    pub shards: u32,
    /// Wall time.
    pub elapsed: Duration,
}

impl MapSummary {
    /// Rows dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }

    /// All dropped rows.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }
}

impl std::fmt::Display for MapSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mapper: {} rows, {} kept, {} dropped",
            self.input_rows,
            self.kept,
            self.dropped_total()
        )?;
        let reasons: Vec<String> = DropReason::ALL
            .iter()
            .filter(|r| self.dropped(**r) > 0)
            .map(|r| format!("{r} {}", self.dropped(*r)))
            .collect();
        if !reasons.is_empty() {
            write!(f, " ({})", reasons.join(", "))?;
        }
        write!(
            f,
            "; {} header line{} skipped; {} shards; {:.2} s",
            self.header_lines,
            if self.header_lines == 1 { "" } else { "s" },
            self.shards,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Output is handed to the writer in chunks of about this many bytes.
const CHUNK: usize = 64 * 1024;
/// Counters are considered for a periodic report every this many lines.
const TICK_LINES: u64 = 1 << 16;

/// Runs a map task: reads `input`, writes entries (see [`crate::frame`]) to `output` and
/// counters to `report`.
pub fn run(
    config: &MapperConfig,
    input: impl Read,
    mut output: impl Write,
    report: &mut impl Write,
) -> Result<MapSummary> {
    let started = Instant::now();
    let start = match config.keys {
        InputKeys::Counted { start } => start,
        InputKeys::Offset => 0,
    };
    let mut lines = LineReader::new(input, start);
    let mut counters = Counters::new(counter_names(), config.counter_interval);
    let width = frame::shard_width(config.shards);
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + 4096);
    let stdin = |e| Error::io("stdin", e);
    let stdout = |e| Error::io("stdout", e);

    // The first line decides the schema (a header, or a split's first record); the scanner
    // the pipeline reads with then takes every line.
    let mut line_no = 0u64;
    let mut scanner: Option<Scanner> = None;
    let mut write = |offset: u64,
                     outcome: Scanned<'_>,
                     buf: &mut Vec<u8>,
                     counters: &mut Counters|
     -> Result<()> {
        line_no += 1;
        match outcome {
            Scanned::Kept(r) => {
                let shard = shard_of(r.place, config.shards);
                frame::write_record_entry(buf, shard, width, offset, r.content_line);
                counters.add(KEPT, 1);
                counters.add(INPUT_ROWS, 1);
            }
            Scanned::Header => counters.add(HEADER_LINES, 1),
            Scanned::Dropped(reason) => {
                counters.add(DROPPED + reason.index(), 1);
                counters.add(INPUT_ROWS, 1);
            }
        }
        if buf.len() >= CHUNK {
            output.write_all(buf).map_err(stdout)?;
            buf.clear();
        }
        if line_no.is_multiple_of(TICK_LINES) {
            counters.tick(report).map_err(|e| Error::io("stderr", e))?;
        }
        Ok(())
    };
    match config.keys {
        InputKeys::Counted { .. } => {
            if let Some((offset, line)) = lines.next_line().map_err(stdin)? {
                let schema = resolve_schema(config, Some((offset, line)))?;
                start_output(&schema, config.shards, width, &mut buf);
                let s = scanner.insert(Scanner::new(schema));
                write(offset, s.line(line), &mut buf, &mut counters)?;
                let mut failed = Ok(());
                s.scan(&mut lines, |offset, outcome| {
                    if failed.is_ok() {
                        failed = write(offset, outcome, &mut buf, &mut counters);
                    }
                })
                .map_err(stdin)?;
                failed?;
            }
        }
        InputKeys::Offset => {
            let mut n = 0u64;
            while let Some((_, raw)) = lines.next_line().map_err(stdin)? {
                n += 1;
                let (offset, line) =
                    frame::split_offset_key(raw).ok_or(Error::MissingOffsetKey { line: n })?;
                let s = match &mut scanner {
                    Some(s) => s,
                    None => {
                        let schema = resolve_schema(config, Some((offset, line)))?;
                        start_output(&schema, config.shards, width, &mut buf);
                        scanner.insert(Scanner::new(schema))
                    }
                };
                write(offset, s.line(line), &mut buf, &mut counters)?;
            }
        }
    }
    if scanner.is_none() {
        // No input lines: an empty file is an error, an empty split is not.
        let schema = resolve_schema(config, None)?;
        start_output(&schema, config.shards, width, &mut buf);
    }
    output.write_all(&buf).map_err(stdout)?;
    output.flush().map_err(stdout)?;
    counters
        .report(report)
        .map_err(|e| Error::io("stderr", e))?;

    let mut summary = MapSummary {
        header_lines: counters.get(HEADER_LINES),
        input_rows: counters.get(INPUT_ROWS),
        kept: counters.get(KEPT),
        shards: config.shards,
        elapsed: started.elapsed(),
        ..MapSummary::default()
    };
    for r in DropReason::ALL {
        summary.dropped[r.index()] = counters.get(DROPPED + r.index());
    }
    Ok(summary)
}

/// The schema of this task's input, from `--columns`, from the header line when this task
/// sees it (the line at offset 0), or else the CaPUMS columns.
fn resolve_schema(config: &MapperConfig, first: Option<(u64, &[u8])>) -> Result<Schema> {
    let options = &config.schema;
    if let Some(columns) = &options.columns {
        return Ok(Schema::from_columns(columns.clone(), options)?);
    }
    let default = || {
        CAPUMS_COLUMNS
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
    };
    match first {
        Some((0, header)) => {
            let schema = Schema::from_header(header, options)?;
            if config.split && schema.columns != default() {
                return Err(Error::HeaderNeedsColumns {
                    found: schema.columns.join(","),
                });
            }
            Ok(schema)
        }
        Some(_) => Ok(Schema::from_columns(default(), options)?),
        None if config.split => Ok(Schema::from_columns(default(), options)?),
        None => Err(shards::Error::EmptyInput {
            path: "stdin".into(),
        }
        .into()),
    }
}

/// Starts the output with one header entry per shard, so every reducer that gets a shard can
/// write the shard header line.
fn start_output(schema: &Schema, shards: u32, width: usize, buf: &mut Vec<u8>) {
    let header = shards::format::header_line(
        schema.unit_name(),
        schema.label_name(),
        &schema.feature_names(),
    );
    for shard in 0..shards {
        frame::write_header_entry(buf, shard, width, &header);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(keys: InputKeys, split: bool) -> MapperConfig {
        MapperConfig {
            schema: SchemaOptions::default(),
            shards: 4,
            keys,
            split,
            counter_interval: Duration::from_secs(3600),
        }
    }

    fn map(config: &MapperConfig, input: &[u8]) -> Result<(String, String, MapSummary)> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let summary = run(config, input, &mut out, &mut err)?;
        Ok((
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
            summary,
        ))
    }

    const HEADER: &str = "sex,married,black,asian,collegedegree,employed,militaryservice,\
                          uscitizen,disability,englishability,blackfemale,targetted\n";

    #[test]
    fn records_and_headers() {
        let input = format!("{HEADER}1,0,1,0,1,1,0,1,0,1,1,0\nNA,0,1,0,1,1,0,1,0,1,1,0\n");
        let (out, err, s) = map(
            &config(InputKeys::Counted { start: 0 }, false),
            input.as_bytes(),
        )
        .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "4 header entries and 1 record: {out}");
        let offset = HEADER.len() as u64;
        // Placed by the hash of its content (each line its own unit).
        let shard = shard_of(shards::keys::content_hash(b"1,1,0,1,0,1,0,1,0,1"), 4);
        assert!(
            lines.contains(
                &format!("{shard:05}\t{offset:020}\t{offset},1,1,0,1,0,1,0,1,0,1").as_str()
            )
        );
        assert!(lines.contains(
            &"00002\tH\tkey,employed,sex,married,black,asian,collegedegree,militaryservice,uscitizen,disability,englishability"
        ));
        assert_eq!((s.header_lines, s.input_rows, s.kept), (1, 2, 1));
        assert_eq!(s.dropped(DropReason::Missing), 1);
        assert!(
            err.contains("reporter:counter:dropped,missing,1\n"),
            "{err}"
        );
        assert!(err.contains("reporter:counter:mapper,kept,1\n"), "{err}");
        assert!(
            err.contains("reporter:counter:dropped,field_count,0\n"),
            "{err}"
        );
        assert!(
            s.to_string().contains("1 kept, 1 dropped (missing 1)"),
            "{s}"
        );
    }

    #[test]
    fn later_split_offsets_and_default_columns() {
        let row = "1,0,1,0,1,1,0,1,0,1,1,0\n";
        let cfg = config(InputKeys::Counted { start: 1000 }, true);
        let (out, _, s) = map(&cfg, format!("{row}{row}").as_bytes()).unwrap();
        assert_eq!(s.kept, 2);
        assert!(out.contains(&format!("\t{:020}\t1000,1,", 1000)));
        assert!(out.contains(&format!(
            "\t{:020}\t{},1,",
            1000 + row.len(),
            1000 + row.len()
        )));
    }

    #[test]
    fn split_with_foreign_header_needs_columns() {
        let input = b"a,employed,b\n1,0,1\n";
        let mut cfg = config(InputKeys::Counted { start: 0 }, true);
        let err = map(&cfg, input).unwrap_err().to_string();
        assert!(err.contains("--columns a,employed,b"), "{err}");
        // Alone on the whole file it is fine.
        cfg.split = false;
        assert_eq!(map(&cfg, input).unwrap().2.kept, 1);
        // And with --columns so it is in a split.
        cfg.split = true;
        cfg.schema.columns = Some(vec!["a".into(), "employed".into(), "b".into()]);
        assert_eq!(map(&cfg, input).unwrap().2.kept, 1);
    }

    #[test]
    fn empty_input() {
        let err = map(&config(InputKeys::Counted { start: 0 }, false), b"").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let (out, _, s) = map(&config(InputKeys::Counted { start: 0 }, true), b"").unwrap();
        assert_eq!(s.input_rows, 0);
        assert_eq!(out.lines().count(), 4, "header entries only");
    }

    #[test]
    fn offset_keys_are_used_and_required() {
        let cfg = config(InputKeys::Offset, true);
        let input = format!("0\t{HEADER}77\t1,0,1,0,1,1,0,1,0,1,1,0\n");
        let (out, _, s) = map(&cfg, input.as_bytes()).unwrap();
        assert_eq!((s.header_lines, s.kept), (1, 1));
        assert!(out.contains(&format!("\t{:020}\t77,1,", 77)));
        let input = format!("0\t{HEADER}1,0,1,0,1,1,0,1,0,1,1,0\n");
        let err = map(&cfg, input.as_bytes()).unwrap_err();
        assert!(matches!(err, Error::MissingOffsetKey { line: 2 }), "{err}");
    }
}
