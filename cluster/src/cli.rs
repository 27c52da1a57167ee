//! The cluster flags every job takes (`--workers`, `--threads`, `--hostfile`, `--process`, the
//! timeouts), defined once for clap (the `cli` feature) and flattened into each binary.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Result;
use crate::execute::Cluster;
use crate::key::KEY_ENV;
use crate::layout::Layout;
use crate::local::Handoff;

/// The cluster flags. `PEER_TIMEOUT` is the job's default for `--peer-timeout`, in seconds
/// (how long a peer may be silent depends on what the job waits for).
///
/// Names: a *process* is one running program (`--workers` of them, one per host of
/// `--hostfile`); each runs `--threads` timely *workers* (threads).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ClusterArgs<const PEER_TIMEOUT: u64> {
    /// Processes. With more than one and no --hostfile, the others are started on this machine.
    #[arg(long = "workers", value_name = "WORKERS")]
    pub processes: Option<usize>,
    /// Timely worker threads per process.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Join a cluster of machines: one host:port per line, in process order (with --process).
    #[arg(long)]
    pub hostfile: Option<PathBuf>,
    /// This process's index in the cluster (process 0 is the one that writes the results).
    #[arg(long)]
    pub process: Option<usize>,
    /// Seconds to wait for the other processes to connect (and, for the trainer, to load their
    /// shards).
    #[arg(long, default_value_t = 60)]
    pub connect_timeout: u64,
    /// Seconds a worker waiting for the other processes may go without anything from them
    /// before the run fails (a process stopped or hung). A peer whose machine acknowledges
    /// nothing, not even keepalive probes, for half of it (its link or machine is down) fails
    /// the run sooner, named as unreachable.
    #[arg(long, default_value_t = PEER_TIMEOUT, value_parser = clap::value_parser!(u64).range(1..))]
    pub peer_timeout: u64,
    /// A hostfile cluster's key: a file holding 64 hex digits, readable by its owner only
    /// (every process gets a copy). Without it the key comes from $FASTDP_CLUSTER_KEY. A local
    /// run (--workers W without --hostfile) makes a fresh key of its own.
    #[arg(long, value_name = "FILE")]
    pub cluster_key_file: Option<PathBuf>,
    /// Neither authenticate nor encrypt the links between processes (only on a network you
    /// trust, or to measure what encryption costs): anyone who can reach a process's port could
    /// join the run and read what crosses.
    #[arg(long)]
    pub insecure_plaintext: bool,
    /// Listen on the socket passed as stdin (bound by a supervisor or a test harness) instead of
    /// binding this process's hostfile address.
    #[arg(long, requires = "hostfile")]
    pub listen_on_stdin: bool,
    /// Set by process 0 of a local run on the processes it starts: their listener, addresses
    /// and key come on stdin.
    #[arg(long, hide = true)]
    pub cluster_child: bool,
}

impl<const PEER_TIMEOUT: u64> ClusterArgs<PEER_TIMEOUT> {
    /// The layout these flags describe, before it is checked.
    pub fn layout(&self) -> Layout {
        Layout {
            processes: self.processes,
            threads: self.threads,
            hostfile: self.hostfile.clone(),
            process: self.process,
            key_file: self.cluster_key_file.clone(),
            insecure_plaintext: self.insecure_plaintext,
            listen_on_stdin: self.listen_on_stdin,
            cluster_child: self.cluster_child,
        }
    }

    /// The cluster, and the handoff for the local processes to start (see
    /// [`Layout::resolve`]). A hostfile cluster without `--cluster-key-file` takes its key from
    /// the environment variable [`KEY_ENV`], read here (this is the binaries' glue).
    pub fn resolve(&self) -> Result<(Cluster, Option<Handoff>)> {
        let env_key = std::env::var(KEY_ENV).ok();
        self.layout().resolve_with(env_key.as_deref())
    }

    /// `--connect-timeout`.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout)
    }

    /// `--peer-timeout`.
    pub fn peer_timeout(&self) -> Duration {
        Duration::from_secs(self.peer_timeout)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        cluster: ClusterArgs<120>,
    }

    fn parse(argv: &[&str]) -> std::result::Result<ClusterArgs<120>, clap::Error> {
        Cli::try_parse_from(std::iter::once("job").chain(argv.iter().copied())).map(|c| c.cluster)
    }

    #[test]
    fn defaults_and_flags() {
        let a = parse(&[]).unwrap();
        assert_eq!(
            a.layout(),
            Layout {
                threads: 1,
                ..Layout::default()
            }
        );
        assert_eq!((a.connect_timeout, a.peer_timeout), (60, 120));
        let a = parse(&["--workers", "3", "--threads", "2", "--peer-timeout", "5"]).unwrap();
        assert_eq!((a.processes, a.threads, a.peer_timeout), (Some(3), 2, 5));
        assert_eq!(a.peer_timeout(), Duration::from_secs(5));
        let err = parse(&["--peer-timeout", "0"]).unwrap_err().to_string();
        assert!(err.contains("--peer-timeout"), "{err}");
    }
}
