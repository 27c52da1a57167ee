//! A progress line on stderr while a run reads its input (hidden when stderr is not a terminal).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::ingest::Counters;

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
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
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
