//! The cluster flags every job takes (`--workers`, `--threads`, `--hostfile`, `--process`, the
//! timeouts), defined once for clap (the `cli` feature) and flattened into each binary.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Result;
use crate::execute::Cluster;
use crate::layout::Layout;

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
    /// Addresses of a local multi-process run (set by the process that starts the others).
    #[arg(long, hide = true, value_delimiter = ',')]
    pub cluster_addresses: Option<Vec<String>>,
}

impl<const PEER_TIMEOUT: u64> ClusterArgs<PEER_TIMEOUT> {
    /// The layout these flags describe, before it is checked.
    pub fn layout(&self) -> Layout {
        Layout {
            processes: self.processes,
            threads: self.threads,
            hostfile: self.hostfile.clone(),
            process: self.process,
            cluster_addresses: self.cluster_addresses.clone(),
        }
    }

    /// The cluster, and the addresses of the local processes to start (see
    /// [`Layout::resolve`]).
    pub fn resolve(&self) -> Result<(Cluster, Option<Vec<String>>)> {
        self.layout().resolve()
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
