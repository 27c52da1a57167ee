//! Epsilon or a calibrated noise multiplier from the command line, timed: the benchmark's Rust side.
//!
//! ```text
//! cargo run --release -p accountant --example epsilon -- \
//!     --accountant pld --q 0.000266667 --sigma 0.9 --steps 37500 --delta 1e-5 [--repeat 5]
//! cargo run --release -p accountant --example epsilon -- \
//!     --accountant rdp --q 0.000266667 --target-epsilon 1.0 --steps 37500 --delta 1e-5
//! ```
//! Prints one line: `accountant task value median_seconds first_seconds median_cpu_seconds`:
//! wall-clock seconds, the median over `--repeat` calls and the first call alone (which also
//! plans the FFTs and faults in memory), and the mean CPU time of this thread over the calls
//! (Linux's `/proc/thread-self/schedstat`; the wall time again elsewhere), which other
//! processes competing for the cores disturb less.

use std::time::Instant;

/// Nanoseconds this thread has run on a CPU, where Linux says.
fn cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

use accountant::{AccountantKind, calibrate_noise, epsilon};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut kind = AccountantKind::Pld;
    let (mut q, mut sigma, mut target, mut steps, mut delta, mut repeat) =
        (None, None, None, None, 1e-5, 1usize);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--accountant" => kind = value()?.parse()?,
            "--q" => q = Some(value()?.parse::<f64>()?),
            "--sigma" => sigma = Some(value()?.parse::<f64>()?),
            "--target-epsilon" => target = Some(value()?.parse::<f64>()?),
            "--steps" => steps = Some(value()?.parse::<u64>()?),
            "--delta" => delta = value()?.parse()?,
            "--repeat" => repeat = value()?.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let q = q.ok_or("--q is required")?;
    let steps = steps.ok_or("--steps is required")?;
    let mut times = Vec::new();
    let mut result = (String::new(), 0.0);
    let (loop_start, cpu_start) = (Instant::now(), cpu_ns());
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        result = match (sigma, target) {
            (Some(sigma), None) => (
                "epsilon".into(),
                epsilon(kind, q, sigma, steps, delta)?.epsilon,
            ),
            (None, Some(target)) => (
                "calibrate".into(),
                calibrate_noise(kind, q, target, steps, delta)?,
            ),
            _ => return Err("give exactly one of --sigma and --target-epsilon".into()),
        };
        times.push(start.elapsed().as_secs_f64());
    }
    let cpu = match (cpu_start, cpu_ns()) {
        (Some(a), Some(b)) => (b - a) as f64 * 1e-9,
        _ => loop_start.elapsed().as_secs_f64(),
    } / times.len() as f64;
    let first = times[0];
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{kind} {} {:.10} {median:.6} {first:.6} {cpu:.6}",
        result.0, result.1
    );
    Ok(())
}
