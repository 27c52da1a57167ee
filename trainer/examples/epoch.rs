//! Times one DP epoch of the step loop on synthetic in-memory data (960,000 rows of 9 binary
//! features, batch 256, clip 3, noise 0.9): wall time, and on-CPU time from the kernel's
//! scheduler statistics, which other processes on a busy machine do not inflate.
//!
//! Ten variants, interleaved in one run so they share the machine's load: the default (the
//! plain-Rust CPU step where it is chosen, gathering from the coded host rows, OS-keyed
//! AES-256-CTR noise, each value the sum of four Gaussian draws), the same keyed by a seed,
//! both with the libtorch step forced; the default on the ChaCha20 keystream (`OsChaCha`), and
//! with the plain host rows too (`OsToday`: the default of issue 26), ChaCha20 seeded with the
//! chosen and the libtorch step; and the seeded noise the trainer used before keys came from the
//! OS (ChaCha8, one draw per value, added outside the step) with the libtorch step (the reference
//! of issue 10) and with the step chosen now. It prints each round, then the best and median
//! on-CPU seconds of each against the reference, and how far the seeded models with the chosen
//! step end from the seeded models with the libtorch step (the same noise, so only the
//! arithmetic differs). `PROFILE=1` prints where the time goes; `MODES=os,ostch` runs only those
//! variants.
//!
//!     cargo run --release -p trainer --example epoch [rows] [batch] [hidden] [rounds]

use std::time::Instant;

use rand::{RngExt, SeedableRng};
use rand_chacha::{ChaCha8Rng, ChaCha20Rng};
use rand_distr::{Distribution, StandardNormal};
use tch::{Device, Tensor};
use trainer::config::{GradSample, NoiseRng};
use trainer::data::Examples;
use trainer::host_rows::HostRows;
use trainer::mechanism::batches::BatchQueue;
use trainer::mechanism::dp_step::{DpStep, StepPrivacy};
use trainer::mechanism::keystream::Cipher;
use trainer::mechanism::optim::{Optimizer, OptimizerKind};
use trainer::mechanism::sampler::PoissonSampler;
use trainer::metrics::thread_cpu_ns;
use trainer::mlp::{Mlp, Shape};
use trainer::profile::Profiler;

/// The allocator the `trainer` binary uses.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Noise {
    /// The default: `NoiseRng::Os`.
    Os,
    /// `NoiseRng::Seeded`.
    Seeded,
    /// `NoiseRng::Os` with the libtorch step even where the fused one is chosen.
    OsTch,
    /// `NoiseRng::Seeded` with the libtorch step.
    SeededTch,
    /// Before: ChaCha8 from the seed, one Gaussian draw per value, 64 steps drawn ahead, with
    /// the libtorch step (the reference).
    OldSeeded,
    /// [`Noise::OldSeeded`] with the step chosen now.
    OldSeededFused,
    /// [`Noise::Os`] on the ChaCha20 keystream.
    OsChaCha,
    /// [`Noise::OsChaCha`] gathering from the plain host rows: issue 26's default.
    OsToday,
    /// [`Noise::Seeded`] on the ChaCha20 keystream.
    SeededChaCha,
    /// [`Noise::SeededChaCha`] with the libtorch step.
    SeededChaChaTch,
}

