//! The cluster a job's flags describe (`--workers`, `--threads`, `--hostfile`, `--process`),
//! read the same way by every binary.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::execute::Cluster;
use crate::hostfile::read_hostfile;
use crate::local::free_loopback_addresses;

/// The most worker threads per process: timely connects every worker to every other, so far
/// more threads than cores only costs memory and time (`--threads 1000` does not finish a
/// 1,000-row job in minutes).
pub const MAX_THREADS: usize = 128;
/// The most processes in one run.
pub const MAX_PROCESSES: usize = 256;

/// The cluster flags, before they are checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// `--workers`: the number of processes (each runs `threads` timely workers).
    pub processes: Option<usize>,
    /// `--threads`: worker threads per process.
    pub threads: usize,
    /// `--hostfile`: one `host:port` per process.
    pub hostfile: Option<PathBuf>,
    /// `--process`: this process's index.
    pub process: Option<usize>,
    /// The addresses a local multi-process run hands its other processes.
    pub cluster_addresses: Option<Vec<String>>,
}

impl Layout {
    /// The cluster, and with `--workers W > 1` and no hostfile the addresses of the W local
    /// processes, of which this is process 0 and the others are to be started here.
    pub fn resolve(&self) -> Result<(Cluster, Option<Vec<String>>)> {
        let bad = |m: String| Err(Error::Config(m));
        if !(1..=MAX_THREADS).contains(&self.threads) {
            return bad(format!(
                "--threads {} is out of range: 1 to {MAX_THREADS} worker threads per process",
                self.threads
            ));
        }
        if let Some(w) = self.processes.filter(|w| !(1..=MAX_PROCESSES).contains(w)) {
            return bad(format!(
                "--workers {w} is out of range: 1 to {MAX_PROCESSES} processes"
            ));
        }
        let addresses = match (&self.hostfile, &self.cluster_addresses) {
            (Some(_), Some(_)) => {
                return bad("--hostfile and --cluster-addresses exclude each other".into());
            }
            (Some(file), None) => Some(read_hostfile(file)?),
            (None, addrs) => addrs.clone(),
        };
        let threads = self.threads;
        if let Some(a) = addresses.as_ref().filter(|a| a.len() > MAX_PROCESSES) {
            return bad(format!(
                "the hostfile names {} hosts; a run has at most {MAX_PROCESSES} processes",
                a.len()
            ));
        }
        match addresses {
            Some(addresses) => {
                if let Some(w) = self.processes.filter(|w| *w != addresses.len()) {
                    return bad(format!(
                        "--workers {w} disagrees with the {} hosts of the hostfile",
                        addresses.len()
                    ));
                }
                let Some(process) = self.process else {
                    return bad("--hostfile needs --process (this machine's index)".into());
                };
                if process >= addresses.len() {
                    return bad(format!(
                        "--process {process} is not below the number of hosts ({})",
                        addresses.len()
                    ));
                }
                Ok((
                    Cluster::Member {
                        threads,
                        process,
                        addresses,
                    },
                    None,
                ))
            }
            None if self.processes.unwrap_or(1) > 1 => {
                if self.process.is_some() {
                    return bad("--process needs --hostfile".into());
                }
                let addresses = free_loopback_addresses(self.processes.unwrap_or(1))?;
                Ok((
                    Cluster::Member {
                        threads,
                        process: 0,
                        addresses: addresses.clone(),
                    },
                    Some(addresses),
                ))
            }
            None => {
                if self.process.is_some_and(|p| p > 0) {
                    return bad("--process needs --hostfile".into());
                }
                Ok((Cluster::Single { threads }, None))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_to_clusters() {
        let one = Layout {
            threads: 2,
            ..Layout::default()
        };
        assert_eq!(
            one.resolve().unwrap(),
            (Cluster::Single { threads: 2 }, None)
        );
        let local = Layout {
            processes: Some(3),
            threads: 1,
            ..Layout::default()
        };
        let (c, spawn) = local.resolve().unwrap();
        assert_eq!(
            (c.process(), c.processes(), spawn.map(|s| s.len())),
            (0, 3, Some(3))
        );
        for bad in [
            Layout {
                threads: 0,
                ..Layout::default()
            },
            Layout {
                processes: Some(0),
                threads: 1,
                ..Layout::default()
            },
            Layout {
                threads: 100_000,
                ..Layout::default()
            },
            Layout {
                threads: MAX_THREADS + 1,
                ..Layout::default()
            },
            Layout {
                processes: Some(MAX_PROCESSES + 1),
                threads: 1,
                ..Layout::default()
            },
            Layout {
                process: Some(1),
                threads: 1,
                ..Layout::default()
            },
            Layout {
                processes: Some(2),
                process: Some(0),
                threads: 1,
                ..Layout::default()
            },
            Layout {
                cluster_addresses: Some(vec!["a:1".into(), "b:2".into()]),
                threads: 1,
                ..Layout::default()
            },
            Layout {
                cluster_addresses: Some(vec!["a:1".into()]),
                process: Some(1),
                threads: 1,
                ..Layout::default()
            },
        ] {
            assert!(bad.resolve().is_err(), "{bad:?}");
        }
    }
}
