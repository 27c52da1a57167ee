//! Starting the other processes of a multi-process run on this machine (loopback ports), the way
//! `spark-submit` on the master VM starts its executors.

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};

/// `n` distinct free `127.0.0.1:port` addresses.
pub fn free_loopback_addresses(n: usize) -> Result<Vec<String>> {
    // Hold every listener until all ports are chosen, so the same port is not picked twice.
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::Config(format!("cannot reserve a loopback port: {e}")))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::Config(format!("cannot read a loopback port: {e}")))
}

/// The processes 1..n of a local run, watched while process 0 works.
#[derive(Debug)]
pub struct Children {
    children: Arc<Mutex<Vec<(usize, Child)>>>,
}

impl Children {
    /// Starts `exe args... --process i --cluster-addresses a0,a1,...` for i in 1..addresses.len().
    ///
    /// If one of them fails before the run ends, the others are killed, `on_failure` runs (to
    /// remove what the run wrote under temporary names) and this process exits with status 1:
    /// its workers would otherwise wait for the dead process forever.
    pub fn spawn(
        exe: &Path,
        args: &[OsString],
        addresses: &[String],
        on_failure: Box<dyn Fn() + Send>,
    ) -> Result<Children> {
        Children::spawn_until(
            exe,
            args,
            addresses,
            Box::new(move || {
                on_failure();
                true
            }),
        )
    }

    /// Like [`Children::spawn`], for a run whose result can stop depending on its children
    /// (once process 0 has committed the output): when one fails, `on_failure` decides. It
    /// returns `true` to stop the run (the others are killed and this process exits with status
    /// 1), or `false` when the run no longer needs them; the failure is then reported by
    /// [`Children::wait`].
    pub fn spawn_until(
        exe: &Path,
        args: &[OsString],
        addresses: &[String],
        on_failure: Box<dyn Fn() -> bool + Send>,
    ) -> Result<Children> {
        let mut children: Vec<(usize, Child)> = Vec::new();
        for process in 1..addresses.len() {
            let spawned = Command::new(exe)
                .args(args)
                .arg("--process")
                .arg(process.to_string())
                .arg("--cluster-addresses")
                .arg(addresses.join(","))
                .spawn();
            match spawned {
                Ok(child) => children.push((process, child)),
                Err(e) => {
                    kill_all(&mut children);
                    return Err(Error::Process {
                        process,
                        message: format!("cannot start: {e}"),
                    });
                }
            }
        }
        let children = Arc::new(Mutex::new(children));
        let watched = Arc::clone(&children);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(100));
                let mut guard = watched.lock().expect("the watchdog is the only other user");
                if guard.is_empty() {
                    return;
                }
                let failed = guard
                    .iter_mut()
                    .find_map(|(process, child)| match child.try_wait() {
                        Ok(Some(status)) if !status.success() => {
                            Some((*process, status.to_string()))
                        }
                        _ => None,
                    });
                if let Some((process, status)) = failed {
                    if !on_failure() {
                        // The run is done with its children: `wait` reports the failure.
                        return;
                    }
                    kill_all(&mut guard);
                    eprintln!("error: process {process} failed ({status}); the run is stopped");
                    std::process::exit(1);
                }
            }
        });
        Ok(Children { children })
    }

    /// Stops every child (when this process has failed itself).
    pub fn kill(self) {
        kill_all(&mut self.children.lock().expect("not poisoned"));
    }

    /// Waits for every child; the first failure is an error.
    pub fn wait(self) -> Result<()> {
        let children = std::mem::take(&mut *self.children.lock().expect("not poisoned"));
        let mut first_error = None;
        for (process, mut child) in children {
            match child.wait() {
                Ok(s) if s.success() => {}
                Ok(s) => {
                    first_error.get_or_insert(Error::Process {
                        process,
                        message: format!("exited with {s}"),
                    });
                }
                Err(e) => {
                    first_error.get_or_insert(Error::Process {
                        process,
                        message: e.to_string(),
                    });
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn kill_all(children: &mut Vec<(usize, Child)>) {
    for (_, child) in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    children.clear();
}
