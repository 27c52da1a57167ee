//! The feature spec end to end on the real Fulton fixture: public bounds and categories make a
//! DP run beat the majority class, a standardization's Gaussian release is composed with the
//! steps exactly as the accountant composes the two mechanisms, raw columns outside [0, 1] are
//! named, and a bad spec is refused by name.

mod common;

use accountant::pld::{PldOptions, PrivacyLossDistribution};
use accountant::rdp;
use common::{fails, fulton_shards, fulton_spec, json, ok, trainer};

/// The share of the Fulton fixture's records with the more common label, counted here from the
/// CSV (0.628: `employed` is 1 for 16,183 of 25,766).
fn majority() -> f64 {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/FultonPUMS5full.csv"),
    )
    .unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = header.iter().position(|h| *h == "\"employed\"").unwrap();
    let (mut n, mut ones) = (0.0, 0.0);
    for l in lines {
        n += 1.0;
        if l.split(',').nth(col) == Some("1") {
            ones += 1.0;
        }
    }
    f64::max(ones / n, 1.0 - ones / n)
}

/// The README's command: the shipped spec (age and income standardized within public ranges, educ
/// and puma as categories) with the defaults learns at epsilon 4.
#[test]
fn the_readme_command_learns_at_epsilon_4() {
    let dir = tempfile::tempdir().unwrap();
    let data = fulton_shards(dir.path());
    let spec = fulton_spec();
    let out = trainer(
        dir.path(),
        &[
            "--data",
            data.to_str().unwrap(),
            "--feature-spec",
            spec.to_str().unwrap(),
            "--target-epsilon",
            "4",
            "--attack-feature",
            "none",
            "--no-progress",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(&out);
    assert!(
        !stderr.contains("outside [0, 1]"),
        "every column is in range: {stderr}"
    );
    let card = json(&dir.path().join("run/model.json"));
    let accuracy = card["test_accuracy_release"]["accuracy"].as_f64().unwrap();
    let epsilon = card["privacy"]["epsilon"].as_f64().unwrap();
    let majority = majority();
    assert!((0.62..0.64).contains(&majority), "{majority}");
    assert!(epsilon <= 4.0 && epsilon > 3.9, "{epsilon}");
    // Issue 25's goal is 0.80 (bench/RESULTS.md: 0.81-0.82 over seeds); 0.78 leaves room for
    // an unlucky draw.
    assert!(
        accuracy > 0.78,
        "DP at epsilon 4 with the defaults: test accuracy {accuracy} vs majority {majority}"
    );
    // The card states the transform: 16 + 1 educ inputs, 7 + 1 puma inputs, age standardized
    // within its public range.
    let inputs: Vec<&str> = card["feature_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        inputs.contains(&"educ=16") && inputs.contains(&"educ=other"),
        "{inputs:?}"
    );
    assert!(
        inputs.contains(&"puma=1101") && inputs.contains(&"age"),
        "{inputs:?}"
    );
    assert_eq!(
        card["feature_transform"]["spec"]["columns"]["age"],
        serde_json::json!({"kind": "standardize", "lo": 18.0, "hi": 100.0})
    );
    assert!(
        card["feature_transform"]["statement"]
            .as_str()
            .unwrap()
            .contains("they cost no privacy"),
        "{}",
        card["feature_transform"]
    );
}

/// The epsilon of a run that standardizes two columns is the composition of the DP-SGD steps
/// with one Gaussian release whose noise std is the multiplier times sqrt(1 + 2 * 2), and with
/// the held-out accuracy's release (noise multiplier 10), computed here from the card's
/// figures: by RDP (each Gaussian's alpha * s^2 / (2 std^2) added to the sampled Gaussian's RDP
/// before the conversion) and by PLD (the three distributions convolved).
/// The card holds the noisy statistics only, and the standardized columns are not warned about.
#[test]
fn standardization_is_composed_in_the_accountant() {
    let dir = tempfile::tempdir().unwrap();
    let data = fulton_shards(dir.path());
    for accountant in ["rdp", "pld"] {
        let save = format!("run/{accountant}.safetensors");
        let out = trainer(
            dir.path(),
            &[
                "--data",
                data.to_str().unwrap(),
                "--feature-categories",
                "educ=1..16:other,puma=1101..1107:other",
                "--standardize",
                "age=0:120,income=-100000:2000000",
                "--standardize-noise",
                "3",
                // No DP quantiles for the 0/1 columns: the steps, this release and the held-out
                // one alone.
                "--auto-bounds",
                "off",
                "--noise-multiplier",
                "1.2",
                "--accountant",
                accountant,
                "--epochs",
                "2",
                "--attack-feature",
                "none",
                "--save",
                &save,
                "--metrics-out",
                &format!("run/{accountant}.jsonl"),
                "--no-progress",
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        ok(&out);
        assert!(!stderr.contains("outside [0, 1]"), "{stderr}");
        let card = json(&dir.path().join(format!("run/{accountant}.json")));
        let p = &card["privacy"];
        let mech = &p["mechanism"];
        let (q, sigma, steps, delta) = (
            mech["sampling_rate"].as_f64().unwrap(),
            mech["noise_multiplier"].as_f64().unwrap(),
            p["steps"].as_u64().unwrap(),
            p["delta"].as_f64().unwrap(),
        );
        assert_eq!(sigma, 1.2);
        assert_eq!(mech["preprocessing_noise_multiplier"], 3.0);
        let release = &card["feature_transform"]["standardization_release"];
        let sensitivity = release["sensitivity"].as_f64().unwrap();
        assert_eq!(sensitivity, 5f64.sqrt(), "(n, 2 sums, 2 sums of squares)");
        let noise_std = 3.0 * 5f64.sqrt();
        let got = p["epsilon"].as_f64().unwrap();
        let want = match accountant {
            "rdp" => {
                let orders = rdp::default_orders();
                let composed: Vec<f64> = rdp::compute_rdp(q, sigma, steps, &orders)
                    .iter()
                    .zip(&orders)
                    .map(|(r, a)| {
                        r + a * sensitivity.powi(2) / (2.0 * noise_std * noise_std)
                            + a / (2.0 * 10.0 * 10.0)
                    })
                    .collect();
                rdp::get_privacy_spent(&orders, &composed, delta).0
            }
            _ => {
                let o = PldOptions::default();
                PrivacyLossDistribution::subsampled_gaussian(q, sigma, &o)
                    .unwrap()
                    .self_compose(steps, o.tail_mass_truncation)
                    .unwrap()
                    .compose(
                        &PrivacyLossDistribution::subsampled_gaussian(
                            1.0,
                            noise_std / sensitivity,
                            &o,
                        )
                        .unwrap(),
                    )
                    .compose(&PrivacyLossDistribution::subsampled_gaussian(1.0, 10.0, &o).unwrap())
                    .epsilon_for_delta(delta)
            }
        };
        assert!(
            (got / want - 1.0).abs() < 1e-9,
            "{accountant}: {got} vs {want}"
        );
        let alone = accountant::epsilon(
            p["accountant"].as_str().unwrap().parse().unwrap(),
            q,
            sigma,
            steps,
            delta,
        )
        .unwrap()
        .epsilon;
        assert!(got > alone, "{accountant}: the release costs something");
        // Only noisy statistics: the released count is not the exact number of training rows
        // (which the operator's stdout gives).
        let noisy_n = release["noisy_sums"][0].as_f64().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let train_rows: f64 = stdout
            .split("training on ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no row count in {stdout}"));
        assert!(
            noisy_n != train_rows && (noisy_n - train_rows).abs() < 100.0,
            "{noisy_n} vs {train_rows}"
        );
        let st = &card["feature_transform"]["standardized"];
        let age_mean = st[0]["noisy_mean"].as_f64().unwrap();
        assert!((35.0..55.0).contains(&age_mean), "{st}");
    }
}

/// With a target epsilon, the steps get what the release leaves: the whole run still spends at
/// most the target, with more noise than without the release.
#[test]
fn target_epsilon_covers_the_preprocessing() {
    let dir = tempfile::tempdir().unwrap();
    let data = fulton_shards(dir.path());
    let mut sigmas = Vec::new();
    // Public bounds for age and income (no release), then income standardized at noise 2
    // instead; educ and puma as categories in both.
    for extra in [
        &["--feature-bounds", "age=18:100,income=-20000:1000000"][..],
        &[
            "--feature-bounds",
            "age=18:100",
            "--standardize",
            "income=-100000:2000000",
            "--standardize-noise",
            "2",
        ],
    ] {
        // Without DP quantiles for the 0/1 columns: the release at noise 2 alone nearly spends
        // the target.
        let mut args = vec![
            "--data",
            data.to_str().unwrap(),
            "--auto-bounds",
            "off",
            "--feature-categories",
            "educ=1..16,puma=1101..1107",
        ];
        args.extend(extra);
        // The held-out release withheld: at standardize noise 2 and it, no sigma reaches 2.
        args.extend([
            "--test-accuracy-release",
            "withheld",
            "--target-epsilon",
            "2",
            "--epochs",
            "1",
            "--attack-feature",
            "none",
            "--no-progress",
        ]);
        ok(&trainer(dir.path(), &args));
        let card = json(&dir.path().join("run/model.json"));
        let eps = card["privacy"]["epsilon"].as_f64().unwrap();
        assert!(eps <= 2.0 && eps > 1.95, "{eps}");
        sigmas.push(
            card["privacy"]["mechanism"]["noise_multiplier"]
                .as_f64()
                .unwrap(),
        );
        std::fs::remove_dir_all(dir.path().join("run")).unwrap();
    }
    assert!(sigmas[1] > sigmas[0], "{sigmas:?}");
}

#[test]
fn raw_columns_outside_the_unit_interval_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = fulton_shards(dir.path());
    let out = trainer(
        dir.path(),
        &[
            "--data",
            data.to_str().unwrap(),
            "--feature-bounds",
            "age=18:100",
            // The columns the spec does not name as they are, not DP-bounded.
            "--auto-bounds",
            "off",
            "--epochs",
            "1",
            "--attack-feature",
            "none",
            "--no-progress",
        ],
    );
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warning = stderr
        .lines()
        .find(|l| l.contains("outside [0, 1]"))
        .unwrap_or_else(|| panic!("no warning: {stderr}"));
    assert!(
        warning.contains("puma, educ, income") && !warning.contains("age"),
        "{warning}"
    );
    // A fact about the data's records: marked as the operator's, not covered (issue 23 D).
    assert!(warning.contains("not private"), "{warning}");
}

#[test]
fn a_spec_naming_no_column_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = fulton_shards(dir.path());
    let err = fails(&trainer(
        dir.path(),
        &[
            "--data",
            data.to_str().unwrap(),
            "--feature-bounds",
            "agee=18:100",
            "--epochs",
            "1",
            "--no-progress",
        ],
    ));
    assert!(err.contains("'agee'") && err.contains("educ"), "{err}");
    let err = fails(&trainer(
        dir.path(),
        &["--feature-categories", "educ=1..16:sometimes"],
    ));
    assert!(err.contains("'sometimes' is not drop or other"), "{err}");
}

/// A resumed run standardizes with the checkpoint's release, not a new one (which would be a
/// second release, and a different transform under the same weights).
#[test]
fn a_resumed_run_keeps_the_release() {
    let dir = tempfile::tempdir().unwrap();
    let data = fulton_shards(dir.path());
    let run = |epochs: &str, resume: bool| {
        let mut args = vec![
            "--data",
            data.to_str().unwrap(),
            "--standardize",
            "age=0:120,income=-100000:2000000",
            "--feature-categories",
            "educ=1..16:other,puma=1101..1107:other",
            "--epochs",
            epochs,
            "--checkpoint-dir",
            "ck",
            "--attack-feature",
            "none",
            "--no-progress",
        ];
        if resume {
            args.push("--resume");
        }
        ok(&trainer(dir.path(), &args));
    };
    run("1", false);
    let saved = json(&dir.path().join("ck/checkpoint.json"))["standardizer"].clone();
    assert!(saved["noisy_sums"].is_array(), "{saved}");
    run("2", true);
    let card = json(&dir.path().join("run/model.json"));
    assert_eq!(card["feature_transform"]["standardization_release"], saved);
}

/// Two worker threads release the same statistics as one (the sums are added over the workers'
/// shares and worker 0's seeded noise is handed to all), so the model matches too.
#[test]
fn the_release_does_not_depend_on_the_workers() {
    let dir = tempfile::tempdir().unwrap();
    let data = fulton_shards(dir.path());
    let cards: Vec<serde_json::Value> = ["1", "2"]
        .iter()
        .map(|threads| {
            let save = format!("run/{threads}.safetensors");
            ok(&trainer(
                dir.path(),
                &[
                    "--data",
                    data.to_str().unwrap(),
                    "--standardize",
                    "age=0:120,income=-100000:2000000",
                    "--feature-categories",
                    "educ=1..16:other,puma=1101..1107:other",
                    "--seed",
                    "3",
                    "--threads",
                    threads,
                    "--epochs",
                    "1",
                    "--attack-feature",
                    "none",
                    "--save",
                    &save,
                    "--no-progress",
                ],
            ));
            json(&dir.path().join(format!("run/{threads}.json")))
        })
        .collect();
    let sums = |c: &serde_json::Value| -> Vec<f64> {
        c["feature_transform"]["standardization_release"]["noisy_sums"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    for (a, b) in sums(&cards[0]).iter().zip(sums(&cards[1])) {
        assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{a} vs {b}");
    }
    let acc = |c: &serde_json::Value| c["test_accuracy_release"]["accuracy"].as_f64().unwrap();
    assert!((acc(&cards[0]) - acc(&cards[1])).abs() < 1e-3);
}

/// An audit's input canaries are model inputs drawn before the release: it refuses to
/// standardize rather than move them.
#[test]
fn an_audit_refuses_standardization() {
    let dir = tempfile::tempdir().unwrap();
    let data = fulton_shards(dir.path());
    let err = fails(&trainer(
        dir.path(),
        &[
            "audit",
            "--data",
            data.to_str().unwrap(),
            "--standardize",
            "income=-100000:2000000",
            "--epochs",
            "1",
            "--no-progress",
        ],
    ));
    assert!(err.contains("does not take --standardize"), "{err}");
}
