//! `trainer privacy`: prints the accountant's epsilon, and a target epsilon round trips.

mod common;

use common::{fails, ok, trainer, value};

/// The golden values the accountant crate pins, as `trainer privacy` prints them.
#[test]
fn prints_the_pinned_rdp_values() {
    let dir = tempfile::tempdir().unwrap();
    for (q, sigma, steps, want, order) in [
        ("0.04", "1.5", "2250", 7.32911117143, None),
        (
            "0.0002666666666666667",
            "0.9",
            "3750",
            0.677169183680730,
            Some(13.0),
        ),
    ] {
        let out = ok(&trainer(
            dir.path(),
            &[
                "privacy",
                "--sampling-rate",
                q,
                "--noise-multiplier",
                sigma,
                "--steps",
                steps,
                "--delta",
                "1e-5",
                "--accountant",
                "rdp",
            ],
        ));
        let eps = value(&out, "epsilon");
        assert!((eps / want - 1.0).abs() < 1e-6, "q {q}: {eps} vs {want}");
        assert_eq!(value(&out, "delta"), 1e-5);
        assert!(out.contains("accountant = rdp"), "{out}");
        if let Some(order) = order {
            assert_eq!(value(&out, "rdp_order"), order);
        }
    }
}

/// PLD (the default) prints dp_accounting's value for the seed's epoch, below RDP's.
#[test]
fn pld_is_the_default_and_tighter() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&trainer(
        dir.path(),
        &[
            "privacy",
            "--sampling-rate",
            "0.0002666666666666667",
            "--noise-multiplier",
            "0.9",
            "--steps",
            "3750",
        ],
    ));
    assert!(out.contains("accountant = pld"), "{out}");
    let eps = value(&out, "epsilon");
    assert!((eps - 0.0842195).abs() < 1e-6, "{eps}");
}

/// The noise multiplier printed for a target epsilon spends at most the target, and the epsilon
/// of the seed's setting gives back its noise multiplier.
#[test]
fn target_epsilon_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let base = [
        "privacy",
        "--sampling-rate",
        "0.0002666666666666667",
        "--epochs",
        "10",
        "--delta",
        "1e-5",
    ];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        ok(&trainer(dir.path(), &args))
    };
    let forward = with(&["--noise-multiplier", "0.9"]);
    assert_eq!(value(&forward, "steps"), 37_500.0);
    let eps = value(&forward, "epsilon");
    let back = with(&["--target-epsilon", &eps.to_string()]);
    let sigma = value(&back, "noise_multiplier");
    assert!((sigma / 0.9 - 1.0).abs() < 1e-3, "sigma {sigma}");
    assert!(value(&back, "epsilon") <= eps, "{back}");
    // And again from the other side: calibrate, then ask for epsilon with that sigma.
    let calibrated = value(&with(&["--target-epsilon", "3"]), "noise_multiplier");
    let spent = value(
        &with(&["--noise-multiplier", &calibrated.to_string()]),
        "epsilon",
    );
    assert!(
        spent <= 3.0 && spent > 2.97,
        "{spent} for sigma {calibrated}"
    );
}

#[test]
fn refuses_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails(&trainer(
        dir.path(),
        &[
            "privacy",
            "--sampling-rate",
            "0",
            "--noise-multiplier",
            "1",
            "--steps",
            "5",
        ],
    ));
    assert!(err.contains("--sampling-rate"), "{err}");
    let err = fails(&trainer(
        dir.path(),
        &["privacy", "--sampling-rate", "0.1", "--steps", "5"],
    ));
    assert!(
        err.contains("--noise-multiplier") || err.contains("--target-epsilon"),
        "{err}"
    );
}
