//! The record's path from the shards to the step, one stage after another. `train_worker`
//! calls each stage once, in this order, and a record goes nowhere else:
//!
//! 1. [`load`]: this worker's share of the shards, read, each unit bounded to its rows, the
//!    feature spec's public part applied (levels, public bounds) and split by each record's
//!    content key ([`Data::load_share`]); an audit's canaries inserted;
//! 2. [`declare`]: the releases the transform will make (DP quantile bounds, the standardized
//!    columns' Gaussian), from public facts alone, so the accountant composes them with the
//!    steps before any is drawn;
//! 3. [`transform`]: what the spec found, told the operator (exact counts, not covered by
//!    epsilon, never in the card); the DP quantile bounds of the columns without public ones;
//!    their clip; the standardized columns' noisy release; both splits standardized with it. A
//!    resumed run takes the checkpoint's releases instead of drawing new ones;
//! 4. [`batches`]: the training rows as the step reads them: each record's microbatch (by its
//!    key), or the host rows the fused CPU step gathers its batches from.

use std::sync::Mutex;

use tch::Tensor;

use super::held_out;
use super::loaded::Loaded;
use super::lock;
use super::peers::Peers;
use crate::audit::canary::Canaries;
use crate::config::{NoiseRng, TrainConfig};
use crate::data::Data;
use crate::evaluate::Distinct;
use crate::features::{ColumnSpec, FeatureSpec, StandardizedRange, Standardizer, bounded_wide};
use crate::host_rows::HostRows;
use crate::mechanism::dp_step::microbatch_of;
use crate::mechanism::noise::NoiseSource;
use crate::mechanism::privacy::Preprocessing;
use crate::mechanism::quantiles::{self, QuantileSpec, ReleasedBounds};
use crate::{Error, Result};

/// Stage 1: worker `me`'s share of the shards (of `workers`), on `device`: from `loaded` when
/// given; with an audit's canaries inserted. Also the number of gradient canaries, sampled as
/// rows numbered after the share's.
pub(super) fn load(
    config: &TrainConfig,
    me: usize,
    workers: usize,
    device: tch::Device,
    loaded: Option<&Loaded>,
    canaries: Option<&Mutex<Canaries>>,
) -> Result<(Data, usize)> {
    let mut data = match loaded {
        Some(loaded) => loaded.share(me)?,
        None => Data::load_share(&config.data_spec(), me, workers, device)?,
    };
    if canaries.is_some() && !data.transform.standardized.is_empty() {
        // Its input canaries are crafted model inputs, appended before the release is drawn:
        // standardizing would move them.
        return Err(Error::Config(
            "trainer audit does not take --standardize: give those columns public bounds \
             (--feature-bounds) instead"
                .into(),
        ));
    }
    // An audit's input canaries are rows appended to the training set; its gradient canaries
    // are sampled as rows numbered after them (`extra`), with no features.
    let extra = match canaries {
        Some(c) => lock(c).insert(&mut data)?,
        None => 0,
    };
    Ok((data, extra))
}

/// What stage 3 will release, declared before any step.
#[derive(Debug, Clone, Copy)]
pub(super) struct Declared {
    /// The releases, for the accountant.
    pub preprocessing: Preprocessing,
    /// The most training rows one unit holds (the releases' sensitivity grows with it).
    pub rows_per_unit: u32,
}

/// Stage 2: the transform's releases on `data` (this worker's share; which columns each release
/// covers is the same on every worker: the spec and the columns are public): two exponential
/// mechanisms per column bounded by DP quantiles, and the standardized columns' Gaussian
/// (declared whenever a column may need it).
pub(super) fn declare(config: &TrainConfig, data: &Data) -> Result<Declared> {
    let bounded = data.transform.bounded.len() as u32;
    let preprocessing = Preprocessing {
        gaussian: config.features.gaussian_release(&data.feature_names),
        quantiles: config
            .features
            .auto_bounds
            .filter(|_| bounded > 0)
            .map(|q| (q.epsilon, 2 * bounded)),
    };
    let rows_per_unit = match preprocessing {
        Preprocessing {
            gaussian: None,
            quantiles: None,
        } => 1,
        _ => held_out::rows_per_unit(
            data.units.as_ref(),
            "the feature transform's releases (DP quantile bounds, standardization)",
            "--feature-spec with public bounds for every column",
        )?,
    };
    Ok(Declared {
        preprocessing,
        rows_per_unit,
    })
}

