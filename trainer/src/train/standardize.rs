//! The feature spec's exchanges: what it found over every worker's share
//! ([`report_transform`]), and the standardized columns' noisy release ([`standardize`]).

use tch::Tensor;

use crate::Result;
use crate::config::NoiseRng;
use crate::data::Data;
use crate::features::Standardizer;
use crate::mechanism::noise::NoiseSource;

/// Tells the operator (stderr, worker 0) what the feature spec found over every worker's share:
/// records with a level outside a categorical column's spec, and columns used as they are that
/// hold values outside [0, 1] (which swamp the others, and with DP the clip bound). These are
/// exact statistics of the data, for the operator, not covered by epsilon: each line says so,
/// and none is written to the card.
pub(super) fn report_transform(
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

/// Releases the standardized columns' statistics (the sums over every worker's training
/// records, plus worker 0's Gaussian noise, handed to all) and standardizes both splits with
/// them; a resumed run uses the checkpoint's release instead. `None` without such columns.
/// `exchange(v, false)` sums `v` over the workers, `exchange(v, true)` hands worker 0's to all.
pub(super) fn standardize(
    data: &mut Data,
    noise_multiplier: Option<f64>,
    saved: Option<Standardizer>,
    lead: bool,
    noise_rng: NoiseRng,
    mut exchange: impl FnMut(&mut [f64], bool) -> Result<()>,
) -> Result<Option<Standardizer>> {
    let Some(sigma) = noise_multiplier else {
        return Ok(None);
    };
    let cols = data.transform.standardized.clone();
    let sensitivity = Standardizer::sensitivity(cols.len());
    let mut sums = data.transform.train_sums.clone();
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
    };
    let moments = st.unit_moments();
    data.train.standardize(&cols, &moments)?;
    data.test.standardize(&cols, &moments)?;
    Ok(Some(st))
}
