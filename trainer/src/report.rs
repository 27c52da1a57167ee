//! `trainer report`: a run's metrics, model card and audit as one self-contained HTML page
//! (inline SVG plots, no scripts, nothing fetched), with the operator's figures marked, or with
//! `--public` only what epsilon covers: the page is then drawn from [`RunFiles::public`], the
//! card's and the metrics' covered fields ([`crate::coverage`]), and nothing of the audit (a
//! run of its own, which this run's epsilon does not cover).
//!
//! The metrics file records one accountant's epsilon per epoch. The page shows PLD and RDP side
//! by side: the other accountant's epsilon at each epoch's step count is computed here from the
//! card's mechanism (q, effective noise multiplier, delta) with the `accountant` crate.

use std::path::{Path, PathBuf};

use accountant::AccountantKind;
use report::{Bars, Lines, Page, Series, number};
use serde_json::Value;

use crate::metrics::EpochMetrics;
use crate::publish::{self, create_parent};
use crate::{Error, Result};

/// The metrics file's name in a run folder (`--metrics-out`'s default).
pub const METRICS_NAME: &str = "metrics.jsonl";
/// The model card's name in a run folder (`--save`'s default, with .json).
pub const CARD_NAME: &str = "model.json";
/// The audit's JSON line, when saved in a run folder (`trainer audit ... | tee run/audit.jsonl`).
pub const AUDIT_NAME: &str = "audit.jsonl";

/// What to render and where.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportConfig {
    /// A metrics file, or a run folder holding `metrics.jsonl` and usually `model.json` (the
    /// card) and `audit.jsonl`.
    pub run: PathBuf,
    /// The audit's output (its JSON line), if not `audit.jsonl` in the run folder.
    pub audit: Option<PathBuf>,
    /// Where the page goes.
    pub out: PathBuf,
    /// Only what epsilon covers ([`crate::coverage`]), as the model card holds it.
    pub public: bool,
    /// Replace an existing page.
    pub overwrite: bool,
}

impl ReportConfig {
    /// The page for `run` at its default place: `report.html` in the run folder, or beside the
    /// metrics file.
    pub fn new(run: PathBuf) -> Self {
        let dir = if run.is_dir() {
            run.clone()
        } else {
            run.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        ReportConfig {
            out: dir.join("report.html"),
            run,
            audit: None,
            public: false,
            overwrite: false,
        }
    }
}

/// A run as read from its files.
#[derive(Debug, Clone)]
pub struct RunFiles {
    /// Where it was read from (the page's title).
    pub source: String,
    /// One entry per epoch, in file order.
    pub metrics: Vec<EpochMetrics>,
    /// The model card, when there is one.
    pub card: Option<Value>,
    /// The audit's JSON line, when there is one.
    pub audit: Option<Value>,
}

impl RunFiles {
    /// Reads `run` (a metrics file or a run folder) and the audit's output `audit` (else
    /// `audit.jsonl` in the folder, when there).
    pub fn read(run: &Path, audit: Option<&Path>) -> Result<Self> {
        let (metrics_path, card_path, audit_path) = if run.is_dir() {
            let card = run.join(CARD_NAME);
            let in_dir = run.join(AUDIT_NAME);
            (
                run.join(METRICS_NAME),
                card.is_file().then_some(card),
                audit
                    .map(Path::to_path_buf)
                    .or_else(|| in_dir.is_file().then_some(in_dir)),
            )
        } else {
            (run.to_path_buf(), None, audit.map(Path::to_path_buf))
        };
        let text = std::fs::read_to_string(&metrics_path).map_err(|e| {
            Error::io(
                &metrics_path,
                std::io::Error::new(
                    e.kind(),
                    format!("{e} (RUN is a metrics file, or a folder holding {METRICS_NAME})"),
                ),
            )
        })?;
        let metrics = parse_metrics(&metrics_path, &text)?;
        let card = card_path
            .map(|p| {
                let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
                serde_json::from_str::<Value>(&text).map_err(|e| Error::Data {
                    location: p.display().to_string(),
                    reason: format!("not a model card: {e}"),
                })
            })
            .transpose()?;
        let audit = audit_path.map(|p| read_audit(&p)).transpose()?;
        Ok(RunFiles {
            source: run.display().to_string(),
            metrics,
            card,
            audit,
        })
    }
}

impl RunFiles {
    /// The run as a release may show it: the card's and each epoch's fields that epsilon
    /// covers ([`crate::coverage::public_card`], [`crate::coverage::public_metrics`]), and no
    /// audit.
    pub fn public(&self) -> RunFiles {
        RunFiles {
            source: self.source.clone(),
            metrics: self.metrics.iter().map(EpochMetrics::public).collect(),
            card: self.card.as_ref().map(crate::coverage::public_card),
            audit: None,
        }
    }
}

/// The metrics file's lines (a torn last line, from a run killed while writing it, is skipped).
fn parse_metrics(path: &Path, text: &str) -> Result<Vec<EpochMetrics>> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<EpochMetrics>(line) {
            Ok(m) => out.push(m),
            Err(_) if i + 1 == lines.len() && !line.trim_end().ends_with('}') => {}
            Err(e) => {
                return Err(Error::Data {
                    location: format!("{} line {}", path.display(), i + 1),
                    reason: format!("not a line of trainer metrics: {e}"),
                });
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Data {
            location: path.display().to_string(),
            reason: "no epochs (a run writes one line per epoch)".into(),
        });
    }
    Ok(out)
}