/// Stage 3's releases: the DP quantile bounds (empty without such columns) and the
/// standardization (`None` without one).
#[derive(Debug, Default)]
pub(super) struct Released {
    pub bounds: Vec<ReleasedBounds>,
    pub standardizer: Option<Standardizer>,
}

/// Stage 3: reports what the spec found ([`report_transform`]), releases the DP quantile bounds
/// ([`release_bounds`]), clips to them and standardizes ([`standardize`]), every worker in step;
/// `saved` is a resumed run's checkpoint's releases (worker 0's), used instead of new draws.
pub(super) fn transform(
    data: &mut Data,
    config: &TrainConfig,
    declared: Declared,
    saved: Released,
    noise_rng: NoiseRng,
    peers: &mut Peers,
) -> Result<Released> {
    let lead = peers.lead();
    report_transform(data, lead, |v| peers.sum_counts(v))?;
    let saved_bounds = (!saved.bounds.is_empty()).then_some(saved.bounds);
    let bounds = release_bounds(
        data,
        config.features.auto_bounds,
        declared.rows_per_unit,
        saved_bounds,
        noise_rng,
        peers,
    )?;
    let standardizer = standardize(
        data,
        &config.features,
        declared.preprocessing.gaussian,
        &bounds,
        declared.rows_per_unit,
        saved.standardizer,
        lead,
        noise_rng,
        |v, broadcast| match broadcast {
            false => peers.sum_totals(v),
            true => peers.broadcast_totals(v),
        },
    )?;
    Ok(Released {
        bounds,
        standardizer,
    })
}

/// Stage 4's rows, as the step reads them, and as the evaluation does.
pub(super) struct Batches {
    /// With microbatches, each training record's microbatch, by its key.
    pub microbatches: Option<Tensor>,
    /// The fused CPU step's host copy of the training rows.
    pub host_rows: Option<HostRows>,
    /// Each split's distinct rows, each evaluated once an epoch (`None` where too many).
    pub distinct: Evaluated,
}

/// The training and the held-out split's distinct rows, for [`crate::evaluate::totals_of`].
#[derive(Debug, Default)]
pub(super) struct Evaluated {
    pub train: Option<Distinct>,
    pub test: Option<Distinct>,
}

/// Stage 4: with `microbatches` groups, each training record's group by its key (on
/// `device`); without, and with the fused step on the CPU, the host rows it gathers from; and
/// each split's distinct rows for the evaluation.
pub(super) fn batches(
    data: &Data,
    microbatches: usize,
    fused: bool,
    device: tch::Device,
) -> Result<Batches> {
    let microbatches = (microbatches > 0).then(|| {
        let ids: Vec<i64> = data
            .train_keys
            .iter()
            .map(|&k| microbatch_of(k, microbatches))
            .collect();
        Tensor::from_slice(&ids).to_device(device)
    });
    let host_rows = (device == tch::Device::Cpu && fused && microbatches.is_none())
        .then(|| data.train.host_rows())
        .transpose()?;
    let distinct = Evaluated {
        train: match &host_rows {
            Some(host) => Distinct::from_host(host, &data.train)?,
            None => Distinct::of(&data.train)?,
        },
        test: Distinct::of(&data.test)?,
    };
    // Whatever is not served from the host rows or the distinct rows is served from the row
    // tensors: made here, so a failure to allocate them is an error, not a panic later.
    if host_rows.is_none() || distinct.train.is_none() {
        data.train.materialize()?;
    }
    if distinct.test.is_none() {
        data.test.materialize()?;
    }
    Ok(Batches {
        microbatches,
        host_rows,
        distinct,
    })
}

