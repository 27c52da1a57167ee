//! Times one DP epoch of the step loop on synthetic in-memory data (960,000 rows of 9 binary
//! features, batch 256, clip 3, noise 0.9): wall time, and on-CPU time from the kernel's
//! scheduler statistics, which other processes on a busy machine do not inflate.
//!
//!     cargo run --release -p trainer --example epoch [rows] [batch] [hidden]

use std::time::Instant;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tch::Device;
use trainer::batches::BatchQueue;
use trainer::config::{GradSample, NoiseRng};
use trainer::data::Examples;
use trainer::dp_step::{DpStep, StepPrivacy};
use trainer::metrics::thread_cpu_ns;
use trainer::mlp::{Mlp, Shape};
use trainer::optim::{Optimizer, OptimizerKind};
use trainer::profile::Profiler;
use trainer::sampler::PoissonSampler;

/// The allocator the `trainer` binary uses.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> trainer::Result<()> {
    let arg = |i: usize, d: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(d)
    };
    let (rows, batch, hidden) = (arg(1, 960_000), arg(2, 256) as u32, arg(3, 50));
    tch::set_num_threads(1);
    let _guard = tch::no_grad_guard();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let features: Vec<f32> = (0..rows * 9)
        .map(|_| f32::from(rng.random_bool(0.4)))
        .collect();
    let labels: Vec<f32> = (0..rows).map(|_| f32::from(rng.random_bool(0.5))).collect();
    let data = Examples::new(&features, &labels, 9, Device::Cpu)?;
    let shape = Shape::new(9, &[hidden]);
    let mlp = Mlp::new(shape.clone(), 0, Device::Cpu)?;
    let privacy = StepPrivacy::Private {
        clip: 3.0,
        noise_multiplier: 0.9,
        grad_sample: GradSample::Vectorized,
        noise_rng: NoiseRng::Seeded,
    };
    let opt = Optimizer::new(OptimizerKind::Sgd, 0.01, shape.numel(), Device::Cpu);
    let mut step = DpStep::new(&shape, Device::Cpu, f64::from(batch), privacy, opt, 0)?;
    let sampler = PoissonSampler::new(rows, batch, ChaCha20Rng::seed_from_u64(2))?;
    let mut batches = BatchQueue::new(sampler, Device::Cpu);
    let steps = trainer::steps_per_epoch(rows, batch);
    let mut prof = Profiler::new(std::env::var_os("PROFILE").is_some(), Device::Cpu);
    for round in 0..2 {
        let (t0, c0) = (Instant::now(), thread_cpu_ns());
        for s in 0..steps {
            prof.restart();
            let idx = batches.next_batch(steps - s);
            let r = data.rows().index_select(0, &idx);
            prof.mark(trainer::profile::Phase::Sampling);
            step.step(
                &mlp,
                &data.inputs(&r),
                &data.labels(&r),
                &data.input_norms(&r),
                &mut prof,
            );
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = match (c0, thread_cpu_ns()) {
            (Some(a), Some(b)) => format!("{:.3} s on CPU", (b - a) as f64 * 1e-9),
            _ => "CPU time unknown".into(),
        };
        println!(
            "round {round}: {steps} steps in {wall:.3} s wall, {cpu}; {:.1} us/step",
            wall / steps as f64 * 1e6
        );
        if prof.enabled() {
            println!("{}", prof.take());
        }
    }
    Ok(())
}
