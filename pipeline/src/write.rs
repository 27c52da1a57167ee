//! Writing the shards a worker owns: its records gathered by shard, sorted by offset.

use std::io::Write;

use shards::format::{header_line, part_name};
use shards::manifest::ShardInfo;
use shards::{Error, Output, shard_of};

use crate::ingest::Batch;

/// Whether worker `index` of `peers` owns `shard`.
pub fn owner(shard: u32, peers: usize) -> usize {
    shard as usize % peers
}

/// Writes every shard owned by worker `index` (including empty ones) from the batches it
/// received, and returns their infos in shard order.
pub fn write_owned(
    output: &dyn Output,
    header: &str,
    num_shards: u32,
    index: usize,
    peers: usize,
    batches: &[Batch],
) -> shards::Result<Vec<ShardInfo>> {
    let owned: Vec<u32> = (0..num_shards)
        .filter(|&s| owner(s, peers) == index)
        .collect();
    // Slot of each owned shard in `groups`: shard s is the (s / peers)-th shard this worker owns.
    // (offset, batch, start, end) of each record, grouped by owned shard.
    let mut groups: Vec<Vec<(u64, u32, u32, u32)>> = vec![Vec::new(); owned.len()];
    for (b, batch) in batches.iter().enumerate() {
        for (offset, start, end) in batch.records() {
            let shard = shard_of(offset, num_shards);
            debug_assert_eq!(
                owner(shard, peers),
                index,
                "records are routed to their owner"
            );
            groups[shard as usize / peers].push((offset, b as u32, start as u32, end as u32));
        }
    }
    let mut infos = Vec::with_capacity(owned.len());
    for (shard, mut records) in owned.into_iter().zip(groups) {
        records.sort_unstable_by_key(|r| r.0);
        // Assemble the shard in memory and write it in one call: per-record writes spend more
        // time in buffer copies and checksum set-up than in the data.
        let mut body = Vec::with_capacity(header.len() + records.len() * 32);
        body.extend_from_slice(header.as_bytes());
        for &(_, b, start, end) in &records {
            body.extend_from_slice(&batches[b as usize].text[start as usize..end as usize]);
        }
        let name = part_name(shard);
        let mut part = output.create_part(&name)?;
        part.write_all(&body)
            .map_err(|e| Error::io(output.location().join(&name), e))?;
        let mut info = part.finish()?;
        info.rows = records.len() as u64;
        infos.push(info);
    }
    Ok(infos)
}

/// The shard header line for a schema.
pub fn shard_header(schema: &shards::Schema) -> String {
    header_line(schema.label_name(), &schema.feature_names())
}
