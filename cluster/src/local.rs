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
    /// If one of them fails before the run ends, this process reports it and exits with status 1
    /// (it would otherwise wait for that process forever).
    pub fn spawn(exe: &Path, args: &[OsString], addresses: &[String]) -> Result<Children> {
        let mut children = Vec::new();
        for process in 1..addresses.len() {
            let child = Command::new(exe)
                .args(args)
                .arg("--process")
                .arg(process.to_string())
                .arg("--cluster-addresses")
                .arg(addresses.join(","))
                .spawn()
                .map_err(|e| Error::Process {
                    process,
                    message: format!("cannot start: {e}"),
                })?;
            children.push((process, child));
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
                for (process, child) in guard.iter_mut() {
                    if let Ok(Some(status)) = child.try_wait()
                        && !status.success()
                    {
                        eprintln!("error: process {process} failed ({status}); stopping the run");
                        std::process::exit(1);
                    }
                }
            }
        });
        Ok(Children { children })
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