/// Tells the operator (stderr, worker 0) what the feature spec found over every worker's share:
/// records with a level outside a categorical column's spec, and columns used as they are that
/// hold values outside [0, 1] (which swamp the others, and with DP the clip bound). These are
/// exact statistics of the data, for the operator, not covered by epsilon: each line says so,
/// and none is written to the card.
fn report_transform(
    data: &Data,
    lead: bool,
    sum: impl FnOnce(&mut [u64]) -> Result<()>,
) -> Result<()> {
    let t = &data.transform;
    let mut v: Vec<u64> = t
        .unknown
        .iter()
        .map(|u| u.2)
        .chain(t.raw_out_of_range.iter().map(|r| u64::from(r.1)))
        .collect();
    sum(&mut v)?;
    if !lead {
        return Ok(());
    }
    let (unknown, raw) = v.split_at(t.unknown.len());
    for ((name, policy, _), &count) in t.unknown.iter().zip(unknown) {
        if count > 0 {
            eprintln!(
                "trainer: {count} record(s) have a value of '{name}' outside its levels (not \
                 private: a count of the data's records, not covered by epsilon): {}",
                match policy {
                    crate::features::Unknown::Drop => "dropped (not trained or tested on)",
                    crate::features::Unknown::Other => "encoded as {name}=other",
                }
            );
        }
    }
    let wide: Vec<&str> = t
        .raw_out_of_range
        .iter()
        .zip(raw)
        .filter(|(_, n)| **n > 0)
        .map(|((name, _), _)| name.as_str())
        .collect();
    if !wide.is_empty() {
        eprintln!(
            "trainer: warning: feature(s) {} have values outside [0, 1] (not private: a fact \
             about the data's records, not covered by epsilon) and are used as they are: give \
             them public bounds (--feature-bounds NAME=LO:HI), levels \
             (--feature-categories) or a range to standardize in (--standardize NAME=LO:HI)",
            wide.join(", ")
        );
    }
    Ok(())
}

/// Releases the bounds of the columns bounded by DP quantiles (each worker's counts of its
/// training values on the public grid, summed; worker 0 draws the exponential mechanisms and
/// hands the bounds to all); a resumed run uses the checkpoint's release instead. Empty without
/// such columns.
fn release_bounds(
    data: &Data,
    spec: Option<QuantileSpec>,
    rows_per_unit: u32,
    saved: Option<Vec<ReleasedBounds>>,
    rng: NoiseRng,
    peers: &mut Peers,
) -> Result<Vec<ReleasedBounds>> {
    let lead = peers.lead();
    let t = &data.transform;
    let Some(spec) = spec.filter(|_| !t.bounded.is_empty()) else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = t
        .bounded
        .iter()
        .map(|&j| data.feature_names[j].clone())
        .collect();
    let per = t.bound_counts.first().map_or(0, Vec::len);
    let mut counts: Vec<u64> = t.bound_counts.iter().flatten().copied().collect();
    peers.sum_counts(&mut counts)?;
    let mut values = vec![0.0f64; 2 * names.len()];
    if lead {
        let same = |s: &Vec<ReleasedBounds>| {
            s.len() == names.len() && s.iter().zip(&names).all(|(b, n)| b.name == *n)
        };
        let released = match saved {
            Some(s) if same(&s) => s,
            _ => {
                let per_column: Vec<Vec<u64>> =
                    counts.chunks_exact(per).map(<[u64]>::to_vec).collect();
                quantiles::release(
                    &names,
                    &per_column,
                    spec,
                    rows_per_unit,
                    &mut quantiles::rng(rng)?,
                )
            }
        };
        for (v, b) in values.chunks_exact_mut(2).zip(&released) {
            v.copy_from_slice(&[b.lo, b.hi]);
        }
    }
    peers.broadcast_totals(&mut values)?;
    Ok(names
        .into_iter()
        .zip(values.chunks_exact(2))
        .map(|(name, v)| ReleasedBounds {
            name,
            lo: v[0],
            hi: v[1],
        })
        .collect())
}

