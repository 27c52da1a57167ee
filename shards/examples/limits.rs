//! What one core of this machine does per second on the pipeline's primitive steps (issue 27's
//! per-stage limits): a memory copy, XXH3-64 of a short content, a rank-map update, SplitMix64,
//! formatting a 20-digit key. `cargo run --release -p shards --example limits [ROWS]`.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

fn per_item(label: &str, n: usize, f: impl FnOnce() -> u64) {
    let t = Instant::now();
    black_box(f());
    let s = t.elapsed().as_secs_f64();
    println!(
        "{label:44} {:8.2} ns/row  {:7.3} s per {n} rows",
        1e9 * s / n as f64,
        s
    );
}

fn main() {
    let rows: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("ROWS"))
        .unwrap_or(12_000_000);
    // A copy of 256 MiB, warm (both buffers touched first).
    let src = vec![7u8; 256 << 20];
    let mut dst = vec![0u8; 256 << 20];
    dst.copy_from_slice(&src);
    let t = Instant::now();
    for _ in 0..4 {
        dst.copy_from_slice(black_box(&src));
        black_box(&mut dst);
    }
    let gbs = 4.0 * src.len() as f64 / t.elapsed().as_secs_f64() / 1e9;
    println!("{:44} {gbs:8.2} GB/s", "memcpy, one core, 256 MiB");

    // Contents as the generated file's: label and nine 0/1 features, 720-ish distinct.
    let contents: Vec<Vec<u8>> = (0..4096u32)
        .map(|i| {
            let mut c = vec![b'0' + (i & 1) as u8];
            for b in 1..10 {
                c.extend_from_slice(&[b',', b'0' + ((i >> b) & 1) as u8]);
            }
            c
        })
        .collect();
    let pick = |i: usize| &contents[(i.wrapping_mul(2_654_435_761) >> 7) % 720];
    per_item("XXH3-64 of a 19-byte content", rows, || {
        (0..rows).fold(0u64, |a, i| a ^ xxhash_rust::xxh3::xxh3_64(pick(i)))
    });
    let hashes: Vec<u64> = contents
        .iter()
        .map(|c| xxhash_rust::xxh3::xxh3_64(c))
        .collect();
    let mut ranks: HashMap<u64, u64, foldhash::fast::FixedState> = HashMap::default();
    per_item("rank map (u64 -> u64, 720 keys) update", rows, || {
        for i in 0..rows {
            *ranks
                .entry(hashes[(i.wrapping_mul(2_654_435_761) >> 7) % 720])
                .or_insert(0) += 1;
        }
        ranks.len() as u64
    });
    per_item("SplitMix64", rows, || {
        (0..rows as u64).fold(0u64, |a, i| a ^ shards::hash::splitmix64(i))
    });
    let mut out = Vec::with_capacity(64);
    per_item("itoa of a random u64 (19-20 digits)", rows, || {
        let mut n = 0;
        for i in 0..rows as u64 {
            out.clear();
            out.extend_from_slice(
                itoa::Buffer::new()
                    .format(shards::hash::splitmix64(i))
                    .as_bytes(),
            );
            n += out.len() as u64;
        }
        n
    });
    per_item("shards::keys::decimal of a random u64", rows, || {
        let mut n = 0;
        let mut buf = [0; 24];
        for i in 0..rows as u64 {
            out.clear();
            out.extend_from_slice(shards::keys::decimal(shards::hash::splitmix64(i), &mut buf));
            n += out.len() as u64;
        }
        n
    });
}
