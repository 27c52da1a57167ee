//! `pipeline report`: a committed output's manifest as one self-contained HTML page (rows read,
//! kept and dropped by reason, label balance, feature means, rows and bytes per shard).

use std::io::Write;

use report::{Bars, Page, number};
use shards::store::create_file;
use shards::{Dataset, DropReason, Location, Manifest, S3Options};

use crate::{Error, Result};

/// What to render and where.
#[derive(Debug, Clone)]
pub struct ReportConfig {
    /// A committed shard output (directory or S3 prefix).
    pub output: Location,
    /// Where the HTML file goes (a path or `s3://bucket/key`).
    pub page: Location,
    /// Replace an existing page.
    pub overwrite: bool,
    /// How S3 locations are reached (unused for local ones).
    pub s3: S3Options,
}

/// Reads the manifest of `config.output` and writes its page to `config.page`; returns the
/// page's size in bytes.
pub fn report(config: &ReportConfig) -> Result<u64> {
    let dataset = Dataset::open(&config.output, &config.s3)?;
    let manifest = dataset.manifest().ok_or_else(|| {
        Error::Config(format!(
            "{}: no {} (only outputs of `pipeline run` have one to report on)",
            config.output,
            shards::manifest::MANIFEST_NAME
        ))
    })?;
    let html = manifest_page(&config.output.to_string(), manifest)?;
    let mut file = create_file(&config.page, config.overwrite, &config.s3)?;
    file.write_all(html.as_bytes())
        .map_err(|e| shards::Error::io(config.page.to_string(), e))?;
    Ok(file.finish()?.bytes)
}

