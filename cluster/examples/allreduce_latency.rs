//! Microseconds per all-reduce round: 2 threads in one process, and 2 processes over loopback
//! TCP (two timely instances in this program, connected as separate processes would be).
//!
//! `cargo run --release -p cluster --example allreduce_latency -- [values] [rounds]`

use std::time::{Duration, Instant};

use cluster::{AllReduce, Cluster, execute};

fn measure(cluster: Cluster, len: usize, rounds: u32) -> f64 {
    let guards = execute(&cluster, Duration::from_secs(30), move |worker| {
        let mut ar = AllReduce::new(worker, Duration::from_secs(30));
        let mut v = vec![1.0f32; len];
        for _ in 0..100 {
            ar.sum(worker, &mut v).expect("warm-up round");
        }
        let started = Instant::now();
        for _ in 0..rounds {
            v.fill(1.0);
            ar.sum(worker, &mut v).expect("round");
        }
        started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
    })
    .expect("cluster starts");
    guards
        .join()
        .into_iter()
        .map(|r| r.expect("worker"))
        .fold(0.0, f64::max)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let len: usize = args.next().map_or(551, |a| a.parse().expect("values"));
    let rounds: u32 = args.next().map_or(3000, |a| a.parse().expect("rounds"));
    let threads = measure(Cluster::Single { threads: 2 }, len, rounds);
    println!("all-reduce of {len} f32, 2 threads in 1 process: {threads:.1} us/round");
    let addresses = cluster::free_loopback_addresses(2).expect("ports");
    let procs: Vec<_> = (0..2)
        .map(|process| {
            let c = Cluster::Member {
                threads: 1,
                process,
                addresses: addresses.clone(),
            };
            std::thread::spawn(move || measure(c, len, rounds))
        })
        .collect();
    let across = procs
        .into_iter()
        .map(|h| h.join().expect("process"))
        .fold(0.0, f64::max);
    println!("all-reduce of {len} f32, 2 processes over loopback: {across:.1} us/round");
}
