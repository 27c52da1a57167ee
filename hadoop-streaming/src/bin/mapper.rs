//! `mapper`: the map side of the Hadoop-streaming job: CSV lines on stdin, shard entries on stdout.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use hadoop_streaming::counters::DEFAULT_INTERVAL;
use hadoop_streaming::{InputKeys, MapperConfig, mapper};
use shards::cli::SchemaArgs;

/// Cleans census CSV lines like `pipeline run` and keys each record by its shard, for
/// `mapper | sort | reducer` or a Hadoop Streaming step. Counters go to stderr as
/// `reporter:counter:` lines, then a summary.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    schema: SchemaArgs,
    /// Number of shards (records go to shard splitmix64(offset) % shards).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    shards: u32,
    /// Where record offsets come from: `offset` for Hadoop's `offset<TAB>line` input
    /// (-D stream.map.input.ignoreKey=false), `none` for plain lines (offsets counted from the
    /// split start), `auto` for `offset` exactly when $stream_map_input_ignoreKey is false.
    #[arg(long, value_enum, default_value_t = Keys::Auto)]
    input_keys: Keys,
    /// Byte offset of this task's first input byte [default: $mapreduce_map_input_start or
    /// $map_input_start, as set by Hadoop and mrjob; else 0]. Setting it marks the input as
    /// one split of a larger file.
    #[arg(long, value_name = "BYTES")]
    split_start: Option<u64>,
    /// Set from $stream_map_input_ignoreKey.
    #[arg(skip)]
    hadoop_keys: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Keys {
    Auto,
    Offset,
    None,
}

impl Args {
    /// Fills what the task runner says through the environment, unless flags said it.
    fn with_env(mut self, var: impl Fn(&str) -> Option<String>) -> Result<Args, String> {
        if self.split_start.is_none() {
            for name in ["mapreduce_map_input_start", "map_input_start"] {
                if let Some(v) = var(name) {
                    let start = v.trim().parse().map_err(|_| format!("${name}={v:?}"))?;
                    self.split_start = Some(start);
                    break;
                }
            }
        }
        self.hadoop_keys = var("stream_map_input_ignoreKey")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
        Ok(self)
    }
}

impl TryFrom<Args> for MapperConfig {
    type Error = String;

    fn try_from(a: Args) -> Result<MapperConfig, String> {
        let keys = match (a.input_keys, a.hadoop_keys) {
            (Keys::Offset, _) | (Keys::Auto, true) => InputKeys::Offset,
            (Keys::None, _) | (Keys::Auto, false) => InputKeys::Counted {
                start: a.split_start.unwrap_or(0),
            },
        };
        Ok(MapperConfig {
            schema: a.schema.into(),
            shards: a.shards,
            split: keys == InputKeys::Offset || a.split_start.is_some(),
            keys,
            counter_interval: DEFAULT_INTERVAL,
        })
    }
}

fn main() -> ExitCode {
    let config = match Args::parse()
        .with_env(|name| std::env::var(name).ok())
        .and_then(MapperConfig::try_from)
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mapper: invalid setting: {e}");
            return ExitCode::from(2);
        }
    };
    let stdout = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut stderr = std::io::stderr().lock();
    match mapper::run(&config, std::io::stdin().lock(), stdout, &mut stderr) {
        Ok(summary) => {
            let _ = writeln!(stderr, "{summary}");
            ExitCode::SUCCESS
        }
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(stderr, "mapper: error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use shards::SchemaOptions;

    use super::*;

    fn config(argv: &[&str], env: &[(&str, &str)]) -> Result<MapperConfig, String> {
        let args = Args::try_parse_from(std::iter::once("mapper").chain(argv.iter().copied()))
            .map_err(|e| e.to_string())?;
        args.with_env(|n| {
            env.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        })
        .and_then(MapperConfig::try_from)
    }

    #[test]
    fn defaults_match_the_pipeline() {
        let c = config(&[], &[]).unwrap();
        assert_eq!(c.schema, SchemaOptions::default());
        assert_eq!(c.shards, 16);
        assert_eq!(c.keys, InputKeys::Counted { start: 0 });
        assert!(!c.split);
    }

    #[test]
    fn column_lists() {
        let c = config(
            &[
                "--label",
                "y",
                "--features",
                "a,b,c",
                "--columns",
                "a,b,c,y",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.schema.label, "y");
        assert_eq!(c.schema.features.unwrap(), ["a", "b", "c"]);
        assert_eq!(c.schema.columns.unwrap(), ["a", "b", "c", "y"]);
        let c = config(&["--exclude", "a", "--na-values", "NA,?,-"], &[]).unwrap();
        assert_eq!(c.schema.exclude.unwrap(), ["a"]);
        assert_eq!(c.schema.na_values, ["NA", "?", "-"]);
        let c = config(&["--na-values", "NA,"], &[]).unwrap();
        assert_eq!(c.schema.na_values, ["NA", ""]);
    }

    #[test]
    fn shards_must_be_positive() {
        assert!(config(&["--shards", "0"], &[]).is_err());
        assert_eq!(config(&["--shards", "3"], &[]).unwrap().shards, 3);
    }

    #[test]
    fn split_start_from_flag_or_env() {
        let c = config(&[], &[("mapreduce_map_input_start", "1234")]).unwrap();
        assert_eq!(
            (c.keys, c.split),
            (InputKeys::Counted { start: 1234 }, true)
        );
        let c = config(&[], &[("map_input_start", "0")]).unwrap();
        assert_eq!((c.keys, c.split), (InputKeys::Counted { start: 0 }, true));
        let c = config(
            &["--split-start", "9"],
            &[("mapreduce_map_input_start", "1")],
        )
        .unwrap();
        assert_eq!(c.keys, InputKeys::Counted { start: 9 });
        assert!(config(&[], &[("mapreduce_map_input_start", "x")]).is_err());
    }

    #[test]
    fn input_keys() {
        let hadoop = [("stream_map_input_ignoreKey", "false")];
        assert_eq!(config(&[], &hadoop).unwrap().keys, InputKeys::Offset);
        assert!(config(&[], &hadoop).unwrap().split);
        let ignored = [("stream_map_input_ignoreKey", "true")];
        assert_eq!(
            config(&[], &ignored).unwrap().keys,
            InputKeys::Counted { start: 0 }
        );
        assert_eq!(
            config(&["--input-keys", "offset"], &[]).unwrap().keys,
            InputKeys::Offset
        );
        assert_eq!(
            config(&["--input-keys", "none"], &hadoop).unwrap().keys,
            InputKeys::Counted { start: 0 }
        );
    }

    /// The schema flags read as the group alone reads them (and as `pipeline` reads them).
    #[test]
    fn shared_flags_read_alike() {
        use fastdp_tests::flags;
        let argv = [&["mapper"][..], flags::SCHEMA].concat();
        flags::assert_schema(&Args::try_parse_from(argv).unwrap().schema);
    }
}
