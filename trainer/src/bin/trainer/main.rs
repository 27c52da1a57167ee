//! `trainer`: DP-SGD on the shards (`trainer [OPTIONS]`), or privacy planning
//! (`trainer privacy ...`), a run's page (`trainer report RUN`), or the privacy-utility curve
//! (`trainer sweep`). Parses flags, builds the config, calls the library.

mod args;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use cluster::{Children, Watch};

use args::{AuditArgs, Cli, Command, Launch, PrivacyArgs, PrivacyQuery, SweepArgs, TuneArgs};

/// mimalloc for Rust and, through its `override` feature, for libtorch's allocations too.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Privacy(p)) => privacy(p),
        Some(Command::Report(r)) => report(r.into()),
        Some(Command::Sweep(s)) => sweep(*s),
        Some(Command::Audit(a)) => audit(*a),
        Some(Command::Tune(t)) => tune(*t),
        None => train(cli.train),
    };
    let ok = match result {
        Ok(()) => true,
        Err(e) => {
            eprintln!("trainer: error: {e:#}");
            false
        }
    };
    end(ok)
}

/// Ends the process, successfully or not, without running libtorch's static destructors.
///
/// Returning from `main` runs them (C++ `atexit` handlers): libtorch unregisters its thousands
/// of operators one by one, 0.05-0.15 s of CPU at the end of every run, about an epoch of
/// training on the census. `_exit` would skip them, but it is `unsafe` in Rust, which this
/// workspace forbids; replacing the process image (`exec`, safe) skips them too. So the
/// process becomes `/bin/true` (or `/bin/false`), which ends at once with the same status.
/// By now everything is written: outputs are published (synced and renamed) before `main`'s
/// work returns, child processes have been waited for, stderr is unbuffered, and stdout is
/// flushed here. Where stdout cannot be flushed, under a coverage build (its counters are
/// written at exit) or where the `exec` fails, `main` returns as usual.
fn end(ok: bool) -> ExitCode {
    use std::os::unix::process::CommandExt;
    let code = if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if std::io::stdout().flush().is_err() || std::env::var_os("LLVM_PROFILE_FILE").is_some() {
        return code;
    }
    let program = if ok { "/bin/true" } else { "/bin/false" };
    let _ = std::process::Command::new(program).exec();
    code
}

fn train(args: args::TrainArgs) -> anyhow::Result<()> {
    let Launch { config, spawn } = Launch::try_from(args)?;
    // `--workers W` without a hostfile: this is process 0 and starts the others here, as
    // `pipeline` does; if one of them fails, the watchdog stops the run and names it.
    let children = Children::start_this_program(
        spawn,
        std::env::args_os().skip(1),
        Watch {
            on_failure: Box::new(|| true),
            stop: Box::new(stop_run),
        },
    )?;
    let result = trainer::run(&config).with_context(|| match config.cluster.processes() {
        1 => format!("training on {}", config.data),
        n => format!(
            "training on {} (process {} of {n})",
            config.data,
            config.cluster.process()
        ),
    });
    let (_, children) = cluster::local::finish(children, result)?;
    Ok(children?)
}

/// A process this one started failed before the run was done (its others are killed by
/// now): end this one too, as its workers would wait for the dead process.
fn stop_run(e: cluster::Error) {
    eprintln!("error: {e}");
    std::process::exit(1);
}

fn report(config: trainer::report::ReportConfig) -> anyhow::Result<()> {
    let bytes = trainer::report::report(&config)
        .with_context(|| format!("reporting on {}", config.run.display()))?;
    println!("wrote {} ({bytes} bytes)", config.out.display());
    Ok(())
}

