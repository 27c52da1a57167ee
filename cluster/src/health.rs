//! What a process knows about its peers: which remote processes' connections are gone, and
//! which of its own worker threads have stopped, so a worker waiting for a peer can fail at
//! once, naming it, instead of waiting for a timeout.

use std::cell::RefCell;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::key::Security;

/// The peers' state as seen by one process.
#[derive(Debug)]
pub struct Health {
    process: usize,
    threads: usize,
    /// Per process: when (how many were lost before it) and why its connection is gone
    /// (`None` while it works, and for this process).
    lost: Mutex<Vec<Option<(usize, String)>>>,
    /// Per local worker thread: whether it has returned (or panicked).
    stopped: Vec<AtomicBool>,
    /// Per process: a handle on its socket, to cut a connection that stopped answering.
    sockets: Mutex<Vec<Option<TcpStream>>>,
    /// How the cluster's links are secured (the all-reduce's links are secured alike).
    security: Security,
}

/// Whether and why a worker cannot take part any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gone {
    /// The worker.
    pub worker: usize,
    /// Its process.
    pub process: usize,
    /// What happened.
    pub reason: String,
}

impl Health {
    /// The state of `process` (one of `processes`, each with `threads` workers).
    pub fn new(process: usize, processes: usize, threads: usize) -> Health {
        Health {
            process,
            threads,
            lost: Mutex::new(vec![None; processes]),
            stopped: (0..threads).map(|_| AtomicBool::new(false)).collect(),
            sockets: Mutex::new((0..processes).map(|_| None).collect()),
            security: Security::Plaintext,
        }
    }

    /// With the cluster's links secured as `security`.
    pub fn with_security(self, security: Security) -> Health {
        Health { security, ..self }
    }

    /// How the cluster's links are secured.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// Worker threads per process.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Keeps a handle on the socket to `process`, for [`Health::cut`].
    pub fn watch_socket(&self, process: usize, socket: TcpStream) {
        self.sockets.lock().expect("not poisoned")[process] = Some(socket);
    }

    /// Records that the connection to `process` is gone (the first reason is kept).
    pub fn lose(&self, process: usize, reason: impl Into<String>) {
        let mut lost = self.lost.lock().expect("not poisoned");
        if lost[process].is_none() {
            let before = lost.iter().filter(|l| l.is_some()).count();
            lost[process] = Some((before, reason.into()));
        }
    }

    /// Marks `process` lost and shuts its socket down, so this process's network threads end
    /// instead of waiting on a peer that no longer answers.
    pub fn cut(&self, process: usize, reason: impl Into<String>) {
        self.lose(process, reason);
        if let Some(s) = &self.sockets.lock().expect("not poisoned")[process] {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// [`Health::cut`]s every other process: for a process giving up on peers that stopped
    /// answering, whose network threads would otherwise wait on them when it ends.
    pub fn cut_all(&self, reason: &str) {
        let processes = self.lost.lock().expect("not poisoned").len();
        for p in (0..processes).filter(|p| *p != self.process) {
            self.cut(p, reason);
        }
    }

    /// This process's index.
    pub fn process(&self) -> usize {
        self.process
    }

    /// Processes in the cluster.
    pub fn processes(&self) -> usize {
        self.lost.lock().expect("not poisoned").len()
    }

    /// The IP address this process's connections to its peers use here (`None` before any
    /// is watched): where its peers can reach it.
    pub fn local_ip(&self) -> Option<std::net::IpAddr> {
        self.sockets
            .lock()
            .expect("not poisoned")
            .iter()
            .flatten()
            .find_map(|s| s.local_addr().ok())
            .map(|a| a.ip())
    }

    /// Whether the connection to any other process is gone.
    pub fn any_process_lost(&self) -> bool {
        self.lost
            .lock()
            .expect("not poisoned")
            .iter()
            .any(Option::is_some)
    }

    /// The other process whose connection was lost first, and why. The first loss is the
    /// cause: a process that fails because a third one died closes its own connections
    /// afterwards, and naming it instead would send the reader to the wrong machine.
    pub fn lost_process(&self) -> Option<(usize, String)> {
        self.lost
            .lock()
            .expect("not poisoned")
            .iter()
            .enumerate()
            .filter_map(|(p, lost)| lost.as_ref().map(|(when, why)| (*when, p, why)))
            .min()
            .map(|(_, p, why)| (p, why.clone()))
    }

    /// Records that local worker `worker` (a global index) has stopped.
    pub fn stop(&self, worker: usize) {
        if let Some(flag) = self.stopped.get(worker - self.process * self.threads) {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// The process of global worker `worker`.
    pub fn process_of(&self, worker: usize) -> usize {
        worker / self.threads
    }

    /// `Some` when `worker` can no longer take part: its thread here has stopped, or its
    /// process's connection is gone.
    pub fn gone(&self, worker: usize) -> Option<Gone> {
        let process = self.process_of(worker);
        let reason = if process == self.process {
            self.stopped[worker - process * self.threads]
                .load(Ordering::SeqCst)
                .then(|| "its worker thread stopped".to_string())
        } else {
            self.lost.lock().expect("not poisoned")[process]
                .as_ref()
                .map(|(_, why)| why.clone())
        }?;
        Some(Gone {
            worker,
            process,
            reason,
        })
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Health>>> = const { RefCell::new(None) };
}

/// Installs `health` as this worker thread's (done by [`crate::execute`]).
pub(crate) fn set_current(health: Arc<Health>) {
    CURRENT.with(|c| *c.borrow_mut() = Some(health));
}

/// The health of the cluster this worker thread belongs to (`None` outside [`crate::execute`]).
pub fn current() -> Option<Arc<Health>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Marks a worker stopped when dropped: when its closure returns or unwinds.
#[derive(Debug)]
pub(crate) struct StopOnDrop {
    pub(crate) health: Arc<Health>,
    pub(crate) worker: usize,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.health.stop(self.worker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stopped_local_workers_and_lost_processes() {
        // Process 1 of 3, two threads each: workers 2 and 3 are local.
        let h = Health::new(1, 3, 2);
        assert_eq!(h.gone(0), None);
        assert_eq!(h.gone(3), None);
        h.stop(3);
        assert_eq!(h.gone(3).unwrap().process, 1);
        h.lose(2, "connection reset");
        h.lose(2, "later reason");
        let g = h.gone(5).unwrap();
        assert_eq!(
            (g.worker, g.process, g.reason.as_str()),
            (5, 2, "connection reset")
        );
        assert_eq!(h.gone(4).unwrap().process, 2);
        assert_eq!(h.gone(1), None);
        assert_eq!(h.lost_process(), Some((2, "connection reset".to_string())));
        // The first loss is named, not the lowest process: 0 closed after 2 died.
        h.lose(0, "it closed its connection");
        assert_eq!(h.lost_process(), Some((2, "connection reset".to_string())));
    }
}
