//! One way to run a timely cluster for every job here (`pipeline`, `trainer`): processes x
//! threads, a hostfile across machines or processes started on this machine, links that are
//! mutually authenticated and encrypted with a cluster key, and connection set-up that fails
//! with a clear error in bounded time instead of retrying forever.
#![deny(missing_docs)]

pub mod allreduce;
pub mod cli;
pub mod connect;
pub mod error;
pub mod execute;
mod handshake;
pub mod health;
pub mod hostfile;
pub mod key;
pub mod layout;
mod links;
pub mod local;
pub mod sealed;
pub mod watched;

pub use allreduce::AllReduce;
pub use cli::ClusterArgs;
pub use error::{Error, Result};
pub use execute::{Cluster, Network, execute, execute_watching};
pub use hostfile::read_hostfile;
pub use key::{ClusterKey, KEY_ENV, Security};
pub use layout::Layout;
pub use local::{Children, Handoff, Watch, in_process};
pub use sealed::Wire;
