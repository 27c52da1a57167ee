//! The schema flags (`--label`, `--features`, `--exclude`, `--columns`, `--na-values`,
//! `--privacy-unit`), the unit cap (`--max-rows-per-unit`) and the S3 flags (`--s3-*`) as clap
//! `Args` structs (the `cli` feature), defined once and flattened into every binary that takes
//! them.

use clap::Args;

use crate::schema::{DEFAULT_LABEL, DEFAULT_NA_VALUES, SchemaOptions};

/// Which columns are read, and how: the flags behind [`SchemaOptions`].
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct SchemaArgs {
    /// Label column (must hold 0/1).
    #[arg(long, default_value = DEFAULT_LABEL)]
    pub label: String,
    /// Feature columns, comma-separated, in output order [default: all but the label and
    /// --exclude].
    #[arg(long, value_delimiter = ',')]
    pub features: Option<Vec<String>>,
    /// Columns left out of the default features, comma-separated [default: blackfemale,targetted].
    #[arg(long, value_delimiter = ',')]
    pub exclude: Option<Vec<String>>,
    /// Column names for input without a header line, comma-separated (under Hadoop, map tasks
    /// of later splits never see the header line: give them unless the input is CaPUMS5full).
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// Field values that mean "missing", comma-separated (an empty field is missing by default).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_NA_VALUES.map(String::from))]
    pub na_values: Vec<String>,
    /// The privacy unit: rows sharing this column's value (a household id, a person id) are one
    /// unit, kept together in one shard and one side of the train/test split, so the trainer
    /// can protect the whole unit [default: each line is its own unit].
    #[arg(long, value_name = "COLUMN")]
    pub privacy_unit: Option<String>,
}

/// `--max-rows-per-unit`: the public bound on a privacy unit's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Args)]
pub struct UnitCapArgs {
    /// A unit (`--privacy-unit`) with more rows keeps this many: those with the smallest keys
    /// (a keyed hash of each row, so the choice is reproducible and depends on the unit alone);
    /// the rest are counted in the manifest as over_unit_cap [default: no cap].
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_rows_per_unit: Option<u32>,
}

impl From<SchemaArgs> for SchemaOptions {
    fn from(a: SchemaArgs) -> SchemaOptions {
        SchemaOptions {
            label: a.label,
            features: a.features,
            exclude: a.exclude,
            columns: a.columns,
            na_values: a.na_values,
            unit: a.privacy_unit,
        }
    }
}

/// The library's default S3 timeouts in seconds: connect, read, operation.
const S3_TIMEOUTS: [u64; 3] = [
    crate::s3::DEFAULT_CONNECT_TIMEOUT.as_secs(),
    crate::s3::DEFAULT_READ_TIMEOUT.as_secs(),
    crate::s3::DEFAULT_OPERATION_TIMEOUT.as_secs(),
];

/// How S3 locations are reached: a plain data struct, turned into the storage layer's options
/// by [`S3Args::to_options`] (accepted and unused in builds without the `s3` feature).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct S3Args {
    /// S3 path-style addressing (http://host/bucket/key); `--s3-path-style=false` forces
    /// virtual-hosted style [default: on with a custom endpoint such as AWS_ENDPOINT_URL].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub s3_path_style: Option<bool>,
    /// Seconds connecting to the S3 endpoint may take.
    #[arg(long, env = "FASTDP_S3_CONNECT_TIMEOUT", value_name = "SECS",
          default_value_t = S3_TIMEOUTS[0], value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub s3_connect_timeout: u64,
    /// Seconds the S3 endpoint may stay silent (before an answer, or within an object being
    /// read) before the attempt fails.
    #[arg(long, env = "FASTDP_S3_READ_TIMEOUT", value_name = "SECS",
          default_value_t = S3_TIMEOUTS[1], value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub s3_read_timeout: u64,
    /// Seconds one S3 operation may take, retries included.
    #[arg(long, env = "FASTDP_S3_OPERATION_TIMEOUT", value_name = "SECS",
          default_value_t = S3_TIMEOUTS[2], value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub s3_operation_timeout: u64,
    /// Attempts per S3 request, the first included [default: AWS_MAX_ATTEMPTS, or 3].
    #[arg(long, env = "FASTDP_S3_MAX_ATTEMPTS", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=20))]
    pub s3_max_attempts: Option<u32>,
    /// S3 requests a store keeps in flight at most: part uploads (each holds up to 8 MiB in
    /// memory) and the commit's copies.
    #[arg(long, env = "FASTDP_S3_CONCURRENCY", value_name = "N",
          default_value_t = crate::s3::DEFAULT_CONCURRENCY as u16,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub s3_concurrency: u16,
}

impl S3Args {
    /// The storage layer's options these flags set; everything else (endpoint, region, part
    /// sizes, the progress callback) is the library's default, for the caller to change.
    pub fn to_options(&self) -> crate::s3::S3Options {
        use std::time::Duration;
        crate::s3::S3Options {
            force_path_style: self.s3_path_style,
            connect_timeout: Duration::from_secs(self.s3_connect_timeout),
            read_timeout: Duration::from_secs(self.s3_read_timeout),
            operation_timeout: Duration::from_secs(self.s3_operation_timeout),
            max_attempts: self.s3_max_attempts,
            concurrency: self.s3_concurrency.into(),
            ..crate::s3::S3Options::default()
        }
    }
}

impl From<&S3Args> for crate::s3::S3Options {
    fn from(a: &S3Args) -> crate::s3::S3Options {
        a.to_options()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        schema: SchemaArgs,
        #[command(flatten)]
        s3: S3Args,
    }

    fn parse(argv: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("job").chain(argv.iter().copied())).unwrap()
    }

    #[test]
    fn schema_defaults_are_the_library_defaults() {
        assert_eq!(
            SchemaOptions::from(parse(&[]).schema),
            SchemaOptions::default()
        );
        let s = SchemaOptions::from(parse(&["--na-values", "NA,", "--label", "y"]).schema);
        assert_eq!(
            (s.label.as_str(), s.na_values),
            ("y", vec!["NA".into(), String::new()])
        );
    }

    #[test]
    fn s3_defaults_are_the_library_defaults() {
        // Unless the environment sets them (FASTDP_S3_*).
        if std::env::vars().any(|(k, _)| k.starts_with("FASTDP_S3_")) {
            return;
        }
        let o = parse(&[]).s3.to_options();
        let d = crate::s3::S3Options::default();
        assert_eq!(
            (
                o.force_path_style,
                o.connect_timeout,
                o.read_timeout,
                o.operation_timeout,
                o.concurrency
            ),
            (
                d.force_path_style,
                d.connect_timeout,
                d.read_timeout,
                d.operation_timeout,
                d.concurrency
            )
        );
        let o = parse(&[
            "--s3-path-style",
            "--s3-max-attempts",
            "2",
            "--s3-concurrency",
            "3",
        ])
        .s3
        .to_options();
        assert_eq!(
            (o.force_path_style, o.max_attempts, o.concurrency),
            (Some(true), Some(2), 3)
        );
    }
}