/// The last JSON line of `path` that has `audited_epsilon` (the audit also prints epoch lines
/// and a human line).
fn read_audit(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .find(|v| v.get("audited_epsilon").is_some())
        .ok_or_else(|| Error::Data {
            location: path.display().to_string(),
            reason: "no JSON line with audited_epsilon (the output of `trainer audit`)".into(),
        })
}

/// Reads the run, writes its page to `config.out`, and returns the page's size in bytes.
pub fn report(config: &ReportConfig) -> Result<u64> {
    if config.out.exists() && !config.overwrite {
        return Err(Error::Config(format!(
            "--out {}: exists (pass --overwrite to replace it)",
            config.out.display()
        )));
    }
    let run = RunFiles::read(&config.run, config.audit.as_deref())?;
    let html = run_page(&run, config.public)?;
    create_parent(&config.out)?;
    publish::write_durable(&config.out, html.as_bytes())?;
    Ok(html.len() as u64)
}

fn plot(e: report::Error) -> Error {
    Error::Config(e.to_string())
}

/// A number of the JSON, if it is one.
fn num(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn text(v: &Value, path: &[&str]) -> Option<String> {
    match path.iter().try_fold(v, |v, k| v.get(k))? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".to_string(), |x| number(x, digits))
}

/// A series of the epochs that have a value.
fn per_epoch(
    name: &str,
    metrics: &[EpochMetrics],
    f: impl Fn(&EpochMetrics) -> Option<f64>,
) -> Series {
    Series {
        name: name.into(),
        points: metrics
            .iter()
            .filter_map(|m| f(m).map(|y| (f64::from(m.epoch), y)))
            .collect(),
        ..Series::default()
    }
}

/// A horizontal reference line over the epochs.
fn reference(name: &str, metrics: &[EpochMetrics], y: f64) -> Series {
    let first = metrics.first().map_or(1.0, |m| f64::from(m.epoch));
    let last = metrics.last().map_or(1.0, |m| f64::from(m.epoch));
    Series {
        name: name.into(),
        points: vec![(first, y), (last, y)],
        spread: None,
        reference: true,
    }
}

/// The mechanism a card describes: q, the effective sigma, delta, and the releases composed
/// with the steps before the first (the DP quantile bounds, the standardization) and after the
/// last (the held-out release, counted as often as the card says).
struct Mechanism {
    q: f64,
    sigma: f64,
    delta: f64,
    before: accountant::Releases,
    after: Vec<f64>,
}

fn mechanism(card: &Value) -> Option<Mechanism> {
    let m = card.get("privacy")?.get("mechanism")?;
    let mut before = accountant::Releases::default();
    before
        .gaussians
        .extend(num(m, &["preprocessing_noise_multiplier"]));
    if let (Some(e), Some(n)) = (num(m, &["quantile_epsilon"]), num(m, &["quantiles"])) {
        before.exponential = vec![e; n as usize];
    }
    let after = match num(m, &["test_release_noise_multiplier"]) {
        Some(g) => vec![g; num(m, &["test_releases"]).unwrap_or(1.0) as usize],
        None => Vec::new(),
    };
    Some(Mechanism {
        q: num(m, &["sampling_rate"])?,
        sigma: num(m, &["effective_noise_multiplier"])?,
        delta: num(m, &["delta"])?,
        before,
        after,
    })
}

/// Each epoch's epsilon under PLD and under RDP: the metrics' own for the run's accountant, the
/// other computed from the card's mechanism (None where it cannot be): the steps so far, the
/// releases before the first step, and after the last epoch the held-out release.
type Curve = (u32, u64, Option<f64>, Option<f64>);
type Curves = Vec<Curve>;

fn epsilon_curves(run: &RunFiles) -> Result<(Curves, Option<AccountantKind>)> {
    let recorded = run
        .metrics
        .iter()
        .find_map(|m| m.accountant.as_deref())
        .and_then(|a| a.parse::<AccountantKind>().ok());
    let mech = run.card.as_ref().and_then(mechanism);
    let final_steps = run.metrics.last().map(|m| m.steps);
    let mut out = Vec::new();
    for m in &run.metrics {
        let computed = |kind: AccountantKind| -> Result<Option<f64>> {
            match &mech {
                Some(mech) => {
                    let mut releases = mech.before.clone();
                    if Some(m.steps) == final_steps {
                        releases.gaussians.extend(&mech.after);
                    }
                    Ok(Some(
                        accountant::epsilon_composed(
                            kind, mech.q, mech.sigma, m.steps, &releases, mech.delta,
                        )?
                        .epsilon,
                    ))
                }
                None => Ok(None),
            }
        };
        let of = |kind: AccountantKind| -> Result<Option<f64>> {
            if recorded == Some(kind) {
                Ok(m.epsilon)
            } else {
                computed(kind)
            }
        };
        out.push((
            m.epoch,
            m.steps,
            of(AccountantKind::Pld)?,
            of(AccountantKind::Rdp)?,
        ));
    }
    Ok((out, recorded))
}

/// The page for `run`; with `public`, of [`RunFiles::public`]: only what epsilon covers.
pub fn run_page(run: &RunFiles, public: bool) -> Result<String> {
    let covered;
    let run = if public {
        covered = run.public();
        &covered
    } else {
        run
    };
    let ms = &run.metrics;
    let last = ms.last().expect("read_metrics refuses an empty file");
    let card = run.card.as_ref();
    let mut page = Page::new(&format!("Training run: {}", run.source));
    if public {
        page.note(
            "Public page (trainer report --public): it holds only what epsilon covers, as the \
             model card does: no exact figure of the training or the held-out rows, and \
             nothing of an audit (another run on the same data, which this epsilon does not \
             cover).",
        );
    } else {
        page.note(
            "Operator's page, not for publishing: it shows exact figures of the held-out rows \
             (test loss and accuracy, the attack) and in its last section, 'Not private', of \
             the training rows (train loss and accuracy, the attack on training rows, realized \
             batch sizes, timings), which epsilon does not cover, and the audit's. `trainer \
             report --public` writes a page of what epsilon covers only.",
        );
    }

    // Privacy statement.
    page.heading("Privacy");
    let private = card
        .and_then(|c| c.get("private"))
        .and_then(Value::as_bool)
        .unwrap_or(last.epsilon.is_some());
    match card {
        Some(c) if private => {
            if let Some(s) = text(c, &["privacy", "statement"]) {
                page.paragraph(&s);
            }
            let p = &c["privacy"];
            let m = &p["mechanism"];
            let row = |k: &str, v: Option<String>| vec![k.to_string(), v.unwrap_or("-".into())];
            page.table(
                &["guarantee", "value"],
                &[
                    row("epsilon", num(p, &["epsilon"]).map(|e| number(e, 4))),
                    row("delta", text(p, &["delta"])),
                    row("accountant", text(p, &["accountant"])),
                    row("steps composed", text(p, &["steps"])),
                    row(
                        "sampling rate q",
                        num(m, &["sampling_rate"]).map(|x| number(x, 4)),
                    ),
                    row(
                        "noise multiplier",
                        num(m, &["noise_multiplier"]).map(|x| number(x, 4)),
                    ),
                    row("sensitivity (units of C)", text(m, &["sensitivity"])),
                    row(
                        "effective noise multiplier",
                        num(m, &["effective_noise_multiplier"]).map(|x| number(x, 4)),
                    ),
                    row("randomness", text(p, &["randomness"])),
                    row(
                        "private against seed holders",
                        text(p, &["private_against_seed_holders"]),
                    ),
                    row("privacy unit", text(p, &["unit"])),
                ],
            );
        }
        Some(_) => {
            page.note(
                "Trained without differential privacy (--no-dp): nothing on this page is \
                 covered by a privacy guarantee.",
            );
        }
        None => {
            page.paragraph(&format!(
                "No model card beside the metrics (RUN is a metrics file, or its folder has no \
                 {CARD_NAME}): the privacy statement is the card's. The metrics say: {}.",
                match (last.epsilon, last.delta) {
                    (Some(e), Some(d)) => format!(
                        "epsilon {} at delta {d:e} ({} accountant) after {} steps",
                        number(e, 4),
                        last.accountant.as_deref().unwrap_or("?"),
                        last.steps
                    ),
                    _ => "no epsilon (a run without DP)".into(),
                }
            ));
        }
    }
    if let Some(s) = card.and_then(|c| text(c, &["exact_statistics"])) {
        page.paragraph(&s);
    }

    // The held-out accuracy as the card releases it (with noise, covered), then the operator's
    // exact figures.
    page.heading("Accuracy on held-out rows");
    match card
        .and_then(|c| c.get("test_accuracy_release"))
        .filter(|r| r.is_object())
    {
        Some(r) => {
            if let Some(s) = text(r, &["statement"]) {
                page.paragraph(&s);
            }
            page.table(
                &["released (covered by epsilon)", "value"],
                &[
                    vec!["test accuracy".into(), opt(num(r, &["accuracy"]), 4)],
                    vec![
                        "majority share (always guessing the more common label)".into(),
                        opt(num(r, &["majority_share"]), 4),
                    ],
                    vec![
                        "right predictions (noisy)".into(),
                        opt(num(r, &["noisy_correct"]), 6),
                    ],
                    vec![
                        "test records (noisy)".into(),
                        opt(num(r, &["noisy_count"]), 6),
                    ],
                    vec!["noise std".into(), opt(num(r, &["noise_std"]), 4)],
                    vec![
                        "L2 sensitivity (records)".into(),
                        opt(num(r, &["l2_sensitivity"]), 4),
                    ],
                ],
            );
        }
        None => {
            page.paragraph(
                "The model card releases no held-out accuracy covered by epsilon (withheld, a \
                 run without DP, or no card).",
            );
        }
    }
    if !public && ms.iter().any(|m| m.test_accuracy.is_some()) {
        page.note(
            "Exact figures of the held-out rows below: the operator's, NOT covered by epsilon \
             and not for publishing (the card releases the noisy accuracy above).",
        );
        let svg = Lines {
            title: "Test accuracy per epoch (exact, not covered)".into(),
            x_label: "epoch".into(),
            y_label: "accuracy".into(),
            series: std::iter::once(per_epoch("test accuracy", ms, |m| m.test_accuracy))
                .chain(
                    last.test_majority
                        .map(|b| reference("majority share (always guessing)", ms, b)),
                )
                .collect(),
            log_x: false,
        }
        .svg()
        .map_err(plot)?;
        page.figure(
            &svg,
            "Exact accuracy on the test split after each epoch, against always guessing the \
             more common label.",
        );
        let svg = Lines {
            title: "Test loss per epoch (exact, not covered)".into(),
            x_label: "epoch".into(),
            y_label: "loss (BCE)".into(),
            series: vec![per_epoch("test loss", ms, |m| m.test_loss)],
            log_x: false,
        }
        .svg()
        .map_err(plot)?;
        page.figure(&svg, "Exact mean loss on the test split after each epoch.");
    }

    // Epsilon per epoch, both accountants.
    let (curves, recorded) = epsilon_curves(run)?;
    if let Some(recorded) = recorded {
        page.heading("Privacy spent per epoch: PLD and RDP");
        let computed = match recorded {
            AccountantKind::Pld => AccountantKind::Rdp,
            AccountantKind::Rdp => AccountantKind::Pld,
        };
        match card.and_then(mechanism) {
            Some(m) => page.paragraph(&format!(
                "The metrics record the {recorded} accountant's epsilon (the run's); the \
                 {computed} curve is computed for this page by the accountant crate from the \
                 card's mechanism: q = {}, effective noise multiplier {}, delta {:e}, at \
                 each epoch's step count, with the releases the card lists before the first \
                 step and, at the last epoch, the held-out release. Both are upper bounds for \
                 the same mechanism; the smaller is the tighter.",
                number(m.q, 4),
                number(m.sigma, 4),
                m.delta
            )),
            None => page.paragraph(&format!(
                "The metrics record the {recorded} accountant's epsilon; without the model \
                 card (its mechanism: q and the effective noise multiplier) the {computed} \
                 curve cannot be computed."
            )),
        };
        let series = |name: &str, pick: fn(&Curve) -> Option<f64>| Series {
            name: name.into(),
            points: curves
                .iter()
                .filter_map(|c| pick(c).map(|e| (f64::from(c.0), e)))
                .collect(),
            ..Series::default()
        };
        let svg = Lines {
            title: "Epsilon spent per epoch".into(),
            x_label: "epoch".into(),
            y_label: "epsilon".into(),
            series: vec![series("PLD", |c| c.2), series("RDP", |c| c.3)],
            log_x: false,
        }
        .svg()
        .map_err(plot)?;
        page.figure(
            &svg,
            "Epsilon after each epoch, at the run's delta, by each accountant.",
        );
        page.table(
            &["epoch", "steps", "epsilon (PLD)", "epsilon (RDP)"],
            &curves
                .iter()
                .map(|c| vec![c.0.to_string(), c.1.to_string(), opt(c.2, 4), opt(c.3, 4)])
                .collect::<Vec<_>>(),
        );
    }

    // The attack on held-out rows.
    if ms.iter().any(|m| m.attack_accuracy.is_some()) {
        page.heading("Model-inversion attack (held-out rows; exact, not covered)");
        let feature = last
            .attack_feature
            .clone()
            .or_else(|| card.and_then(|c| text(c, &["options", "attack_feature"])))
            .unwrap_or_else(|| "the attack feature".into());
        page.paragraph(&format!(
            "The attack recovers {feature} from the model's output and the other features; it \
             is measured on held-out rows, beside two baselines that use no model: always \
             guessing the majority value, and a logistic-regression imputer fitted on those \
             rows. An attack no better than its baselines learns nothing from the model{}.",
            last.attack_accuracy
                .zip(last.attack_baseline)
                .map_or(String::new(), |(a, b)| format!(
                    "; this one is {}",
                    crate::metrics::attack_reading(a, b, last.attack_imputer)
                ))
        ));
        let mut series = vec![per_epoch("attack accuracy", ms, |m| m.attack_accuracy)];
        if let Some(b) = last.attack_baseline {
            series.push(reference("majority baseline", ms, b));
        }
        if let Some(b) = last.attack_imputer {
            series.push(reference("imputer baseline", ms, b));
        }
        let svg = Lines {
            title: "Attack accuracy per epoch".into(),
            x_label: "epoch".into(),
            y_label: "accuracy".into(),
            series,
            log_x: false,
        }
        .svg()
        .map_err(plot)?;
        page.figure(
            &svg,
            "The attack's accuracy on held-out rows, and its baselines.",
        );
        page.table(
            &[
                "last epoch",
                "attack",
                "majority baseline",
                "imputer baseline",
            ],
            &[vec![
                last.epoch.to_string(),
                opt(last.attack_accuracy, 4),
                opt(last.attack_baseline, 4),
                opt(last.attack_imputer, 4),
            ]],
        );
    }

    // The audit.
    if let Some(a) = &run.audit {
        page.heading("Privacy audit");
        page.paragraph(
            "trainer audit: lower bounds on epsilon from one training run with canaries, \
             holding with probability 1 - alpha (Steinke, Nasr and Jagielski 2023, for any \
             (epsilon, delta)-DP mechanism; and the f-DP bound of Mahloujifar, Melis and \
             Chaudhuri 2024, for a Gaussian trade-off curve), beside the accountant's upper \
             bound for the audited run. An audited epsilon above the accounted one would mean \
             the code does not do what the accountant was told. The audit trains a run of its \
             own with the same flags (its canaries are rows of its training set), so its \
             accounted epsilon can differ from this run's.",
        );
        let audited = num(a, &["audited_epsilon"]);
        let fdp = num(a, &["fdp_epsilon"]);
        let accounted = num(a, &["accounted_epsilon"]);
        let svg = Bars {
            title: "Audited against accounted epsilon".into(),
            x_label: "bound".into(),
            y_label: "epsilon".into(),
            bars: [
                ("audited (lower bound)", audited),
                ("audited, f-DP (lower bound)", fdp),
                ("accounted (upper bound)", accounted),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect(),
        }
        .svg()
        .map_err(plot)?;
        page.figure(
            &svg,
            "The audit's lower bound and the accountant's upper bound.",
        );
        let row = |k: &str, key: &str| vec![k.to_string(), text(a, &[key]).unwrap_or("-".into())];
        page.table(
            &["audit", "value"],
            &[
                vec!["audited epsilon".into(), opt(audited, 4)],
                vec!["audited epsilon, f-DP".into(), opt(fdp, 4)],
                row("caught", "caught"),
                vec![
                    "accounted epsilon".into(),
                    accounted.map_or("infinite (no noise)".into(), |e| number(e, 4)),
                ],
                row("accountant", "accountant"),
                row("delta", "delta"),
                row("alpha", "alpha"),
                row("canary kind", "canary_kind"),
                row("canaries", "canaries"),
                row("guesses", "guesses"),
                row("right guesses", "correct"),
                row("steps", "steps"),
                row("sampling rate q", "sampling_rate"),
                row("noise multiplier", "noise_multiplier"),
            ],
        );
    }

    // Settings.
    page.heading("Settings");
    match card {
        Some(c) => {
            let mut rows = Vec::new();
            if let Some(a) = text(c, &["architecture"]) {
                rows.push(vec!["architecture".to_string(), a]);
            }
            if let Some(l) = text(c, &["label_name"]) {
                rows.push(vec!["label".to_string(), l]);
            }
            if let Some(f) = c.get("feature_names").and_then(Value::as_array) {
                let names: Vec<&str> = f.iter().filter_map(Value::as_str).collect();
                rows.push(vec!["features".to_string(), names.join(", ")]);
            }
            flatten("", &c["options"], &mut rows);
            page.table(&["setting", "value"], &rows);
        }
        None => {
            page.table(
                &["setting", "value"],
                &[
                    vec!["epochs".to_string(), ms.len().to_string()],
                    vec!["steps".to_string(), last.steps.to_string()],
                    vec![
                        "noise multiplier".to_string(),
                        opt(last.noise_multiplier, 4),
                    ],
                    vec!["workers".to_string(), last.workers.to_string()],
                ],
            );
        }
    }

    if !public {
        non_private_section(&mut page, run)?;
    }
    Ok(page.render())
}

/// `options` as `key.sub = value` rows.
pub(crate) fn flatten(prefix: &str, v: &Value, rows: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, rows);
            }
        }
        Value::Null => rows.push(vec![prefix.to_string(), "none".into()]),
        Value::String(s) => rows.push(vec![prefix.to_string(), s.clone()]),
        other => rows.push(vec![prefix.to_string(), other.to_string()]),
    }
}