fn sweep(args: SweepArgs) -> anyhow::Result<()> {
    let config = trainer::sweep::SweepConfig::try_from(args)?;
    // A closed stdout (`trainer sweep | head -1`) ends the printing, not the sweep: every line
    // is in runs.jsonl too.
    let done = trainer::sweep::sweep(&config, |run| {
        let line = serde_json::to_string(run).expect("a sweep run serializes");
        let _ = writeln!(std::io::stdout(), "{line}");
    })
    .with_context(|| format!("sweep on {}", config.base.data))?;
    eprintln!(
        "{} runs: {} and {}",
        done.runs.len(),
        config.runs_path().display(),
        config.page_path().display()
    );
    Ok(())
}

fn tune(args: TuneArgs) -> anyhow::Result<()> {
    let config = trainer::tune::TuneConfig::try_from(args)?;
    let done = trainer::tune::tune(&config, |run| {
        let c = &run.candidate;
        let _ = writeln!(
            std::io::stdout(),
            "run {}: lr {} clip {} epochs {} (noise {:.4})  score (noisy held-out accuracy) \
             {:.4}  | not released (only the best run is), exact: test accuracy {}",
            run.run,
            c.lr,
            c.l2_norm_clip,
            c.epochs,
            c.noise_multiplier,
            run.score,
            run.test_accuracy
                .map_or("-".to_string(), |a| format!("{a:.4}"))
        );
    })
    .with_context(|| format!("tune on {}", config.base.data))?;
    let plan = &done.plan;
    println!(
        "tune: {} grid points, each run {:.4} (rdp); the number of runs drawn from the {} \
         distribution",
        plan.candidates.len(),
        plan.run_epsilon,
        trainer::tune::describe(plan.runs)
    );
    match done.best {
        Some(i) => {
            let best = &done.runs[i];
            let c = &best.candidate;
            println!(
                "released {}: the best of the runs, lr {} clip {} epochs {}: released test \
                 accuracy {:.4} (noisy, covered)  | not released: {} runs, exact test accuracy \
                 {} against a majority share of {:.4}",
                config.out.join("model.safetensors").display(),
                c.lr,
                c.l2_norm_clip,
                c.epochs,
                best.score,
                done.runs.len(),
                best.test_accuracy
                    .map_or("-".to_string(), |a| format!("{a:.4}")),
                done.majority
            );
        }
        None => println!(
            "no run was drawn (the Poisson distribution drew 0): nothing is released, and the \
             budget is spent all the same"
        ),
    }
    println!("privacy spent: {} for the whole search", done.spent);
    Ok(())
}

fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let config = trainer::audit::AuditConfig::try_from(args)?;
    let report = trainer::audit::run(&config)
        .with_context(|| format!("auditing on {}", config.train.data))?;
    println!("{}", report.summary());
    println!(
        "{}",
        serde_json::to_string(&report).context("the report serializes")?
    );
    Ok(())
}

fn privacy(args: PrivacyArgs) -> anyhow::Result<()> {
    let q = PrivacyQuery::try_from(args)?;
    match q.noise_multiplier {
        Some(sigma) => {
            let spent = trainer::mechanism::privacy::epsilon(
                q.accountant,
                q.rate,
                sigma,
                q.steps,
                q.delta,
            )?;
            print_spent(&spent, sigma, &q);
        }
        None => {
            let target = q.target_epsilon.expect("clap requires one of the two");
            let sigma = trainer::mechanism::privacy::noise_for_target(
                q.accountant,
                q.rate,
                target,
                q.steps,
                q.delta,
            )?;
            let spent = trainer::mechanism::privacy::epsilon(
                q.accountant,
                q.rate,
                sigma,
                q.steps,
                q.delta,
            )?;
            print_spent(&spent, sigma, &q);
        }
    }
    Ok(())
}

fn print_spent(spent: &accountant::PrivacySpent, sigma: f64, q: &PrivacyQuery) {
    println!("sampling_rate = {}", q.rate);
    println!("steps = {}", q.steps);
    println!("noise_multiplier = {sigma}");
    println!("epsilon = {}", spent.epsilon);
    println!("delta = {}", spent.delta);
    println!("accountant = {}", spent.accountant);
    if let Some(order) = spent.rdp_order {
        println!("rdp_order = {order}");
    }
}
