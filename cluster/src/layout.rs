//! The cluster a job's flags describe (`--workers`, `--threads`, `--hostfile`, `--process`, the
//! key flags), read the same way by every binary, and how its links are secured.

use std::net::{IpAddr, TcpListener};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::execute::{Cluster, Network};
use crate::hostfile::read_hostfile;
use crate::key::{ClusterKey, KEY_ENV, MAKE_A_KEY, Security, fresh_run_id};
use crate::local::{Handoff, receive};

/// The most worker threads per process: timely connects every worker to every other, so far
/// more threads than cores only costs memory and time (`--threads 1000` does not finish a
/// 1,000-row job in minutes).
pub const MAX_THREADS: usize = 128;
/// The most processes in one run.
pub const MAX_PROCESSES: usize = 256;

/// How long a process started by a local run waits for process 0's handoff on its stdin.
const HANDOFF_WAIT: Duration = Duration::from_secs(60);

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
    /// `--cluster-key-file`: a hostfile cluster's key.
    pub key_file: Option<PathBuf>,
    /// `--insecure-plaintext`: links neither authenticated nor encrypted.
    pub insecure_plaintext: bool,
    /// `--listen-on-stdin`: this process's listener is the socket on its stdin (bound by a
    /// supervisor or a test), not one bound at its hostfile address.
    pub listen_on_stdin: bool,
    /// This process was started by process 0 of a local run, which hands it its listener,
    /// the addresses and the key on stdin.
    pub cluster_child: bool,
}

