//! Starting, watching, waiting for and killing the other processes of a multi-process run on
//! this machine (loopback ports), the way `spark-submit` on the master VM starts its executors.
//!
//! Process 0 binds every process's listener itself (port 0 on loopback, so the kernel picks a
//! free one and nothing can take it between the choice and its use) and draws a fresh cluster
//! key and run id. Each process it starts gets, on its stdin (a Unix socket), its listener, the
//! addresses and the key ([`Handoff`], read back by [`receive`]): nothing secret is on a command
//! line or in the environment, and no port is ever released to be bound again.

use std::ffi::OsString;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::error::{Error, Result};
use crate::execute::{Cluster, Network};
use crate::key::{ClusterKey, KEY_BYTES, Security, fresh_run_id};

/// First bytes of a handoff.
const MAGIC: [u8; 8] = *b"fastdpH1";
/// The longest address in a handoff.
const MAX_ADDRESS: usize = 255;

/// `n` listeners on loopback, each on a port the kernel chose, held.
pub(crate) fn bind_loopback(n: usize) -> Result<Vec<TcpListener>> {
    (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::Config(format!("cannot listen on a loopback port: {e}")))
}

fn addresses_of(listeners: &[TcpListener]) -> Result<Vec<String>> {
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::Config(format!("cannot read a loopback port: {e}")))
}

/// The members of a cluster of `processes` x `threads` whose processes all run in this one
/// (for tests and benchmarks): each with its listener bound and held, all with one fresh key.
pub fn in_process(processes: usize, threads: usize) -> Result<Vec<Cluster>> {
    let security = Security::Keyed {
        key: ClusterKey::generate()?,
        run: fresh_run_id()?,
    };
    let listeners = bind_loopback(processes)?;
    let addresses = addresses_of(&listeners)?;
    Ok(listeners
        .into_iter()
        .enumerate()
        .map(|(process, listener)| Cluster::Member {
            threads,
            process,
            addresses: addresses.clone(),
            network: Network::new(security.clone(), Some(listener)),
        })
        .collect())
}

/// What process 0 of a local run hands each process it starts: the addresses of all, the key
/// and run id, and the listener bound for it.
#[derive(Debug)]
pub struct Handoff {
    addresses: Vec<String>,
    security: Security,
    /// Per process, its listener until handed over (`None` for process 0, which keeps its own).
    listeners: Vec<Option<TcpListener>>,
}

impl Handoff {
    /// Binds a loopback listener for each of `processes` processes; process 0's cluster (this
    /// process, `threads` workers, its own listener) and the handoff for the others.
    pub fn local(
        processes: usize,
        threads: usize,
        security: Security,
    ) -> Result<(Cluster, Handoff)> {
        let mut listeners = bind_loopback(processes)?;
        let addresses = addresses_of(&listeners)?;
        let own = listeners.remove(0);
        let cluster = Cluster::Member {
            threads,
            process: 0,
            addresses: addresses.clone(),
            network: Network::new(security.clone(), Some(own)),
        };
        let mut listeners: Vec<Option<TcpListener>> = listeners.into_iter().map(Some).collect();
        listeners.insert(0, None);
        Ok((
            cluster,
            Handoff {
                addresses,
                security,
                listeners,
            },
        ))
    }

    /// The processes of the run (this one included).
    pub fn processes(&self) -> usize {
        self.addresses.len()
    }

    /// Spawns `command` as process `process`, its stdin a Unix socket on which it finds its
    /// listener, the addresses and the key (the program reads them with [`receive`]). A child
    /// that exits before it has taken them is not an error here: it fails, and its exit status
    /// says so to whoever waits for it.
    pub fn start(&mut self, process: usize, command: &mut Command) -> Result<Child> {
        let cannot = |m: String| Error::Process {
            process,
            message: m,
        };
        let listener = self
            .listeners
            .get_mut(process)
            .and_then(Option::take)
            .ok_or_else(|| cannot("no listener to hand over (started twice?)".into()))?;
        let (ours, theirs) = UnixStream::pair()
            .map_err(|e| cannot(format!("cannot make its handoff socket: {e}")))?;
        let child = command
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .spawn()
            .map_err(|e| cannot(format!("cannot start: {e}")))?;
        // A failed send leaves the child without its handoff: it exits, and says why.
        let _ = send(&ours, &self.message(), &listener);
        Ok(child)
    }

    fn message(&self) -> Vec<u8> {
        let mut m = MAGIC.to_vec();
        match &self.security {
            Security::Keyed { key, run } => {
                m.push(1);
                m.extend_from_slice(key.bytes());
                m.extend_from_slice(run);
            }
            Security::Plaintext => {
                m.push(0);
                m.extend_from_slice(&[0u8; KEY_BYTES + 16]);
            }
        }
        m.extend_from_slice(&(self.addresses.len() as u32).to_be_bytes());
        for a in &self.addresses {
            m.push(a.len() as u8);
            m.extend_from_slice(a.as_bytes());
        }
        m
    }
}

