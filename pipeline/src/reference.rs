//! A plain sequential implementation of `pipeline run`, the yardstick the dataflow is tested
//! against: one reader, one loop, a map of shards, no timely.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use shards::format::part_name;
use shards::store::{open_input, open_output};
use shards::{Cleaner, LineReader, Manifest, Outcome, shard_of};

use crate::config::RunConfig;
use crate::error::Result;
use crate::run::read_schema;
use crate::stats::{StatKey, build_manifest};
use crate::write::shard_header;

/// Runs the job sequentially and commits the same output `pipeline run` would.
pub fn run_sequential(config: &RunConfig) -> Result<Manifest> {
    let input = open_input(&config.input, &config.s3)?;
    let schema = read_schema(&*input, &config.schema)?;
    let output = open_output(&config.output, &config.s3)?;
    output.prepare(config.overwrite)?;
    let stream = shards::store::open_stream(&*input)?;
    let mut lines = LineReader::new(stream, 0);
    let mut cleaner = Cleaner::new(schema.clone());
    let mut shards: BTreeMap<u32, Vec<(u64, Vec<u8>)>> =
        (0..config.shards).map(|s| (s, Vec::new())).collect();
    let mut counts: HashMap<StatKey, i64> = HashMap::new();
    while let Some((offset, line)) = lines
        .next_line()
        .map_err(|e| shards::Error::io(&config.input, e))?
    {
        let key = match cleaner.clean(line) {
            Outcome::Header => StatKey::Header,
            Outcome::Dropped(reason) => StatKey::Dropped(reason),
            Outcome::Kept => {
                let mut text = Vec::new();
                cleaner.write_record(offset, &mut text);
                let features: Vec<String> = cleaner
                    .features()
                    .iter()
                    .map(|v| format_feature(*v))
                    .collect();
                *counts
                    .entry(StatKey::Vector(features.join(",").into_bytes()))
                    .or_default() += 1;
                shards
                    .get_mut(&shard_of(offset, config.shards))
                    .expect("every shard has an entry")
                    .push((offset, text));
                StatKey::Label(cleaner.label())
            }
        };
        *counts.entry(key).or_default() += 1;
    }
    let header = shard_header(&schema);
    let mut infos = Vec::new();
    for (shard, mut records) in shards {
        records.sort_by_key(|r| r.0);
        let name = part_name(shard);
        let mut part = output.create_part(&name)?;
        let io = |e| shards::Error::io(&name, e);
        part.write_all(header.as_bytes()).map_err(io)?;
        for (_, text) in &records {
            part.write_all(text).map_err(io)?;
        }
        let mut info = part.finish()?;
        info.rows = records.len() as u64;
        infos.push(info);
    }
    let manifest = build_manifest(
        &schema,
        &config.input.to_string(),
        config.shards,
        counts.into_iter().collect(),
        infos,
    );
    output.commit(&manifest)?;
    Ok(manifest)
}

/// A feature value as the shard format writes it (kept independent of the writer on purpose).
fn format_feature(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else {
        format!("{v}")
    }
}