fn main() -> trainer::Result<()> {
    let arg = |i: usize, d: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(d)
    };
    let (rows, batch, hidden, rounds) =
        (arg(1, 960_000), arg(2, 256) as u32, arg(3, 50), arg(4, 3));
    tch::set_num_threads(1);
    let _guard = tch::no_grad_guard();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let features: Vec<f32> = (0..rows * 9)
        .map(|_| f32::from(rng.random_bool(0.4)))
        .collect();
    let labels: Vec<f32> = (0..rows).map(|_| f32::from(rng.random_bool(0.5))).collect();
    let data = Examples::new(&features, &labels, 9, Device::Cpu)?;
    let host_rows = data.host_rows()?;
    let plain_rows = HostRows::plain(
        Vec::<f32>::try_from(data.rows().reshape([-1]))?,
        data.stride(),
    );
    println!(
        "host rows: {} ({} bytes; plain {} bytes)",
        if host_rows.coded() { "coded" } else { "plain" },
        host_rows.bytes(),
        plain_rows.bytes()
    );
    let shape = Shape::new(9, &[hidden]);
    let steps = trainer::steps_per_epoch(rows, batch);
    let mut prof = Profiler::new(std::env::var_os("PROFILE").is_some(), Device::Cpu);
    let modes = [
        Noise::OldSeeded,
        Noise::Os,
        Noise::Seeded,
        Noise::OsTch,
        Noise::SeededTch,
        Noise::OldSeededFused,
        Noise::OsChaCha,
        Noise::OsToday,
        Noise::SeededChaCha,
        Noise::SeededChaChaTch,
    ];
    let mut cpu_s: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut models: Vec<Option<Tensor>> = modes.iter().map(|_| None).collect();
    for round in 0..rounds {
        for (m, &mode) in modes.iter().enumerate() {
            if let Ok(only) = std::env::var("MODES")
                && !only
                    .split(',')
                    .any(|o| o.eq_ignore_ascii_case(&format!("{mode:?}")))
            {
                continue;
            }
            let mlp = Mlp::new(shape.clone(), 0, Device::Cpu)?;
            let old = matches!(mode, Noise::OldSeeded | Noise::OldSeededFused);
            let privacy = StepPrivacy::Private {
                clip: 3.0,
                noise_multiplier: if old { 0.0 } else { 0.9 },
                grad_sample: GradSample::Vectorized,
                noise_rng: if matches!(
                    mode,
                    Noise::Os | Noise::OsTch | Noise::OsChaCha | Noise::OsToday
                ) {
                    NoiseRng::Os
                } else {
                    NoiseRng::Seeded(0)
                },
            };
            let opt = Optimizer::new(OptimizerKind::Sgd, 0.01, shape.numel(), Device::Cpu);
            let mut step = DpStep::new(&shape, Device::Cpu, f64::from(batch), privacy, opt)?;
            if matches!(
                mode,
                Noise::OsChaCha | Noise::OsToday | Noise::SeededChaCha | Noise::SeededChaChaTch
            ) {
                step = step.noise_cipher(Cipher::ChaCha20)?;
            }
            let from = match mode {
                Noise::OsToday => &plain_rows,
                _ => &host_rows,
            };
            if matches!(
                mode,
                Noise::OldSeeded | Noise::OsTch | Noise::SeededTch | Noise::SeededChaChaTch
            ) {
                step.set_fused(false, &shape);
            }
            step.start_epoch(0);
            let mut old_noise = OldNoise::new(shape.numel(), 0.9 * 3.0 / f64::from(batch));
            let sampler = PoissonSampler::new(rows, batch, ChaCha20Rng::seed_from_u64(2))?;
            let mut batches = BatchQueue::new(sampler, Device::Cpu);
            let (t0, c0) = (Instant::now(), thread_cpu_ns());
            for s in 0..steps {
                prof.restart();
                batches.advance(steps - s);
                if step.fused() {
                    // As the trainer's steps do: the plain-Rust step gathers from host rows.
                    let idx = batches.batch_host();
                    prof.mark(trainer::profile::Phase::Sampling);
                    step.accumulate_gathered(&mlp, from, idx, &mut prof);
                } else {
                    let r = data.rows().index_select(0, &batches.batch());
                    prof.mark(trainer::profile::Phase::Sampling);
                    step.accumulate_rows(&mlp, data.width(), &r, &mut prof);
                }
                if old {
                    old_noise.add_to(step.grad());
                } else {
                    step.add_noise(&mut prof);
                }
                // As the trainer's steps do: the parameters stay on the host until the end.
                step.update_deferred(&mlp, &mut prof);
            }
            step.sync_model();
            let wall = t0.elapsed().as_secs_f64();
            let cpu = c0.zip(thread_cpu_ns()).map(|(a, b)| (b - a) as f64 * 1e-9);
            cpu_s[m].push(cpu.unwrap_or(wall));
            models[m] = Some(mlp.flat().copy());
            println!(
                "round {round} {mode:?}{}: {steps} steps in {wall:.3} s wall, {} on CPU; {:.1} \
                 us/step",
                if step.fused() { " (fused)" } else { "" },
                cpu.map_or("?".into(), |c| format!("{c:.3} s")),
                wall / steps as f64 * 1e6
            );
            if prof.enabled() {
                println!("{}", prof.take());
            }
        }
    }
    let stats = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        (v.first().copied(), v.get(v.len() / 2).copied())
    };
    let (ref_best, ref_median) = stats(&cpu_s[0]);
    println!("on-CPU seconds per epoch, best and median of {rounds} rounds, against old seeded:");
    for (m, mode) in modes.iter().enumerate() {
        let (Some(best), Some(median)) = stats(&cpu_s[m]) else {
            continue;
        };
        let against = |x: f64, r: Option<f64>| {
            r.map_or(String::new(), |r| {
                format!(" ({:+.1}%)", (x / r - 1.0) * 100.0)
            })
        };
        println!(
            "  {:<16} best {best:.3}{}  median {median:.3}{}",
            format!("{mode:?}"),
            against(best, ref_best),
            against(median, ref_median),
        );
    }
    for (what, a, b) in [("AES-256-CTR", 2, 4), ("ChaCha20", 8, 9)] {
        if let (Some(a), Some(b)) = (&models[a], &models[b]) {
            let diff = (a - b).abs().max().double_value(&[]);
            let size = b.abs().max().double_value(&[]);
            println!(
                "seeded model ({what}), step chosen now against the libtorch step: max \
                 |difference| {diff:.2e} (largest parameter {size:.3}, relative {:.2e})",
                diff / size
            );
        }
    }
    Ok(())
}

/// The trainer's seeded noise before keys came from the OS.
struct OldNoise {
    rng: ChaCha8Rng,
    std: f64,
    host: Vec<f32>,
    block: Tensor,
    numel: usize,
    next: usize,
}

impl OldNoise {
    fn new(numel: usize, std: f64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        rng.set_stream(0);
        OldNoise {
            rng,
            std,
            host: vec![0.0; 64 * numel],
            block: Tensor::zeros([0], (tch::Kind::Float, Device::Cpu)),
            numel,
            next: 64,
        }
    }

    fn add_to(&mut self, grad: &Tensor) {
        if self.next == 64 {
            for v in self.host.iter_mut() {
                let z: f64 = StandardNormal.sample(&mut self.rng);
                *v = (z * self.std) as f32;
            }
            self.block = Tensor::from_slice(&self.host).view([64, self.numel as i64]);
            self.next = 0;
        }
        let _ = grad
            .shallow_clone()
            .g_add_(&self.block.select(0, self.next as i64));
        self.next += 1;
    }
}
