//! Starting timely workers for a `Cluster`: one process, or one process of several.

use std::time::Duration;

use timely::communication::allocator::ProcessBuilder;
use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::{AllocatorBuilder, Hooks, WorkerGuards};
use timely::worker::Worker;

use crate::connect::connect;
use crate::error::{Error, Result};

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
    },
}

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
}

/// Runs `func` on every worker thread of this process, after connecting to the other processes
/// (within `connect_timeout`). Join the guards for the workers' results.
pub fn execute<T, F>(
    cluster: &Cluster,
    connect_timeout: Duration,
    func: F,
) -> Result<WorkerGuards<T>>
where
    T: Send + 'static,
    F: Fn(&mut Worker) -> T + Send + Sync + 'static,
{
    match cluster {
        Cluster::Single { threads } => {
            timely::execute(timely::Config::process(*threads), func).map_err(Error::Timely)
        }
        Cluster::Member {
            threads,
            process,
            addresses,
        } => {
            let sockets = connect(addresses, *process, connect_timeout)?;
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
