//! A progress line on stderr while a run reads its input (hidden when stderr is not a terminal),
//! and the S3 stores' transfer bars beside it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use shards::s3::{Direction, TransferProgress};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::ingest::Counters;

/// The process's progress bars on stderr, so that the run's bar and the storage's transfer bars
/// (S3) share the terminal instead of overwriting each other.
pub fn terminal() -> &'static MultiProgress {
    static TERMINAL: OnceLock<MultiProgress> = OnceLock::new();
    TERMINAL.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// A running progress display; stops when dropped.
#[derive(Debug)]
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Shows input bytes (of `total`) and rows per second from `counters` until dropped.
    pub fn start(counters: Arc<Counters>, total: u64, enabled: bool) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = enabled.then(|| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let bar = terminal().add(ProgressBar::new(total));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {bytes}/{total_bytes} read [{bar:30}] {binary_bytes_per_sec} {msg}",
                    )
                    .expect("the template is valid")
                    .progress_chars("=> "),
                );
                let started = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let rows = counters.rows.load(Ordering::Relaxed);
                    bar.set_position(counters.bytes.load(Ordering::Relaxed).min(total));
                    let secs = started.elapsed().as_secs_f64().max(1e-3);
                    bar.set_message(format!("{rows} rows, {:.0} rows/s", rows as f64 / secs));
                    std::thread::sleep(Duration::from_millis(100));
                }
                bar.finish_and_clear();
            })
        });
        Progress { stop, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The S3 transfer bars on [`terminal`]: one per direction (bytes, rate, elapsed), created at
/// its first byte; when the store closes, it leaves one line with the total and the mean rate
/// (first to last byte). Drawn only when stderr is a terminal.
#[derive(Debug, Default)]
pub struct TransferBars {
    bars: Mutex<HashMap<Direction, ProgressBar>>,
}

impl TransferBars {
    /// Bars that join the process's [`terminal`].
    pub fn new() -> Arc<TransferBars> {
        Arc::new(TransferBars::default())
    }
}

impl TransferProgress for TransferBars {
    fn transferred(&self, direction: Direction, bytes: u64) {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        let bar = bars.entry(direction).or_insert_with(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
                .with_style(
                    ProgressStyle::with_template(
                        "{prefix:>7} {bytes:>11} {binary_bytes_per_sec:>13} {elapsed:>4}",
                    )
                    .expect("a valid template"),
                )
                .with_prefix(direction.label());
            terminal().add(bar)
        });
        bar.inc(bytes);
    }

    fn finished(&self, direction: Direction, total: u64, active: Duration) {
        let bar = self
            .bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&direction);
        if let Some(bar) = bar {
            let secs = active.as_secs_f64().max(1e-3);
            let mib = total as f64 / (1 << 20) as f64;
            bar.set_style(ProgressStyle::with_template("{prefix:>7} {msg}").expect("valid"));
            bar.finish_with_message(format!(
                "{mib:.1} MiB in {secs:.1} s ({:.1} MiB/s)",
                mib / secs
            ));
        }
    }
}
