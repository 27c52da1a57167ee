//! Starting timely workers for a `Cluster`: one process, or one process of several.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::communication::allocator::ProcessBuilder;
use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::{AllocatorBuilder, Hooks, WorkerGuards};
use timely::worker::Worker;

use crate::connect::connect;
use crate::error::{Error, Result};
use crate::health::{self, Health, StopOnDrop};
use crate::key::Security;
use crate::watched::Watched;

/// How a job is spread over processes and threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cluster {
    /// One process with `threads` worker threads.
    Single {
        /// Worker threads.
        threads: usize,
    },
    /// One process of several.
    Member {
        /// Worker threads per process.
        threads: usize,
        /// This process's index.
        process: usize,
        /// `host:port` of every process, in process order.
        addresses: Vec<String>,
        /// How its links are secured, and where it listens.
        network: Network,
    },
}

/// How a process of a cluster reaches the others: the links' security, and the listener its
/// higher peers connect to when it was bound before the run (by process 0 of a local run, or
/// handed over on stdin); without one it listens at its own address.
#[derive(Debug, Clone)]
pub struct Network {
    /// How links are secured.
    pub security: Security,
    listener: Option<Arc<TcpListener>>,
}

impl Network {
    /// `security`, and `listener` when one was bound already.
    pub fn new(security: Security, listener: Option<TcpListener>) -> Network {
        Network {
            security,
            listener: listener.map(Arc::new),
        }
    }

    /// The listener bound before the run, if any.
    pub fn listener(&self) -> Option<&TcpListener> {
        self.listener.as_deref()
    }
}

impl PartialEq for Network {
    fn eq(&self, other: &Network) -> bool {
        let at = |n: &Network| n.listener.as_ref().and_then(|l| l.local_addr().ok());
        self.security == other.security && at(self) == at(other)
    }
}

impl Eq for Network {}

impl Cluster {
    /// This process's index.
    pub fn process(&self) -> usize {
        match self {
            Cluster::Single { .. } => 0,
            Cluster::Member { process, .. } => *process,
        }
    }

    /// Worker threads per process.
    pub fn threads(&self) -> usize {
        match self {
            Cluster::Single { threads } | Cluster::Member { threads, .. } => *threads,
        }
    }

    /// Number of processes.
    pub fn processes(&self) -> usize {
        match self {
            Cluster::Single { .. } => 1,
            Cluster::Member { addresses, .. } => addresses.len(),
        }
    }

    /// Worker threads over all processes.
    pub fn workers(&self) -> usize {
        self.threads() * self.processes()
    }

    /// How its links are secured (a single process has none: [`Security::Plaintext`]).
    pub fn security(&self) -> &Security {
        match self {
            Cluster::Single { .. } => &Security::Plaintext,
            Cluster::Member { network, .. } => &network.security,
        }
    }
}

/// How long a worker whose work is done waits for its dataflows to wind down with the others
/// before dropping them.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// Steps a finished worker until its dataflows complete, as timely would, but not forever: when a
/// peer process is gone, or the peers do not finish within [`DRAIN_LIMIT`], the dataflows are
/// dropped (every job here waits for its own results before returning, so what is left is only
/// teardown). Without this a worker would wait forever for progress from a dead peer.
fn drain(worker: &mut Worker, health: &Health) {
    let started = Instant::now();
    while worker.has_dataflows() {
        if health.any_process_lost() || started.elapsed() > DRAIN_LIMIT {
            for id in worker.installed_dataflows() {
                worker.drop_dataflow(id);
            }
            return;
        }
        worker.step_or_park(Some(Duration::from_millis(10)));
    }
}

/// Runs `func` on every worker thread of this process, after connecting to the other processes
/// (within `connect_timeout`). Join the guards for the workers' results.
///
/// Each worker thread can see the cluster's [`Health`] ([`health::current`]): a peer process
/// whose connection breaks, or a local worker that has returned, is recorded there, and
/// [`crate::AllReduce`] fails at once when it waits for one. A broken connection ends this
/// process's network threads in order instead of panicking them.
pub fn execute<T, F>(
    cluster: &Cluster,
    connect_timeout: Duration,
    func: F,
) -> Result<WorkerGuards<T>>
where
    T: Send + 'static,
    F: Fn(&mut Worker) -> T + Send + Sync + 'static,
{
    execute_watching(cluster, connect_timeout, None, func)
}

/// [`execute`], and with `unreachable` a peer whose machine acknowledges nothing for that long
/// (not even the keepalive probes sent every second: its link is down, or it is off) is lost,
/// named as unreachable, instead of leaving this process to a timeout that cannot say which
/// peer went silent. A stopped or busy peer process still has its kernel answer, so this never
/// fires for one.
pub fn execute_watching<T, F>(
    cluster: &Cluster,
    connect_timeout: Duration,
    unreachable: Option<Duration>,
    func: F,
) -> Result<WorkerGuards<T>>
where
    T: Send + 'static,
    F: Fn(&mut Worker) -> T + Send + Sync + 'static,
{
    let health = Arc::new(
        Health::new(cluster.process(), cluster.processes(), cluster.threads())
            .with_security(cluster.security().clone()),
    );
    let watched_health = Arc::clone(&health);
    let func = move |worker: &mut Worker| {
        health::set_current(Arc::clone(&watched_health));
        let stop = StopOnDrop {
            health: Arc::clone(&watched_health),
            worker: worker.index(),
        };
        let result = func(worker);
        drop(stop);
        drain(worker, &watched_health);
        result
    };
    match cluster {
        Cluster::Single { threads } => {
            timely::execute(timely::Config::process(*threads), func).map_err(Error::Timely)
        }
        Cluster::Member {
            threads,
            process,
            addresses,
            network,
        } => {
            let sockets = connect(
                addresses,
                *process,
                network.listener(),
                &network.security,
                connect_timeout,
            )?
            .into_iter()
            .enumerate()
            .map(|(peer, wire)| {
                wire.map(|w| {
                    if let Some(after) = unreachable {
                        crate::connect::end_when_unreachable(w.socket(), after)?;
                    }
                    health.watch_socket(peer, w.socket().try_clone()?);
                    Ok(Watched::new(w, peer, Arc::clone(&health)))
                })
                .transpose()
            })
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::Timely(format!("cannot set up a connection: {e}")))?;
            let hooks = Hooks::default();
            let local = ProcessBuilder::new_typed_vector(
                *threads,
                hooks.refill.clone(),
                hooks.spill.clone(),
            );
            let (builders, guard) =
                initialize_networking_from_sockets(local, sockets, *process, *threads, hooks)
                    .map_err(|e| Error::Timely(format!("cannot start networking: {e}")))?;
            timely::execute::execute_from(
                builders.into_iter().map(AllocatorBuilder::Tcp).collect(),
                Box::new(guard),
                timely::WorkerConfig::default(),
                func,
            )
            .map_err(Error::Timely)
        }
    }
}
