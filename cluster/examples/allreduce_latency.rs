//! Microseconds per all-reduce round: 2 threads in one process, and 2 processes (this program
//! and a copy it starts) over loopback TCP, with the links encrypted (the default) and in
//! plaintext (`--insecure-plaintext`). Per round: wall time, the worker thread's on-CPU time
//! (the rest of the wall time it spent waiting), and the whole process's on-CPU time (its
//! worker and network threads), the most over the workers.
//!
//! With `work` (microseconds), each worker computes that long (a busy loop) before each round,
//! as a training step does: two workers that end up sharing a core show as a round of about
//! twice `work`.
//!
//! `cargo run --release -p cluster --example allreduce_latency -- [values[,values...]] [rounds] [work]`

use std::process::Command;
use std::time::{Duration, Instant};

use cluster::{AllReduce, Cluster, ClusterKey, Handoff, Security, execute};

/// Nanoseconds on a CPU of this thread, or of the whole process (`/proc` schedstat).
fn cpu_ns(whole_process: bool) -> u64 {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    if !whole_process {
        return read("/proc/thread-self/schedstat");
    }
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .flatten()
                .map(|t| read(&format!("{}/schedstat", t.path().display())))
                .sum()
        })
        .unwrap_or(0)
}

/// Per round, in microseconds: wall, this worker thread's CPU, this process's CPU.
type Figures = [f64; 3];

fn measure(cluster: Cluster, len: usize, rounds: u32, work: Duration) -> Figures {
    let guards = execute(&cluster, Duration::from_secs(30), move |worker| {
        let mut ar = AllReduce::new(worker, Duration::from_secs(30));
        let mut v = vec![1.0f32; len];
        for _ in 0..100 {
            ar.sum(worker, &mut v).expect("warm-up round");
        }
        let (thread, process) = (cpu_ns(false), cpu_ns(true));
        let started = Instant::now();
        for _ in 0..rounds {
            let busy = Instant::now();
            while busy.elapsed() < work {
                std::hint::spin_loop();
            }
            v.fill(1.0);
            ar.sum(worker, &mut v).expect("round");
        }
        let per = |x: f64| x / f64::from(rounds);
        [
            per(started.elapsed().as_secs_f64() * 1e6),
            per((cpu_ns(false) - thread) as f64 * 1e-3),
            per((cpu_ns(true) - process) as f64 * 1e-3),
        ]
    })
    .expect("cluster starts");
    max(guards.join().into_iter().map(|r| r.expect("worker")))
}

fn max(figures: impl Iterator<Item = Figures>) -> Figures {
    figures.fold([0.0; 3], |a, b| std::array::from_fn(|i| a[i].max(b[i])))
}

fn print(what: &str, len: usize, [wall, thread, process]: Figures) {
    println!(
        "all-reduce of {len} f32, {what}: {wall:.1} us/round; on-CPU {thread:.1} us worker \
         thread ({:.1} us waiting), {process:.1} us process",
        (wall - thread).max(0.0)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Process 1, started by the parent: `--member values rounds work`, its listener, the
    // addresses and the key on stdin.
    if args.first().map(String::as_str) == Some("--member") {
        let len: usize = args[1].parse().expect("values");
        let rounds: u32 = args[2].parse().expect("rounds");
        let work = Duration::from_micros(args[3].parse().expect("work"));
        let c = cluster::local::receive(1, 1, Duration::from_secs(60)).expect("the handoff");
        let [w, t, p] = measure(c, len, rounds, work);
        println!("{w} {t} {p}");
        return;
    }
    let lens: Vec<usize> = args.first().map_or(vec![551], |a| {
        a.split(',').map(|v| v.parse().expect("values")).collect()
    });
    let rounds: u32 = args.get(1).map_or(3000, |a| a.parse().expect("rounds"));
    let work_us: u64 = args.get(2).map_or(0, |a| a.parse().expect("work"));
    let work = Duration::from_micros(work_us);
    let me = std::env::current_exe().expect("this program's path");
    for len in lens {
        print(
            "2 threads in 1 process",
            len,
            measure(Cluster::Single { threads: 2 }, len, rounds, work),
        );
        for (what, security) in [
            (
                "2 processes over loopback, encrypted",
                Security::Keyed {
                    key: ClusterKey::generate().expect("a key"),
                    run: cluster::key::fresh_run_id().expect("a run id"),
                },
            ),
            ("2 processes over loopback, plaintext", Security::Plaintext),
        ] {
            let (zero, mut handoff) = Handoff::local(2, 1, security).expect("listeners");
            let child = handoff
                .start(
                    1,
                    Command::new(&me)
                        .arg("--member")
                        .args([len.to_string(), rounds.to_string(), work_us.to_string()])
                        .stdout(std::process::Stdio::piped()),
                )
                .expect("process 1 starts");
            let ours = measure(zero, len, rounds, work);
            let out = child.wait_with_output().expect("process 1 ends");
            assert!(out.status.success(), "process 1 failed: {out:?}");
            let text = String::from_utf8_lossy(&out.stdout);
            let v: Vec<f64> = text
                .split_whitespace()
                .map(|x| x.parse().expect("a figure"))
                .collect();
            print(what, len, max([ours, [v[0], v[1], v[2]]].into_iter()));
        }
    }
}
