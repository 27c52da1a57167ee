//! Starting, watching, waiting for and killing the other processes of a multi-process run on
//! this machine (loopback ports), the way `spark-submit` on the master VM starts its executors.

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

/// What process 0 does when one of its children fails before the run is done.
///
/// The library never ends the process itself: `stop` is the binary's, and it is expected to
/// exit (its workers would otherwise wait for the dead process until a timeout). Should `stop`
/// return, the failure is kept for [`Children::wait`].
pub struct Watch {
    /// Runs first (to remove what the run wrote under temporary names): `true` to stop the run
    /// (the other children are killed, then `stop` runs), `false` when the run no longer needs
    /// its children (process 0 has committed the output); the failure is then reported by
    /// [`Children::wait`].
    pub on_failure: Box<dyn Fn() -> bool + Send>,
    /// Runs once the run is stopped, with [`Error::Stopped`] naming the failed process.
    pub stop: Box<dyn FnOnce(Error) + Send>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

/// The processes 1..n of a local run, watched while process 0 works.
#[derive(Debug)]
pub struct Children {
    children: Arc<Mutex<Vec<(usize, Child)>>>,
    /// A failure that stopped the run, when [`Watch::stop`] returned.
    stopped: Arc<Mutex<Option<Error>>>,
}

impl Children {
    /// With the addresses of a local run (`spawn` of [`Layout::resolve`](crate::Layout::resolve)),
    /// starts this program again as its processes 1.., with `args`: the binary hands over its
    /// own (`std::env::args_os().skip(1)`, the flags every process shares). With `None` (a
    /// one-process run, or a process of a hostfile cluster) starts nothing.
    pub fn start_this_program(
        spawn: Option<&[String]>,
        args: impl IntoIterator<Item = OsString>,
        watch: Watch,
    ) -> Result<Option<Children>> {
        let Some(addresses) = spawn else {
            return Ok(None);
        };
        let exe = std::env::current_exe().map_err(|e| {
            Error::Config(format!(
                "cannot find this program to start its other processes: {e}"
            ))
        })?;
        let args: Vec<OsString> = args.into_iter().collect();
        Children::spawn(&exe, &args, addresses, watch).map(Some)
    }

    /// Starts `exe args... --process i --cluster-addresses a0,a1,...` for i in 1..addresses.len(),
    /// and a watchdog that acts on the first of them to fail, as `watch` says.
    pub fn spawn(
        exe: &Path,
        args: &[OsString],
        addresses: &[String],
        watch: Watch,
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
        let stopped = Arc::new(Mutex::new(None));
        let (watched, failure) = (Arc::clone(&children), Arc::clone(&stopped));
        std::thread::spawn(move || {
            let Watch { on_failure, stop } = watch;
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
                    let stopped = || Error::Stopped {
                        process,
                        status: status.clone(),
                    };
                    // Kept before the lock is let go, so a `wait` after this sees it.
                    *failure.lock().expect("not poisoned") = Some(stopped());
                    drop(guard);
                    stop(stopped());
                    return;
                }
            }
        });
        Ok(Children { children, stopped })
    }

    /// Stops every child (when this process has failed itself).
    pub fn kill(self) {
        kill_all(&mut self.children.lock().expect("not poisoned"));
    }

    /// Waits for every child; the first failure is an error.
    pub fn wait(self) -> Result<()> {
        let children = std::mem::take(&mut *self.children.lock().expect("not poisoned"));
        if let Some(e) = self.stopped.lock().expect("not poisoned").take() {
            return Err(e);
        }
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

/// Process 0's end of a run, with `children` from [`Children::start_this_program`]: when its
/// own `result` is an error the children are killed and the error returned; otherwise they are
/// waited for, and how they ended comes back beside the result (whether their failure then
/// matters is the job's call).
pub fn finish<T, E>(
    children: Option<Children>,
    result: std::result::Result<T, E>,
) -> std::result::Result<(T, Result<()>), E> {
    match (result, children) {
        (Ok(value), Some(children)) => Ok((value, children.wait())),
        (Ok(value), None) => Ok((value, Ok(()))),
        (Err(e), Some(children)) => {
            children.kill();
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}

fn kill_all(children: &mut Vec<(usize, Child)>) {
    for (_, child) in children.iter_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    children.clear();
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// `sh -c 'exit N'` as processes 1.. (the appended `--process i ...` become `$0`, `$1`...).
    fn failing(processes: usize, code: u8, watch: Watch) -> Children {
        let addresses: Vec<String> = (0..processes).map(|i| format!("127.0.0.1:{i}")).collect();
        let args = ["-c".into(), format!("exit {code}").into()];
        Children::spawn(Path::new("/bin/sh"), &args, &addresses, watch).unwrap()
    }

    #[test]
    fn a_failed_child_stops_the_run_through_the_binarys_hook() {
        let (tx, rx) = mpsc::channel();
        let children = failing(
            3,
            3,
            Watch {
                on_failure: Box::new(|| true),
                stop: Box::new(move |e| tx.send(e.to_string()).unwrap()),
            },
        );
        let said = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(said.ends_with("the run is stopped"), "{said}");
        assert!(said.starts_with("process 1 failed") || said.starts_with("process 2 failed"));
        // The hook returned (a binary's exits): the failure is kept for `wait`.
        let err = children.wait().unwrap_err();
        assert!(matches!(err, Error::Stopped { .. }), "{err}");
    }

    #[test]
    fn a_run_done_with_its_children_reports_their_failure_when_it_waits() {
        let children = failing(
            2,
            4,
            Watch {
                on_failure: Box::new(|| false),
                stop: Box::new(|e| panic!("not stopped: {e}")),
            },
        );
        let (value, waited) = finish::<_, ()>(Some(children), Ok(7)).unwrap();
        assert_eq!(value, 7);
        let err = waited.unwrap_err().to_string();
        assert!(err.starts_with("process 1: exited with"), "{err}");
        assert_eq!(finish::<(), _>(None, Err("own")).unwrap_err(), "own");
    }
}
