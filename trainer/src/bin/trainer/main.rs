//! `trainer`: DP-SGD on the shards (`trainer [OPTIONS]`), or privacy planning
//! (`trainer privacy ...`). Parses flags, builds the config, calls the library.

mod args;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use args::{Cli, Command, PrivacyArgs, PrivacyQuery};

/// mimalloc for Rust and, through its `override` feature, for libtorch's allocations too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Privacy(p)) => privacy(p),
        None => train(cli.train),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trainer: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn train(args: args::TrainArgs) -> anyhow::Result<()> {
    let config = trainer::TrainConfig::try_from(args)?;
    trainer::run(&config).with_context(|| format!("training on {}", config.data))?;
    Ok(())
}

fn privacy(args: PrivacyArgs) -> anyhow::Result<()> {
    let q = PrivacyQuery::try_from(args)?;
    match q.noise_multiplier {
        Some(sigma) => {
            let spent = trainer::privacy::epsilon(q.accountant, q.rate, sigma, q.steps, q.delta)?;
            print_spent(&spent, sigma, &q);
        }
        None => {
            let target = q.target_epsilon.expect("clap requires one of the two");
            let sigma =
                trainer::privacy::noise_for_target(q.accountant, q.rate, target, q.steps, q.delta)?;
            let spent = trainer::privacy::epsilon(q.accountant, q.rate, sigma, q.steps, q.delta)?;
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
