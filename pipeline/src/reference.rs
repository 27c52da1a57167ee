//! A plain sequential implementation of `pipeline run`, the yardstick the dataflow is tested
//! against: one reader, one loop, a map of shards, no timely. Its keys come from the design's
//! rule written plainly ([`shards::keys::plain_keys`]), not from the writers'
//! [`shards::keys::ShardKeyer`].

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use shards::format::part_name;
use shards::keys::{content_hash, plain_keys};
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
    // Each shard's records as (offset, unit, content): content is the shard line after the key.
    type Records = Vec<(u64, Option<u64>, Vec<u8>)>;
    let mut shards: BTreeMap<u32, Records> = (0..config.shards).map(|s| (s, Vec::new())).collect();
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
                let comma = text.iter().position(|&b| b == b',').unwrap();
                let content = text[comma + 1..text.len() - 1].to_vec();
                let place = cleaner.unit().unwrap_or_else(|| content_hash(&content));
                let features: Vec<String> = cleaner
                    .features()
                    .iter()
                    .map(|v| format_feature(*v))
                    .collect();
                *counts
                    .entry(StatKey::Vector(features.join(",").into_bytes()))
                    .or_default() += 1;
                shards
                    .get_mut(&shard_of(place, config.shards))
                    .expect("every shard has an entry")
                    .push((offset, cleaner.unit(), content));
                StatKey::Label(cleaner.label())
            }
        };
        *counts.entry(key).or_default() += 1;
    }
    let header = shard_header(&schema);
    let mut infos = Vec::new();
    let mut capped = 0;
    for (shard, mut records) in shards {
        records.sort_by_key(|r| r.0);
        let plain: Vec<(Option<u64>, &[u8])> = records
            .iter()
            .map(|(_, unit, content)| (*unit, &content[..]))
            .collect();
        let keys = plain_keys(&plain, config.max_rows_per_unit);
        let name = part_name(shard);
        let mut part = output.create_part(&name)?;
        let io = |e| shards::Error::io(&name, e);
        part.write_all(header.as_bytes()).map_err(io)?;
        let mut rows = 0;
        for ((_, _, content), key) in records.iter().zip(keys) {
            let Some(key) = key else {
                capped += 1;
                continue;
            };
            part.write_all(format!("{key},").as_bytes()).map_err(io)?;
            part.write_all(content).map_err(io)?;
            part.write_all(b"\n").map_err(io)?;
            rows += 1;
        }
        let mut info = part.finish()?;
        info.rows = rows;
        infos.push(info);
    }
    if capped > 0 {
        counts.insert(StatKey::OverUnitCap, capped);
    }
    let manifest = build_manifest(
        &schema,
        &config.input.to_string(),
        config.shards,
        config.max_rows_per_unit,
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
