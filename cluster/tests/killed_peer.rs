//! A peer process SIGKILLed between all-reduce rounds: the survivor's next round fails within
//! a bounded time, well before the round's timeout, naming the dead worker and its process.
//!
//! The dead peer is this test binary started again in member mode (`FASTDP_AR_MEMBER`), taking
//! its listener, the addresses and the key from this process as a local run's processes do.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster::{AllReduce, ClusterKey, Error, Handoff, Security, execute};

const MEMBER: &str = "FASTDP_AR_MEMBER";
const ROUNDS: usize = 3;

/// What a worker does after the rounds: process 0's error in its next round, and how long it
/// took to come.
type Then = fn(&mut AllReduce<f32>, &mut timely::worker::Worker) -> Option<(Error, Duration)>;

/// The rounds both processes take part in, on this process's workers.
fn rounds(cluster: &cluster::Cluster, then: Then) -> Option<(Error, Duration)> {
    let guards = execute(cluster, Duration::from_secs(30), move |worker| {
        let mut ar = AllReduce::<f32>::new(worker, Duration::from_secs(60));
        for _ in 0..ROUNDS {
            let mut v = vec![1.0f32; 1000];
            ar.sum(worker, &mut v).expect("a round with both processes");
            assert_eq!(v, vec![2.0f32; 1000]);
        }
        then(&mut ar, worker)
    })
    .expect("the cluster starts");
    guards.join().remove(0).expect("worker 0 returns")
}

#[test]
fn a_killed_peer_is_named_long_before_the_timeout() {
    if std::env::var_os(MEMBER).is_some() {
        // Process 1: the rounds, then word to the parent, then wait to be killed.
        let cluster = cluster::local::receive(1, 1, Duration::from_secs(60)).unwrap();
        rounds(&cluster, |_, _| {
            println!("member: rounds done");
            std::thread::sleep(Duration::from_secs(120));
            None
        });
        return;
    }
    let security = Security::Keyed {
        key: ClusterKey::generate().unwrap(),
        run: cluster::key::fresh_run_id().unwrap(),
    };
    let (cluster, mut handoff) = Handoff::local(2, 1, security).unwrap();
    let mut child = handoff
        .start(
            1,
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "a_killed_peer_is_named_long_before_the_timeout",
                    "--nocapture",
                ])
                .env(MEMBER, "1")
                .stdout(Stdio::piped()),
        )
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let killer = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if line.unwrap().contains("member: rounds done") {
                // Let process 0 start waiting in its next round first.
                std::thread::sleep(Duration::from_millis(300));
                child.kill().unwrap();
                return child.wait().unwrap();
            }
        }
        panic!("the member ended before its rounds: {:?}", child.wait());
    });
    let (err, waited) = rounds(&cluster, |ar, worker| {
        let started = Instant::now();
        let err = ar.sum(worker, &mut [1.0; 1000]).unwrap_err();
        Some((err, started.elapsed()))
    })
    .unwrap();
    let status = killer.join().unwrap();
    eprintln!("process 0 after {waited:?}: {err}");
    assert!(!status.success(), "the member was killed: {status}");
    assert!(
        matches!(&err, Error::PeerGone { workers, process: 1, round, .. } if workers == &[1] && *round == ROUNDS as u64),
        "{err}"
    );
    // Killed 0.3 s into the round; the timeout is 60 s.
    assert!(waited < Duration::from_secs(10), "{waited:?}");
}
