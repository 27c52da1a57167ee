//! One way to run a timely cluster for every job here (`pipeline`, `trainer`): processes x
//! threads, a hostfile across machines or processes started on this machine, and connection
//! set-up that fails with a clear error in bounded time instead of retrying forever.
#![deny(missing_docs)]

pub mod allreduce;
pub mod cli;
pub mod connect;
pub mod error;
pub mod execute;
pub mod health;
pub mod hostfile;
pub mod layout;
pub mod local;
pub mod watched;

pub use allreduce::AllReduce;
pub use cli::ClusterArgs;
pub use error::{Error, Result};
pub use execute::{Cluster, execute, execute_watching};
pub use hostfile::read_hostfile;
pub use layout::Layout;
pub use local::{Children, Watch, free_loopback_addresses};