/// Whether `address` (`host:port`) is on this machine's loopback.
fn is_loopback(address: &str) -> bool {
    let host = address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Layout {
    /// The cluster, and with `--workers W > 1` and no hostfile the handoff for the W - 1 local
    /// processes to start here (this is process 0). A hostfile cluster's key comes from
    /// `--cluster-key-file`; see [`Layout::resolve_with`] for the environment.
    pub fn resolve(&self) -> Result<(Cluster, Option<Handoff>)> {
        self.resolve_with(None)
    }

    /// [`Layout::resolve`], with `env_key` the value of [`KEY_ENV`] (64 hex digits) for a
    /// hostfile cluster without `--cluster-key-file`.
    pub fn resolve_with(&self, env_key: Option<&str>) -> Result<(Cluster, Option<Handoff>)> {
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
        if self.insecure_plaintext && self.key_file.is_some() {
            return bad("--insecure-plaintext and --cluster-key-file exclude each other".into());
        }
        if self.hostfile.is_none() && self.key_file.is_some() {
            return bad(
                "--cluster-key-file is for --hostfile clusters; a local run (--workers W) makes \
                 a fresh key of its own"
                    .into(),
            );
        }
        if self.hostfile.is_none() && self.listen_on_stdin {
            return bad("--listen-on-stdin needs --hostfile".into());
        }
        let threads = self.threads;
        if self.cluster_child {
            if self.hostfile.is_some() {
                return bad("--hostfile and --cluster-child exclude each other".into());
            }
            let Some(process) = self.process else {
                return bad("--cluster-child needs --process".into());
            };
            let cluster = receive(process, threads, HANDOFF_WAIT)?;
            if let Some(w) = self.processes.filter(|w| *w != cluster.processes()) {
                return bad(format!(
                    "--workers {w} disagrees with the {} processes process 0 started",
                    cluster.processes()
                ));
            }
            return Ok((cluster, None));
        }
        if let Some(file) = &self.hostfile {
            let addresses = read_hostfile(file)?;
            if addresses.len() > MAX_PROCESSES {
                return bad(format!(
                    "the hostfile names {} hosts; a run has at most {MAX_PROCESSES} processes",
                    addresses.len()
                ));
            }
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
            let security = self.hostfile_security(&addresses, env_key)?;
            let listener = if self.listen_on_stdin {
                Some(listener_on_stdin()?)
            } else {
                None
            };
            return Ok((
                Cluster::Member {
                    threads,
                    process,
                    addresses,
                    network: Network::new(security, listener),
                },
                None,
            ));
        }
        if self.process.is_some_and(|p| p > 0) {
            return bad("--process needs --hostfile".into());
        }
        if self.processes.unwrap_or(1) > 1 {
            if self.process.is_some() {
                return bad("--process needs --hostfile".into());
            }
            let security = if self.insecure_plaintext {
                Security::Plaintext
            } else {
                Security::Keyed {
                    key: ClusterKey::generate()?,
                    run: fresh_run_id()?,
                }
            };
            let (cluster, handoff) =
                Handoff::local(self.processes.unwrap_or(1), threads, security)?;
            return Ok((cluster, Some(handoff)));
        }
        Ok((Cluster::Single { threads }, None))
    }

    /// A hostfile cluster's security: its key (`--cluster-key-file`, else `env_key`), or none
    /// with `--insecure-plaintext` or on loopback only; refused across machines without a key.
    fn hostfile_security(&self, addresses: &[String], env_key: Option<&str>) -> Result<Security> {
        let key = match (&self.key_file, env_key) {
            (Some(file), _) => Some(ClusterKey::read_file(file)?),
            (None, Some(text)) => Some(
                ClusterKey::from_hex(text)
                    .map_err(|m| Error::Config(format!("{KEY_ENV}: {m}; {MAKE_A_KEY}")))?,
            ),
            (None, None) => None,
        };
        match key {
            Some(key) if !self.insecure_plaintext => Ok(Security::Keyed { key, run: [0; 16] }),
            _ if self.insecure_plaintext => Ok(Security::Plaintext),
            _ => match addresses.iter().find(|a| !is_loopback(a)) {
                None => Ok(Security::Plaintext),
                Some(remote) => Err(Error::Config(format!(
                    "the hostfile names {remote}, beyond this machine, and no cluster key was \
                     given: anyone who can reach a process's port could join the run, and \
                     records and unnoised gradients would cross the network in clear. Give \
                     every process the same key with --cluster-key-file FILE (readable by its \
                     owner only) or {KEY_ENV} ({MAKE_A_KEY}), or pass --insecure-plaintext on a \
                     network you trust"
                ))),
            },
        }
    }
}

/// The listening socket on stdin.
fn listener_on_stdin() -> Result<TcpListener> {
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::Config(format!("--listen-on-stdin: {e}")))?;
    let listener = TcpListener::from(fd);
    listener.local_addr().map_err(|e| {
        Error::Config(format!(
            "--listen-on-stdin: stdin is not a listening TCP socket ({e})"
        ))
    })?;
    Ok(listener)
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
        let (c, spawn) = one.resolve().unwrap();
        assert_eq!(c, Cluster::Single { threads: 2 });
        assert!(spawn.is_none());
        let local = Layout {
            processes: Some(3),
            threads: 1,
            ..Layout::default()
        };
        let (c, spawn) = local.resolve().unwrap();
        assert_eq!(
            (c.process(), c.processes(), spawn.map(|s| s.processes())),
            (0, 3, Some(3))
        );
        assert!(c.security().is_keyed(), "a local run makes a key");
        let plain = Layout {
            insecure_plaintext: true,
            ..local.clone()
        };
        assert!(!plain.resolve().unwrap().0.security().is_keyed());
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
                cluster_child: true,
                threads: 1,
                ..Layout::default()
            },
            Layout {
                key_file: Some("k".into()),
                processes: Some(2),
                threads: 1,
                ..Layout::default()
            },
            Layout {
                listen_on_stdin: true,
                threads: 1,
                ..Layout::default()
            },
        ] {
            assert!(bad.resolve().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn loopback_addresses() {
        for a in [
            "127.0.0.1:7000",
            "127.1.2.3:1",
            "localhost:80",
            "[::1]:7000",
        ] {
            assert!(is_loopback(a), "{a}");
        }
        for a in ["10.0.0.1:7000", "node1:7000", "[fe80::1]:7000", "0.0.0.0:1"] {
            assert!(!is_loopback(a), "{a}");
        }
    }

    /// Across machines a hostfile cluster needs a key (from the file, else the environment)
    /// or an explicit --insecure-plaintext; on loopback alone it may go without.
    #[test]
    fn a_hostfile_beyond_loopback_needs_a_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "10.0.0.1:7000\n10.0.0.2:7000\n").unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "cd".repeat(32)).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let member = Layout {
            hostfile: Some(hosts.clone()),
            process: Some(1),
            threads: 1,
            ..Layout::default()
        };
        let err = member.resolve().unwrap_err().to_string();
        for said in [
            "10.0.0.1:7000",
            "--cluster-key-file",
            KEY_ENV,
            "--insecure-plaintext",
        ] {
            assert!(err.contains(said), "{said}: {err}");
        }
        let keyed =
            |l: &Layout, env: Option<&str>| l.resolve_with(env).unwrap().0.security().clone();
        let from_file = Layout {
            key_file: Some(key.clone()),
            ..member.clone()
        };
        assert_eq!(
            keyed(&from_file, None),
            Security::Keyed {
                key: ClusterKey::from_bytes([0xcd; 32]),
                run: [0; 16]
            }
        );
        let env = "ef".repeat(32);
        assert_eq!(
            keyed(&member, Some(&env)),
            Security::Keyed {
                key: ClusterKey::from_bytes([0xef; 32]),
                run: [0; 16]
            }
        );
        let err = member.resolve_with(Some("0123")).unwrap_err().to_string();
        assert!(err.contains(KEY_ENV) && !err.contains("0123"), "{err}");
        let plain = Layout {
            insecure_plaintext: true,
            ..member.clone()
        };
        assert_eq!(keyed(&plain, Some(&env)), Security::Plaintext);
        let both = Layout {
            insecure_plaintext: true,
            ..from_file
        };
        assert!(both.resolve().is_err());
        std::fs::write(&hosts, "127.0.0.1:7000\nlocalhost:7001\n").unwrap();
        assert_eq!(keyed(&member, None), Security::Plaintext);
    }
}
