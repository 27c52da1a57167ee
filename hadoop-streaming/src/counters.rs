//! Hadoop counters: kept by a task, reported on stderr as `reporter:counter:<group>,<name>,<n>`.
//!
//! Hadoop adds up what each such line reports, so every report carries only the increase since
//! the last one. Reports are made periodically (never one per row) and once at the end, when
//! every counter is reported at least once, zeros included.

use std::io::Write;
use std::time::{Duration, Instant};

/// How often a running task reports its counters unless told otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// A fixed set of counters, addressed by index.
#[derive(Debug)]
pub struct Counters {
    names: &'static [(&'static str, &'static str)],
    values: Vec<u64>,
    reported: Vec<u64>,
    ever_reported: bool,
    interval: Duration,
    last: Instant,
}

impl Counters {
    /// Counters named `(group, name)`, reported at most every `interval`.
    pub fn new(names: &'static [(&'static str, &'static str)], interval: Duration) -> Counters {
        Counters {
            names,
            values: vec![0; names.len()],
            reported: vec![0; names.len()],
            ever_reported: false,
            interval,
            last: Instant::now(),
        }
    }

    /// Adds `n` to counter `i`.
    #[inline]
    pub fn add(&mut self, i: usize, n: u64) {
        self.values[i] += n;
    }

    /// The value of counter `i`.
    #[inline]
    pub fn get(&self, i: usize) -> u64 {
        self.values[i]
    }

    /// Reports the increases if the interval has passed since the last report.
    pub fn tick(&mut self, w: &mut impl Write) -> std::io::Result<()> {
        if self.last.elapsed() >= self.interval {
            self.report(w)?;
        }
        Ok(())
    }

    /// Reports every counter that grew since the last report (every counter, the first time).
    pub fn report(&mut self, w: &mut impl Write) -> std::io::Result<()> {
        let mut text = String::new();
        for (i, &(group, name)) in self.names.iter().enumerate() {
            let delta = self.values[i] - self.reported[i];
            if delta > 0 || !self.ever_reported {
                text.push_str(&format!("reporter:counter:{group},{name},{delta}\n"));
            }
        }
        self.reported.copy_from_slice(&self.values);
        self.ever_reported = true;
        self.last = Instant::now();
        // One write, so lines from a long report are not interleaved with other output.
        w.write_all(text.as_bytes())?;
        w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[(&str, &str)] = &[("g", "a"), ("g", "b"), ("h", "c")];

    #[test]
    fn reports_increments_and_all_counters_once() {
        let mut c = Counters::new(NAMES, Duration::from_secs(3600));
        let mut out = Vec::new();
        c.add(0, 5);
        c.report(&mut out).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            "reporter:counter:g,a,5\nreporter:counter:g,b,0\nreporter:counter:h,c,0\n"
        );
        out.clear();
        c.add(0, 2);
        c.add(2, 1);
        c.tick(&mut out).unwrap();
        assert!(out.is_empty(), "the interval has not passed");
        c.report(&mut out).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out),
            "reporter:counter:g,a,2\nreporter:counter:h,c,1\n"
        );
        out.clear();
        c.report(&mut out).unwrap();
        assert!(out.is_empty(), "nothing changed");
        assert_eq!((c.get(0), c.get(1), c.get(2)), (7, 0, 1));
    }

    #[test]
    fn tick_reports_when_due() {
        let mut c = Counters::new(NAMES, Duration::ZERO);
        let mut out = Vec::new();
        c.add(1, 3);
        c.tick(&mut out).unwrap();
        assert!(String::from_utf8_lossy(&out).contains("reporter:counter:g,b,3\n"));
    }
}