/// Sends `message` with `listener` attached to its first bytes.
fn send(socket: &UnixStream, message: &[u8], listener: &TcpListener) -> std::io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [listener.as_fd()];
    control.push(SendAncillaryMessage::ScmRights(&fds));
    let sent = rustix::net::sendmsg(
        socket,
        &[IoSlice::new(message)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    (&*socket).write_all(&message[sent..])
}

/// In a process started by [`Handoff::start`] as process `process`: its cluster, from what
/// process 0 sent on stdin (waiting at most `timeout`).
pub fn receive(process: usize, threads: usize, timeout: Duration) -> Result<Cluster> {
    let bad = |m: String| {
        Error::Config(format!(
            "process {process}: cannot take over from process 0 (--cluster-child reads its \
             listener, addresses and key from stdin, as process 0 of a local run sends them): {m}"
        ))
    };
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| bad(e.to_string()))?;
    let socket = UnixStream::from(stdin);
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| bad(format!("stdin is not its socket: {e}")))?;
    let mut message = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        &socket,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| bad(format!("stdin is not its socket: {e}")))?;
    message.extend_from_slice(&buf[..got.bytes]);
    let mut listener: Option<TcpListener> = None;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            for fd in fds {
                listener.get_or_insert_with(|| TcpListener::from(fd));
            }
        }
    }
    (&socket)
        .take(1 << 20)
        .read_to_end(&mut message)
        .map_err(|e| bad(e.to_string()))?;
    let listener = listener.ok_or_else(|| bad("no listener came with it".into()))?;
    listener
        .local_addr()
        .map_err(|e| bad(format!("what came is not a listening socket: {e}")))?;
    let (addresses, security) = parse(&message).map_err(bad)?;
    if process == 0 || process >= addresses.len() {
        return Err(bad(format!(
            "--process {process} is not one of the {} processes it names",
            addresses.len()
        )));
    }
    Ok(Cluster::Member {
        threads,
        process,
        addresses,
        network: Network::new(security, Some(listener)),
    })
}

fn parse(m: &[u8]) -> std::result::Result<(Vec<String>, Security), String> {
    let short = || "the message is cut short".to_string();
    let head = 8 + 1 + KEY_BYTES + 16 + 4;
    if m.len() < head || m[..8] != MAGIC {
        return Err("not a handoff from process 0".into());
    }
    let security = match m[8] {
        1 => Security::Keyed {
            key: ClusterKey::from_bytes(m[9..9 + KEY_BYTES].try_into().expect("32 bytes")),
            run: m[9 + KEY_BYTES..9 + KEY_BYTES + 16]
                .try_into()
                .expect("16 bytes"),
        },
        0 => Security::Plaintext,
        _ => return Err("not a handoff from process 0".into()),
    };
    let count = u32::from_be_bytes(m[head - 4..head].try_into().expect("4 bytes")) as usize;
    if count > crate::layout::MAX_PROCESSES {
        return Err(format!("it names {count} processes"));
    }
    let mut at = head;
    let mut addresses = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::from(*m.get(at).ok_or_else(short)?);
        let text = m.get(at + 1..at + 1 + len).ok_or_else(short)?;
        addresses.push(
            String::from_utf8(text.to_vec()).map_err(|_| "an address is not text".to_string())?,
        );
        at += 1 + len;
    }
    if at != m.len() {
        return Err("bytes after the addresses".into());
    }
    debug_assert!(addresses.iter().all(|a| a.len() <= MAX_ADDRESS));
    Ok((addresses, security))
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
    /// With the handoff of a local run (from [`Layout::resolve`](crate::Layout::resolve)),
    /// starts this program again as its processes 1.., with `args`: the binary hands over its
    /// own (`std::env::args_os().skip(1)`, the flags every process shares). With `None` (a
    /// one-process run, or a process of a hostfile cluster) starts nothing.
    pub fn start_this_program(
        spawn: Option<Handoff>,
        args: impl IntoIterator<Item = OsString>,
        watch: Watch,
    ) -> Result<Option<Children>> {
        let Some(handoff) = spawn else {
            return Ok(None);
        };
        let exe = std::env::current_exe().map_err(|e| {
            Error::Config(format!(
                "cannot find this program to start its other processes: {e}"
            ))
        })?;
        let args: Vec<OsString> = args.into_iter().collect();
        Children::spawn(&exe, &args, handoff, watch).map(Some)
    }

    /// Starts `exe args... --process i --cluster-child` for i in 1.. of `handoff`, each taking
    /// its listener, the addresses and the key from stdin ([`receive`]), and a watchdog that
    /// acts on the first of them to fail, as `watch` says.
    pub fn spawn(
        exe: &Path,
        args: &[OsString],
        mut handoff: Handoff,
        watch: Watch,
    ) -> Result<Children> {
        let mut children: Vec<(usize, Child)> = Vec::new();
        for process in 1..handoff.processes() {
            let mut command = Command::new(exe);
            command
                .args(args)
                .arg("--process")
                .arg(process.to_string())
                .arg("--cluster-child");
            match handoff.start(process, &mut command) {
                Ok(child) => children.push((process, child)),
                Err(e) => {
                    kill_all(&mut children);
                    return Err(e);
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
        let (_, handoff) = Handoff::local(processes, 1, Security::Plaintext).unwrap();
        let args = ["-c".into(), format!("exit {code}").into()];
        Children::spawn(Path::new("/bin/sh"), &args, handoff, watch).unwrap()
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
