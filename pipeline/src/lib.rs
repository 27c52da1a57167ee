//! The preprocessing job on timely dataflow (`pipeline run`) and the synthetic CaPUMS5full
//! generator (`pipeline generate`).
#![deny(missing_docs)]

pub mod config;
pub mod dataflow;
pub mod error;
pub mod generate;
pub mod ingest;
pub mod progress;
pub mod reference;
pub mod report;
pub mod run;
pub mod stats;
pub mod summary;
pub mod write;

pub use config::{Cluster, RunConfig};
pub use error::{Error, Result};
pub use generate::{GenerateConfig, generate};
pub use report::{ReportConfig, report};
pub use run::{Prepared, RunReport, prepare, prepare_with, run, run_with};
