//! `--profile`: where an epoch's time goes, phase by phase (the seed's cProfile run).

use std::fmt;
use std::time::{Duration, Instant};

use crate::device::synchronize;

/// The phases of a step and of an epoch's evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Drawing the Poisson sample and gathering its rows on the device.
    Sampling,
    /// The forward pass and the closed-form backward pass.
    ForwardBackward,
    /// Per-example norms, clip factors and the clipped sum.
    Clipping,
    /// Drawing and adding the Gaussian noise.
    Noise,
    /// Summing the workers' gradients (data-parallel runs).
    AllReduce,
    /// The optimizer's update.
    Step,
    /// Loss, accuracy and the attack after the epoch.
    Evaluation,
}

const PHASES: [Phase; 7] = [
    Phase::Sampling,
    Phase::ForwardBackward,
    Phase::Clipping,
    Phase::Noise,
    Phase::AllReduce,
    Phase::Step,
    Phase::Evaluation,
];

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Sampling => "sampling",
            Phase::ForwardBackward => "forward+backward",
            Phase::Clipping => "clipping",
            Phase::Noise => "noise",
            Phase::AllReduce => "all-reduce",
            Phase::Step => "optimizer step",
            Phase::Evaluation => "evaluation",
        }
    }
}

/// Accumulates time per phase. Disabled, every call is a branch and nothing more; enabled,
/// each mark waits for the device so GPU time lands in the right phase.
#[derive(Debug)]
pub struct Profiler {
    device: Option<tch::Device>,
    last: Instant,
    totals: [Duration; PHASES.len()],
}

impl Profiler {
    /// A profiler that records when `enabled`.
    pub fn new(enabled: bool, device: tch::Device) -> Self {
        Profiler {
            device: enabled.then_some(device),
            last: Instant::now(),
            totals: Default::default(),
        }
    }

    /// Starts timing from now (e.g. at the start of a step).
    #[inline]
    pub fn restart(&mut self) {
        if self.device.is_some() {
            self.last = Instant::now();
        }
    }

    /// Charges the time since the last mark to `phase`.
    #[inline]
    pub fn mark(&mut self, phase: Phase) {
        if let Some(device) = self.device {
            synchronize(device);
            let now = Instant::now();
            let i = PHASES
                .iter()
                .position(|&p| p == phase)
                .expect("every phase is listed");
            self.totals[i] += now - self.last;
            self.last = now;
        }
    }

    /// Whether it records anything.
    pub fn enabled(&self) -> bool {
        self.device.is_some()
    }

    /// The totals so far, then zeroes them.
    pub fn take(&mut self) -> PhaseTimes {
        PhaseTimes(std::mem::take(&mut self.totals))
    }
}

/// Time per phase over an epoch.
#[derive(Debug, Clone, Default)]
pub struct PhaseTimes([Duration; PHASES.len()]);

impl PhaseTimes {
    /// `(phase name, seconds)` pairs.
    pub fn seconds(&self) -> Vec<(&'static str, f64)> {
        PHASES
            .iter()
            .zip(&self.0)
            .map(|(p, d)| (p.name(), d.as_secs_f64()))
            .collect()
    }
}

impl fmt::Display for PhaseTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: f64 = self.0.iter().map(Duration::as_secs_f64).sum();
        for (name, s) in self.seconds() {
            let share = if total > 0.0 { 100.0 * s / total } else { 0.0 };
            writeln!(f, "  {name:<17} {s:>9.4} s  {share:>5.1}%")?;
        }
        write!(f, "  {:<17} {total:>9.4} s", "total")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_time_to_phases_only_when_enabled() {
        let mut p = Profiler::new(true, tch::Device::Cpu);
        p.restart();
        std::thread::sleep(Duration::from_millis(5));
        p.mark(Phase::Noise);
        let t = p.take();
        let noise = t.seconds().iter().find(|(n, _)| *n == "noise").unwrap().1;
        assert!(noise >= 0.004, "{noise}");
        assert!(t.to_string().contains("total"));
        let mut off = Profiler::new(false, tch::Device::Cpu);
        off.mark(Phase::Noise);
        assert!(off.take().seconds().iter().all(|(_, s)| *s == 0.0));
    }
}
