//! The audit's mutation table and its soundness repeats, for `bench/trainer/audit.sh`: `trainer
//! audit` on purposely broken mechanisms (`trainer::audit::Mutation`, compiled only with the
//! `audit-mutations` feature, never in the shipped trainer), each with its accounted and
//! audited epsilon and whether the audit caught it; then correct full-batch runs at several
//! target epsilons and seeds, audited against accounted.
//!
//!     cargo run --release -p trainer --features audit-mutations --example audit_mutations -- \
//!         SHARDS [table|repeats|all]
//!
//! Settings (environment, with defaults): `CANARIES` (1000, at batch 256), `FULL_CANARIES`
//! (100000, at full batch), `SEEDS` (5), `EPSILONS` (2,4,8), `SEED` (1, the table's).

use trainer::audit::{self, AuditConfig, AuditReport, Mutation};
use trainer::{NoiseSpec, Privacy, TrainConfig};

/// The allocator the `trainer` binary uses.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FULL_BATCH: u32 = 1 << 22;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An audit of the default model at `batch` for `epochs` epochs, calibrated to `target`.
fn config(
    data: &shards::Location,
    batch: u32,
    epochs: u32,
    target: f64,
    canaries: usize,
    seed: u64,
) -> AuditConfig {
    let mut t = TrainConfig::new(data.clone());
    t.batch_size = batch;
    t.epochs = epochs;
    t.seed = Some(seed);
    t.attack_feature = None;
    t.quiet = true;
    t.progress = false;
    if let Privacy::Private(dp) = &mut t.privacy {
        dp.noise = NoiseSpec::TargetEpsilon(target);
    }
    let mut a = AuditConfig::new(t);
    a.canaries = canaries;
    a
}

fn row(setting: &str, name: &str, r: &AuditReport, seconds: f64) {
    let layout = r.layout.map_or("-".into(), |l| {
        format!(
            "{} / {} / {}",
            l.quiet_coordinates, l.code_width, l.score_window
        )
    });
    println!(
        "| {setting} | {name} | {:.2} | {:.2} ({}/{}) | {:.2} ({}/{}){} | {} | {} | {layout} | {:.1} |",
        r.accounted_epsilon,
        r.audited_epsilon,
        r.steinke.correct,
        r.steinke.guesses,
        r.fdp_epsilon,
        r.fdp.correct,
        r.fdp.guesses,
        if r.fdp_exact { "" } else { "*" },
        r.quiet_noise_ratio
            .map_or("-".into(), |x| format!("{x:.2}")),
        if r.caught { "**caught**" } else { "no" },
        seconds,
    );
}

fn timed(config: &AuditConfig) -> trainer::Result<(AuditReport, f64)> {
    let started = std::time::Instant::now();
    let r = audit::run(config)?;
    Ok((r, started.elapsed().as_secs_f64()))
}

fn main() -> trainer::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let data = shards::Location::parse(args.get(1).map_or("shards", String::as_str))?;
    let part = args.get(2).map_or("all", String::as_str);
    let canaries: usize = env("CANARIES", 1000);
    let full_canaries: usize = env("FULL_CANARIES", 100_000);
    let seed: u64 = env("SEED", 1);

    if part == "table" || part == "all" {
        println!(
            "| setting | mutation | accounted | Steinke (right/guesses) | f-DP (right/guesses) \
             | noise seen / told | caught | quiet coords / code / window | s |"
        );
        println!("| --- | --- | ---: | ---: | ---: | ---: | --- | --- | ---: |");
        let settings = [
            (
                format!("batch 256, 10 epochs, eps 1, {canaries} canaries"),
                config(&data, 256, 10, 1.0, canaries, seed),
            ),
            (
                format!("full batch, 20 steps, eps 2, {full_canaries} canaries"),
                config(&data, FULL_BATCH, 20, 2.0, full_canaries, seed),
            ),
        ];
        for (setting, base) in &settings {
            for (name, mutation) in Mutation::table() {
                let (r, s) = timed(&AuditConfig {
                    mutation,
                    ..base.clone()
                })?;
                row(setting, name, &r, s);
            }
        }
    }

    if part == "repeats" || part == "all" {
        let seeds: u64 = env("SEEDS", 5);
        let epsilons: Vec<f64> = std::env::var("EPSILONS")
            .unwrap_or_else(|_| "2,4,8".into())
            .split(',')
            .filter_map(|e| e.parse().ok())
            .collect();
        println!();
        println!(
            "| full batch, 20 steps, {full_canaries} canaries | seed | accounted | Steinke | \
             f-DP | f-DP / accounted | s |"
        );
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        for &eps in &epsilons {
            let (mut above_steinke, mut above_fdp, mut ratios) = (0, 0, Vec::new());
            for s in 0..seeds {
                let (r, secs) = timed(&config(&data, FULL_BATCH, 20, eps, full_canaries, s))?;
                above_steinke += usize::from(r.audited_epsilon > r.accounted_epsilon);
                above_fdp += usize::from(r.fdp_epsilon > r.accounted_epsilon);
                let ratio = r.fdp_epsilon / r.accounted_epsilon;
                ratios.push(ratio);
                println!(
                    "| target {eps} | {s} | {:.3} | {:.3} | {:.3} | {ratio:.2} | {secs:.1} |",
                    r.accounted_epsilon, r.audited_epsilon, r.fdp_epsilon
                );
            }
            let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let mean = ratios.iter().sum::<f64>() / ratios.len().max(1) as f64;
            println!(
                "| target {eps} | all {seeds} | | above accounted: {above_steinke} | above \
                 accounted: {above_fdp} | min {min:.2}, mean {mean:.2} | |"
            );
        }
    }
    Ok(())
}
