//! Transfer progress on stderr: one bar per direction (bytes, rate, elapsed), drawn only when
//! stderr is a terminal, finished with a one-line total and mean rate (first to last byte) when
//! the store is dropped.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Download and upload meters of one store.
#[derive(Debug)]
pub(crate) struct Transfers {
    pub(crate) get: Meter,
    pub(crate) put: Meter,
}

impl Transfers {
    pub(crate) fn new(multi: Option<MultiProgress>) -> Self {
        Transfers {
            get: Meter::new("s3 get", multi.clone()),
            put: Meter::new("s3 put", multi),
        }
    }
}

/// A byte counter with a lazily created progress bar.
#[derive(Debug)]
pub(crate) struct Meter {
    label: &'static str,
    multi: Option<MultiProgress>,
    bar: OnceLock<(ProgressBar, Instant)>,
    /// Nanoseconds from the first byte to the latest, for the mean rate.
    active_ns: AtomicU64,
}

impl Meter {
    fn new(label: &'static str, multi: Option<MultiProgress>) -> Self {
        Meter {
            label,
            multi,
            bar: OnceLock::new(),
            active_ns: AtomicU64::new(0),
        }
    }

    /// Counts `n` more bytes transferred.
    pub(crate) fn add(&self, n: u64) {
        let (bar, start) = self.bar.get_or_init(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
                .with_style(
                    ProgressStyle::with_template(
                        "{prefix:>7} {bytes:>11} {binary_bytes_per_sec:>13} {elapsed:>4}",
                    )
                    .expect("a valid template"),
                )
                .with_prefix(self.label);
            let bar = match &self.multi {
                Some(m) => m.add(bar),
                None => bar,
            };
            (bar, Instant::now())
        });
        bar.inc(n);
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.active_ns.fetch_max(ns, Ordering::Relaxed);
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if let Some((bar, _)) = self.bar.get() {
            let secs = (self.active_ns.load(Ordering::Relaxed) as f64 / 1e9).max(1e-3);
            let mib = bar.position() as f64 / (1 << 20) as f64;
            bar.set_style(ProgressStyle::with_template("{prefix:>7} {msg}").expect("valid"));
            bar.finish_with_message(format!(
                "{mib:.1} MiB in {secs:.1} s ({:.1} MiB/s)",
                mib / secs
            ));
        }
    }
}