/// The page for `manifest`, read from `output`.
pub fn manifest_page(output: &str, m: &Manifest) -> Result<String> {
    let plot = |e: report::Error| Error::Config(e.to_string());
    let mut page = Page::new(&format!("Shards: {output}"));
    page.note(
        "This page shows exact statistics of the input rows (counts, label balance, feature \
         means). They are not differentially private: do not publish this page or the \
         manifest it is drawn from with the data's privacy in mind.",
    );

    page.heading("Rows");
    let r = &m.rows;
    let kept_share = if r.input_rows > 0 {
        r.kept as f64 / r.input_rows as f64
    } else {
        0.0
    };
    page.table(
        &[
            "input",
            "rows read",
            "kept",
            "kept share",
            "dropped",
            "header lines",
        ],
        &[vec![
            m.options.input.clone(),
            r.input_rows.to_string(),
            r.kept.to_string(),
            number(kept_share, 4),
            r.dropped_total().to_string(),
            r.header_lines.to_string(),
        ]],
    );
    let dropped: Vec<(String, f64)> = DropReason::ALL
        .iter()
        .map(|reason| {
            let n = r.dropped.get(reason).copied().unwrap_or(0);
            (reason.name().to_string(), n as f64)
        })
        .collect();
    page.table(
        &["dropped because", "rows"],
        &dropped
            .iter()
            .map(|(name, n)| vec![name.clone(), number(*n, 6)])
            .collect::<Vec<_>>(),
    );
    let svg = Bars {
        title: "Dropped rows by reason".into(),
        x_label: "reason".into(),
        y_label: "rows".into(),
        bars: dropped,
    }
    .svg()
    .map_err(plot)?;
    page.figure(&svg, "Rows dropped by the cleaning rules, by reason.");

    page.heading("Label balance");
    let labels: Vec<(String, f64)> = m
        .labels
        .iter()
        .map(|(value, n)| (format!("{} = {value}", m.schema.label), *n as f64))
        .collect();
    page.table(
        &["label", "rows", "share"],
        &labels
            .iter()
            .map(|(name, n)| {
                let share = if r.kept > 0 { n / r.kept as f64 } else { 0.0 };
                vec![name.clone(), number(*n, 6), number(share, 4)]
            })
            .collect::<Vec<_>>(),
    );
    let svg = Bars {
        title: "Kept rows by label".into(),
        x_label: m.schema.label.clone(),
        y_label: "rows".into(),
        bars: labels,
    }
    .svg()
    .map_err(plot)?;
    page.figure(&svg, "Kept rows by label value.");

    page.heading("Feature means");
    let means: Vec<(String, f64)> = m
        .schema
        .features
        .iter()
        .map(|f| {
            (
                f.clone(),
                m.feature_means.get(f).copied().unwrap_or(f64::NAN),
            )
        })
        .collect();
    page.table(
        &["feature", "mean over kept rows"],
        &means
            .iter()
            .map(|(f, v)| vec![f.clone(), number(*v, 4)])
            .collect::<Vec<_>>(),
    );
    let svg = Bars {
        title: "Feature means".into(),
        x_label: "feature".into(),
        y_label: "mean".into(),
        bars: means,
    }
    .svg()
    .map_err(plot)?;
    page.figure(&svg, "Mean of each feature over the kept rows.");
    page.paragraph(&format!(
        "{} distinct feature vectors among the kept rows.",
        m.distinct_feature_vectors
    ));

    page.heading("Shards");
    page.table(
        &["shard", "rows", "bytes", "CRC-32"],
        &m.shards
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.rows.to_string(),
                    s.bytes.to_string(),
                    s.crc32.clone(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    let svg = Bars {
        title: "Rows per shard".into(),
        x_label: "shard".into(),
        y_label: "rows".into(),
        bars: m
            .shards
            .iter()
            .map(|s| {
                (
                    s.name.trim_start_matches("part-").to_string(),
                    s.rows as f64,
                )
            })
            .collect(),
    }
    .svg()
    .map_err(plot)?;
    page.figure(
        &svg,
        "Records per shard (shard = splitmix64(offset) mod shards).",
    );

    page.heading("Schema and options");
    page.table(
        &["setting", "value"],
        &[
            vec!["format".to_string(), m.format.clone()],
            vec!["label".to_string(), m.schema.label.clone()],
            vec!["features".to_string(), m.schema.features.join(", ")],
            vec![
                "input columns".to_string(),
                m.schema.input_columns.join(", "),
            ],
            vec!["shards".to_string(), m.options.shards.to_string()],
            vec![
                "missing values".to_string(),
                m.options
                    .na_values
                    .iter()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ],
        ],
    );
    Ok(page.render())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RunConfig;

    #[test]
    fn page_of_a_real_output_holds_its_figures() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("in.csv");
        std::fs::write(
            &csv,
            "sex,married,black,asian,collegedegree,employed,militaryservice,uscitizen,\
             disability,englishability,blackfemale,targetted\n\
             1,0,1,0,1,1,0,1,0,1,1,0\n0,1,0,0,1,0,0,1,0,1,0,0\nNA,0,1,0,1,1,0,1,0,1,1,0\n\
             1,0,1,0,1,7,0,1,0,1,1,0\n",
        )
        .unwrap();
        let out = dir.path().join("shards");
        crate::run(&RunConfig {
            shards: 3,
            ..RunConfig::new(Location::Local(csv), Location::Local(out.clone()))
        })
        .unwrap();
        let page = dir.path().join("report.html");
        let config = ReportConfig {
            output: Location::Local(out.clone()),
            page: Location::Local(page.clone()),
            overwrite: false,
            s3: Default::default(),
        };
        let bytes = report(&config).unwrap();
        let html = std::fs::read_to_string(&page).unwrap();
        assert_eq!(bytes, html.len() as u64);
        for text in [
            "Dropped rows by reason",
            "label_not_binary",
            "Kept rows by label",
            "Feature means",
            "Rows per shard",
            "not differentially private",
        ] {
            assert!(html.contains(text), "{text} missing");
        }
        // rows read 4, kept 2, dropped 2
        assert!(html.contains("<td class=\"n\">4</td><td class=\"n\">2</td>"));
        assert!(!html.contains("<script"));

        let again = report(&config).unwrap_err().to_string();
        assert!(again.contains("report.html"), "{again}");

        let mut no_manifest = config.clone();
        std::fs::remove_file(out.join("_manifest.json")).unwrap();
        no_manifest.overwrite = true;
        let e = report(&no_manifest).unwrap_err().to_string();
        assert!(e.contains("_manifest.json"), "{e}");
    }
}
