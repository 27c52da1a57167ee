//! Copies one file or object to another through the storage seams, e.g.
//! `cargo run -p shards --features s3 --example s3cp -- data.csv s3://bucket/in/data.csv`,
//! and prints the bytes and the rate (the benchmark uses it to time raw transfers).

use std::io::{Read, Write};
use std::time::Instant;

use shards::store::{create_file, open_input};
use shards::{Location, S3Options};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, dst] = args.as_slice() else {
        return Err("usage: s3cp SOURCE DESTINATION (paths or s3://bucket/key)".into());
    };
    let started = Instant::now();
    let input = open_input(&Location::parse(src)?, &S3Options::default())?;
    let len = input.len()?;
    let mut reader = input.open_at(0, len)?;
    let mut out = create_file(&Location::parse(dst)?, true, &S3Options::default())?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
    }
    let info = out.finish()?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "s3cp: {} bytes in {secs:.3} s ({:.1} MiB/s) {src} -> {dst}",
        info.bytes,
        info.bytes as f64 / secs / (1 << 20) as f64
    );
    Ok(())
}