/// The operator's exact figures: train against test, the attack on training rows, batches and
/// timings, and the audit's membership inference on real rows.
fn non_private_section(page: &mut Page, run: &RunFiles) -> Result<()> {
    let ms = &run.metrics;
    page.heading("Not private: the operator's diagnostics (not for publishing)");
    page.note(
        "NOT PRIVATE, NOT FOR PUBLISHING. The figures below are exact statistics of the \
         training rows (the metrics file's \"non_private\" part) and timings, which depend on \
         the realized batch sizes. Epsilon does not cover them.",
    );
    let np = |f: fn(&crate::metrics::NonPrivate) -> f64| {
        move |m: &EpochMetrics| m.non_private.as_ref().map(f)
    };
    if ms.iter().all(|m| m.non_private.is_none()) {
        page.paragraph(
            "The metrics hold no non-private figures (epochs restored from a checkpoint keep \
             only their public part).",
        );
    } else {
        let svg = Lines {
            title: "Train and test accuracy per epoch (train: not private)".into(),
            x_label: "epoch".into(),
            y_label: "accuracy".into(),
            series: vec![
                per_epoch("train accuracy", ms, np(|n| n.train_accuracy)),
                per_epoch("test accuracy", ms, |m| m.test_accuracy),
            ],
            log_x: false,
        }
        .svg()
        .map_err(plot)?;
        page.figure(
            &svg,
            "Accuracy on the training rows (exact) and on the test split.",
        );
        let svg = Lines {
            title: "Train and test loss per epoch (train: not private)".into(),
            x_label: "epoch".into(),
            y_label: "loss (BCE)".into(),
            series: vec![
                per_epoch("train loss", ms, np(|n| n.train_loss)),
                per_epoch("test loss", ms, |m| m.test_loss),
            ],
            log_x: false,
        }
        .svg()
        .map_err(plot)?;
        page.figure(
            &svg,
            "Loss on the training rows (exact) and on the test split.",
        );
        if ms.iter().any(|m| {
            m.non_private
                .as_ref()
                .is_some_and(|n| n.attack_train_accuracy.is_some())
        }) {
            let svg = Lines {
                title: "Attack on training and held-out rows (training: not private)".into(),
                x_label: "epoch".into(),
                y_label: "accuracy".into(),
                series: vec![
                    per_epoch("attack on training rows", ms, |m| {
                        m.non_private.as_ref().and_then(|n| n.attack_train_accuracy)
                    }),
                    per_epoch("attack on held-out rows", ms, |m| m.attack_accuracy),
                ],
                log_x: false,
            }
            .svg()
            .map_err(plot)?;
            page.figure(
                &svg,
                "The gap between the two is what the model leaks about its own training rows.",
            );
        }
        page.table(
            &[
                "epoch",
                "examples",
                "train loss",
                "train accuracy",
                "attack (train)",
                "leakage",
                "seconds",
                "CPU seconds",
                "examples/s",
            ],
            &ms.iter()
                .filter_map(|m| {
                    let n = m.non_private.as_ref()?;
                    Some(vec![
                        m.epoch.to_string(),
                        n.examples.to_string(),
                        number(n.train_loss, 4),
                        number(n.train_accuracy, 4),
                        opt(n.attack_train_accuracy, 4),
                        opt(n.attack_leakage, 3),
                        number(n.seconds, 3),
                        opt(n.cpu_seconds, 3),
                        number(n.examples_per_second, 4),
                    ])
                })
                .collect::<Vec<_>>(),
        );
    }
    if let Some(mia) = run
        .audit
        .as_ref()
        .and_then(|a| a.get("membership_inference"))
    {
        let mut rows = Vec::new();
        flatten("", mia, &mut rows);
        page.paragraph(
            "The audit's membership inference (LOSS attack) on real training rows against \
             held-out rows:",
        );
        page.table(&["membership inference", "value"], &rows);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::NonPrivate;

    fn epoch(n: u32, accountant: &str) -> EpochMetrics {
        EpochMetrics {
            epoch: n,
            steps: 100 * u64::from(n),
            test_loss: Some(0.7 - 0.01 * f64::from(n)),
            test_accuracy: Some(0.6 + 0.01 * f64::from(n)),
            test_majority: None,
            epsilon: Some(0.3 * f64::from(n)),
            delta: Some(1e-5),
            accountant: Some(accountant.into()),
            rdp_order: None,
            noise_multiplier: Some(1.1),
            attack_feature: None,
            attack_accuracy: Some(0.61),
            attack_baseline: Some(0.8),
            attack_imputer: Some(0.82),
            workers: 1,
            non_private: Some(NonPrivate {
                private: false,
                examples: 25_600,
                gradients_zeroed: 0,
                non_finite_logits: 0,
                train_loss: 0.123_456,
                train_accuracy: 0.987_654,
                attack_train_accuracy: Some(0.63),
                attack_leakage: Some(0.02),
                seconds: 0.5,
                cpu_seconds: Some(0.4),
                comm_seconds: None,
                eval_seconds: 0.1,
                examples_per_second: 51_200.0,
                phases: None,
            }),
        }
    }

    fn card(accountant: &str) -> Value {
        serde_json::json!({
            "architecture": "nn.Sequential(nn.Linear(9, 1))",
            "feature_names": ["sex", "married"],
            "label_name": "employed",
            "options": {"epochs": 3, "batch_size": 256, "attack_feature": "englishability",
                        "seed": null},
            "private": true,
            "privacy": {
                "unit": "one record of the training split",
                "epsilon": 0.9, "delta": 1e-5, "accountant": accountant, "steps": 300,
                "mechanism": {"accountant": accountant, "sampling_rate": 0.01,
                              "noise_multiplier": 1.1, "sensitivity": 1.0,
                              "effective_noise_multiplier": 1.1, "delta": 1e-5},
                "randomness": "os", "private_against_seed_holders": true,
                "statement": "(0.9000, 1e-5)-differential privacy by the pld accountant"
            },
            "steps": 300,
            "test_accuracy_release": {
                "covered_by_epsilon": true, "noisy_correct": 6521.25, "noisy_count": 9876.5,
                "accuracy": 0.6603, "noise_multiplier": 10.0, "rows_per_unit": 1,
                "l2_sensitivity": 1.5, "noise_std": 15.0, "steps": 300,
                "statement": "The accuracy on the test split, released with its own noise"
            },
            "held_out": {"covered_by_epsilon": false, "statement": "NOT covered",
                         "test_accuracy": 0.6789, "test_loss": 0.5432},
            "exact_statistics": "Exact statistics of the data are not covered by epsilon"
        })
    }

    fn run(accountant: &str) -> RunFiles {
        RunFiles {
            source: "run".into(),
            metrics: (1..=3).map(|n| epoch(n, accountant)).collect(),
            card: Some(card(accountant)),
            audit: None,
        }
    }

    /// The other accountant's curve is the accountant crate's value for the card's mechanism
    /// at each epoch's steps; the recorded one is the metrics' own.
    #[test]
    fn both_accountants_per_epoch() {
        let (curves, recorded) = epsilon_curves(&run("pld")).unwrap();
        assert_eq!(recorded, Some(AccountantKind::Pld));
        assert_eq!(curves.len(), 3);
        for (i, c) in curves.iter().enumerate() {
            let steps = 100 * (i as u64 + 1);
            assert_eq!(c.1, steps);
            assert_eq!(c.2, Some(0.3 * (i as f64 + 1.0)), "recorded PLD");
            let rdp = accountant::epsilon(AccountantKind::Rdp, 0.01, 1.1, steps, 1e-5)
                .unwrap()
                .epsilon;
            assert_eq!(c.3, Some(rdp));
        }
        let (curves, _) = epsilon_curves(&run("rdp")).unwrap();
        let pld = accountant::epsilon(AccountantKind::Pld, 0.01, 1.1, 300, 1e-5)
            .unwrap()
            .epsilon;
        assert_eq!(curves[2].2, Some(pld));
        assert!(pld < curves[2].3.unwrap() + 1.0);
        // Without a card there is no mechanism: the other curve is absent, and the page says why.
        let mut bare = run("pld");
        bare.card = None;
        let (curves, _) = epsilon_curves(&bare).unwrap();
        assert!(curves.iter().all(|c| c.3.is_none()));
        let html = run_page(&bare, false).unwrap();
        assert!(html.contains("cannot be computed"), "{html}");
        assert!(html.contains("No model card"));
    }

    #[test]
    fn the_page_holds_every_section_and_marks_what_is_not_private() {
        let mut r = run("pld");
        r.audit = Some(serde_json::json!({
            "audited_epsilon": 0.42, "accounted_epsilon": 0.9, "accountant": "pld",
            "delta": 1e-5, "alpha": 0.05, "canary_kind": "gradient", "canaries": 1000,
            "guesses": 100, "correct": 70, "steps": 300,
            "membership_inference": {"auc": 0.5123}
        }));
        let html = run_page(&r, false).unwrap();
        for text in [
            "Training run: run",
            "(0.9000, 1e-5)-differential privacy",
            "Test accuracy per epoch",
            "Epsilon spent per epoch",
            "computed for this page by the accountant crate",
            "Attack accuracy per epoch",
            "majority baseline",
            "imputer baseline",
            "Audited against accounted epsilon",
            "0.42",
            "nn.Sequential(nn.Linear(9, 1))",
            "englishability",
            "Not private: the operator",
            "NOT FOR PUBLISHING",
            "0.9877",
            "0.5123",
            "25600",
        ] {
            assert!(html.contains(text), "{text} missing");
        }
        assert!(
            html.find("Not private: the operator").unwrap() > html.find("<h2>Settings").unwrap(),
            "the training-set figures are in a section of their own, last"
        );
        assert!(!html.contains("<script") && !html.contains("href="));

        assert!(html.contains("0.6603"), "the released accuracy");

        // --public: only what epsilon covers: no exact figure, no audit.
        let public = run_page(&r, true).unwrap();
        for absent in [
            "0.9877",
            "0.1235",
            "25600",
            "train accuracy",
            "0.5123",
            "51200",
            "Test accuracy per epoch",
            "0.6789",
            "Privacy audit",
            "0.42",
        ] {
            assert!(!public.contains(absent), "{absent} is on the public page");
        }
        for present in ["Epsilon spent per epoch", "0.6603", "6521.25"] {
            assert!(
                public.contains(present),
                "{present} missing from the public page"
            );
        }
    }

    /// Every leaf of `v` (objects and arrays walked), as a JSON pointer.
    fn leaves(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => map
                .iter()
                .for_each(|(k, x)| leaves(x, format!("{at}/{k}"), out)),
            Value::Array(xs) => xs
                .iter()
                .enumerate()
                .for_each(|(i, x)| leaves(x, format!("{at}/{i}"), out)),
            _ => out.push(at),
        }
    }

    /// `v` changed: another number (an integer stays one), another string, the other boolean.
    fn perturbed(v: &Value) -> Value {
        match v {
            Value::Number(n) if n.is_u64() => Value::from(n.as_u64().unwrap() + 7),
            Value::Number(n) => Value::from(n.as_f64().unwrap() * 1.37 + 0.0173),
            Value::String(s) => Value::from(format!("{s} changed")),
            Value::Bool(b) => Value::from(!b),
            other => other.clone(),
        }
    }

    /// `trainer report --public` holds no figure epsilon does not cover (issue 23 D; it showed
    /// the exact held-out accuracy, loss and attack, and the audit): for a run with every
    /// figure there is (metrics with training-set and held-out figures, a card with the noisy
    /// release and marked exact figures, an audit), changing any one value that is not among
    /// the covered fields of `crate::coverage` (a metrics field not in `METRICS`, a card field
    /// not in `CARD`, anything of the audit) leaves the public page byte for byte the same,
    /// while changing a covered figure (the released accuracy, an epoch's epsilon) shows.
    #[test]
    fn the_public_page_holds_only_what_epsilon_covers() {
        let mut r = run("pld");
        r.audit = Some(serde_json::json!({
            "audited_epsilon": 0.42, "accounted_epsilon": 0.9, "accountant": "pld",
            "guesses": 100, "correct": 70, "membership_inference": {"auc": 0.5123}
        }));
        let whole = serde_json::json!({
            "metrics": r.metrics, "card": r.card, "audit": r.audit
        });
        let back = |v: &Value| RunFiles {
            source: "run".into(),
            metrics: serde_json::from_value(v["metrics"].clone()).unwrap(),
            card: Some(v["card"].clone()),
            audit: Some(v["audit"].clone()),
        };
        let page = run_page(&back(&whole), true).unwrap();
        let covered = |pointer: &str| -> bool {
            let parts: Vec<&str> = pointer.split('/').collect();
            match parts[1] {
                "metrics" => crate::coverage::METRICS.iter().any(|(k, _)| *k == parts[3]),
                "card" => crate::coverage::CARD.iter().any(|(k, _)| *k == parts[2]),
                _ => false,
            }
        };
        let mut all = Vec::new();
        leaves(&whole, String::new(), &mut all);
        let (mut checked, mut shown) = (0, 0);
        for pointer in &all {
            let mut changed = whole.clone();
            let leaf = changed.pointer_mut(pointer).unwrap();
            *leaf = perturbed(leaf);
            if covered(pointer) {
                shown += usize::from(run_page(&back(&changed), true).unwrap() != page);
                continue;
            }
            checked += 1;
            assert!(
                run_page(&back(&changed), true).unwrap() == page,
                "{pointer}, not covered, shows on the public page"
            );
        }
        assert!(checked > 60, "{checked} uncovered values");
        for pointer in ["/card/test_accuracy_release/accuracy", "/metrics/2/epsilon"] {
            let mut changed = whole.clone();
            let leaf = changed.pointer_mut(pointer).unwrap();
            *leaf = perturbed(leaf);
            assert!(
                run_page(&back(&changed), true).unwrap() != page,
                "{pointer}"
            );
        }
        assert!(shown > 10, "{shown} covered values show");
    }

    #[test]
    fn a_run_without_dp_says_so() {
        let mut r = run("pld");
        for m in &mut r.metrics {
            (m.epsilon, m.delta, m.accountant) = (None, None, None);
        }
        r.card = Some(serde_json::json!({"private": false, "privacy": null, "options": {}}));
        let html = run_page(&r, false).unwrap();
        assert!(html.contains("without differential privacy"));
        assert!(!html.contains("Epsilon spent per epoch"));
    }

    #[test]
    fn reads_a_run_folder_and_refuses_bad_files_by_name_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let line = |n| serde_json::to_string(&epoch(n, "pld")).unwrap();
        // A torn last line (a run killed while writing it) is skipped.
        std::fs::write(
            d.join(METRICS_NAME),
            format!("{}\n{}\n{{\"epo", line(1), line(2)),
        )
        .unwrap();
        std::fs::write(d.join(CARD_NAME), card("pld").to_string()).unwrap();
        std::fs::write(
            d.join(AUDIT_NAME),
            "epoch 1 ...\naudit: epsilon >= 0.4\n{\"audited_epsilon\": 0.4, \"accounted_epsilon\": 1.0}\n",
        )
        .unwrap();
        let run = RunFiles::read(d, None).unwrap();
        assert_eq!(run.metrics.len(), 2);
        assert!(run.card.is_some());
        assert_eq!(
            num(run.audit.as_ref().unwrap(), &["audited_epsilon"]),
            Some(0.4)
        );

        let config = ReportConfig::new(d.to_path_buf());
        assert_eq!(config.out, d.join("report.html"));
        let bytes = report(&config).unwrap();
        assert_eq!(std::fs::metadata(&config.out).unwrap().len(), bytes);
        let again = report(&config).unwrap_err().to_string();
        assert!(
            again.contains("report.html") && again.contains("--overwrite"),
            "{again}"
        );

        std::fs::write(
            d.join(METRICS_NAME),
            format!("{}\nnot json\n{}\n", line(1), line(2)),
        )
        .unwrap();
        let e = RunFiles::read(d, None).unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl line 2"), "{e}");
        std::fs::write(d.join(METRICS_NAME), "").unwrap();
        let e = RunFiles::read(d, None).unwrap_err().to_string();
        assert!(e.contains("no epochs"), "{e}");
        let e = RunFiles::read(&d.join("missing.jsonl"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.jsonl"), "{e}");
        std::fs::write(d.join("audit.txt"), "epoch 1\n").unwrap();
        std::fs::write(d.join(METRICS_NAME), line(1)).unwrap();
        let e = RunFiles::read(d, Some(&d.join("audit.txt")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("audit.txt") && e.contains("audited_epsilon"),
            "{e}"
        );
    }
}
