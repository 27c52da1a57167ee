//! Transfer counts of one store, passed on to the [`TransferProgress`] of its options: bytes as
//! they move, and when the store is dropped, the total and the time from first to last byte.
#![cfg(feature = "s3")]

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::options::{Direction, TransferProgress};

/// Download and upload meters of one store.
#[derive(Debug)]
pub(crate) struct Transfers {
    pub(crate) get: Meter,
    pub(crate) put: Meter,
}

impl Transfers {
    pub(crate) fn new(progress: Option<Arc<dyn TransferProgress>>) -> Self {
        Transfers {
            get: Meter::new(Direction::Get, progress.clone()),
            put: Meter::new(Direction::Put, progress),
        }
    }
}

/// A byte counter of one direction.
#[derive(Debug)]
pub(crate) struct Meter {
    direction: Direction,
    progress: Option<Arc<dyn TransferProgress>>,
    /// When the first byte moved.
    start: OnceLock<Instant>,
    total: AtomicU64,
    /// Nanoseconds from the first byte to the latest, for the mean rate.
    active_ns: AtomicU64,
}

impl Meter {
    fn new(direction: Direction, progress: Option<Arc<dyn TransferProgress>>) -> Self {
        Meter {
            direction,
            progress,
            start: OnceLock::new(),
            total: AtomicU64::new(0),
            active_ns: AtomicU64::new(0),
        }
    }

    /// Counts `n` more bytes transferred.
    pub(crate) fn add(&self, n: u64) {
        let Some(progress) = &self.progress else {
            return;
        };
        let start = self.start.get_or_init(Instant::now);
        self.total.fetch_add(n, Ordering::Relaxed);
        progress.transferred(self.direction, n);
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.active_ns.fetch_max(ns, Ordering::Relaxed);
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if let (Some(progress), Some(_)) = (&self.progress, self.start.get()) {
            progress.finished(
                self.direction,
                self.total.load(Ordering::Relaxed),
                Duration::from_nanos(self.active_ns.load(Ordering::Relaxed)),
            );
        }
    }
}
