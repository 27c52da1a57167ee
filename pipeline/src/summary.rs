//! The one-screen summary printed at the end of a run.

use std::fmt::Write as _;

use shards::Location;

use crate::run::RunReport;

/// The summary of a finished run, for a terminal.
pub fn summary(report: &RunReport, output: &Location) -> String {
    let mut s = String::new();
    let Some(m) = &report.manifest else { return s };
    let secs = report.elapsed.as_secs_f64();
    let rows = &m.rows;
    let _ = writeln!(
        s,
        "pipeline: {} rows read, {} kept, {} dropped -> {} shards in {output}",
        rows.input_rows,
        rows.kept,
        rows.dropped_total(),
        m.shards.len()
    );
    let dropped: Vec<String> = rows
        .dropped
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let _ = writeln!(s, "  dropped by reason: {}", dropped.join(", "));
    if let Some(unit) = &m.schema.unit {
        let cap = match m.options.max_rows_per_unit {
            Some(k) => format!(
                "at most {k} rows a unit: {} rows over it let go",
                rows.over_unit_cap
            ),
            None => "no bound on a unit's rows".to_string(),
        };
        let _ = writeln!(s, "  privacy unit: {unit} ({cap})");
    }
    let labels: Vec<String> = m
        .labels
        .iter()
        .map(|(l, n)| format!("{}={l}: {n}", m.schema.label))
        .collect();
    let _ = writeln!(s, "  labels of the clean rows: {}", labels.join(", "));
    let _ = writeln!(
        s,
        "  header lines skipped: {}; distinct feature vectors: {}",
        rows.header_lines, m.distinct_feature_vectors
    );
    let _ = writeln!(
        s,
        "  time: {secs:.3} s on {} worker(s), {:.2} M rows/s",
        report.workers,
        rows.input_rows as f64 / secs.max(1e-9) / 1e6
    );
    s
}