/// Clips the columns `bounds` does not use as they are to their released bounds (onto
/// [-1, 1]), then releases the standardized columns' statistics (the spec's, then those; the
/// sums over every worker's training records, plus worker 0's Gaussian noise, handed to all)
/// and standardizes both splits with them; a resumed run uses the checkpoint's release instead.
/// `None` when the run declared no such release (`sigma`, its noise multiplier, is `None`).
/// `exchange(v, false)` sums `v` over the workers, `exchange(v, true)` hands worker 0's to all.
#[allow(clippy::too_many_arguments)]
fn standardize(
    data: &mut Data,
    spec: &FeatureSpec,
    sigma: Option<f64>,
    bounds: &[ReleasedBounds],
    rows_per_unit: u32,
    saved: Option<Standardizer>,
    lead: bool,
    noise_rng: NoiseRng,
    mut exchange: impl FnMut(&mut [f64], bool) -> Result<()>,
) -> Result<Option<Standardizer>> {
    let Some(sigma) = sigma else {
        return Ok(None);
    };
    let wide = bounded_wide(&data.feature_names, &data.transform.bounded, bounds)?;
    data.train.to_unit(&wide)?;
    data.test.to_unit(&wide)?;
    let spec_cols = data.transform.standardized.clone();
    let cols: Vec<usize> = spec_cols
        .iter()
        .copied()
        .chain(wide.iter().map(|w| w.0))
        .collect();
    let columns: Vec<StandardizedRange> = spec_cols
        .iter()
        .map(|&j| {
            let name = &data.feature_names[j];
            let (lo, hi) = match spec.columns.get(name) {
                Some(ColumnSpec::Standardize { lo, hi }) => (*lo, *hi),
                _ => unreachable!("a standardized column has a standardize spec"),
            };
            StandardizedRange {
                name: name.clone(),
                lo,
                hi,
            }
        })
        .chain(wide.iter().map(|&(j, lo, hi)| StandardizedRange {
            name: data.feature_names[j].clone(),
            lo,
            hi,
        }))
        .collect();
    let sensitivity = Standardizer::sensitivity(cols.len(), rows_per_unit);
    // (n, sums, sums of squares) in `cols` order: the spec's columns' from the host sums, the
    // bounded ones' from the clipped tensor.
    let (a, b) = (spec_cols.len(), wide.len());
    let host = if data.transform.train_sums.is_empty() {
        vec![data.train.len() as f64]
    } else {
        data.transform.train_sums.clone()
    };
    let extra = data.train.column_sums(&cols[a..])?;
    let mut sums = Vec::with_capacity(1 + 2 * (a + b));
    sums.push(host[0]);
    sums.extend_from_slice(&host[1..1 + a]);
    sums.extend_from_slice(&extra[..b]);
    sums.extend_from_slice(&host[1 + a..]);
    sums.extend_from_slice(&extra[b..]);
    exchange(&mut sums, false)?;
    if lead {
        match saved {
            Some(s) if s.noisy_sums.len() == sums.len() => sums = s.noisy_sums,
            _ => {
                let noise =
                    Tensor::zeros([sums.len() as i64], (tch::Kind::Float, tch::Device::Cpu));
                let mut source =
                    NoiseSource::new(noise_rng, sums.len(), sigma * sensitivity, tch::Device::Cpu)?;
                // A stream no epoch's step noise uses.
                source.start_epoch(u32::MAX);
                source.add_to(&noise);
                let noise = Vec::<f32>::try_from(&noise)?;
                for (s, z) in sums.iter_mut().zip(noise) {
                    *s += f64::from(z);
                }
            }
        }
    } else {
        sums.fill(0.0);
    }
    exchange(&mut sums, true)?;
    let st = Standardizer {
        noise_multiplier: sigma,
        sensitivity,
        noisy_sums: sums,
        columns,
    };
    let moments = st.unit_moments();
    data.train.standardize(&cols, &moments)?;
    data.test.standardize(&cols, &moments)?;
    Ok(Some(st))
}
