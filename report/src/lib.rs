//! Self-contained HTML reports: one page with inline CSS and inline SVG plots, no scripts and
//! nothing fetched from the network, so a report opens offline and can be mailed as one file.
//!
//! [`Page`] collects headings, paragraphs, tables and figures; [`chart`] draws the figures
//! (bars and lines, through plotters' SVG backend).
#![deny(missing_docs)]

pub mod chart;

pub use chart::{Bars, Lines, Series};

/// What can go wrong while drawing a report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// plotters could not draw a chart.
    #[error("cannot draw the chart '{chart}': {reason}")]
    Plot {
        /// The chart's title.
        chart: String,
        /// plotters' message.
        reason: String,
    },
}

/// The result of drawing.
pub type Result<T> = std::result::Result<T, Error>;

/// `text` with the five HTML special characters escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An HTML page being built: sections in the order they are added.
#[derive(Debug, Clone)]
pub struct Page {
    title: String,
    body: String,
}

const STYLE: &str = "body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}\
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;\
text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}\
figure{margin:1em 0}figcaption{color:#555;font-size:.9em}.note{background:#f6f6f0;\
border-left:4px solid #c90;padding:.5em .8em}";

impl Page {
    /// An empty page titled `title` (the `<title>` and the top heading).
    pub fn new(title: &str) -> Page {
        Page {
            title: title.to_string(),
            body: String::new(),
        }
    }

    /// A section heading.
    pub fn heading(&mut self, text: &str) -> &mut Self {
        self.body.push_str(&format!("<h2>{}</h2>\n", escape(text)));
        self
    }

    /// A paragraph of plain text.
    pub fn paragraph(&mut self, text: &str) -> &mut Self {
        self.body.push_str(&format!("<p>{}</p>\n", escape(text)));
        self
    }

    /// A highlighted paragraph of plain text (a statement the reader must not miss).
    pub fn note(&mut self, text: &str) -> &mut Self {
        self.body
            .push_str(&format!("<p class=\"note\">{}</p>\n", escape(text)));
        self
    }

    /// A table with a header row; cells that parse as numbers are right-aligned.
    pub fn table<S: AsRef<str>>(&mut self, header: &[&str], rows: &[Vec<S>]) -> &mut Self {
        self.body.push_str("<table>\n<tr>");
        for h in header {
            self.body.push_str(&format!("<th>{}</th>", escape(h)));
        }
        self.body.push_str("</tr>\n");
        for row in rows {
            self.body.push_str("<tr>");
            for cell in row {
                let cell = cell.as_ref();
                let class = if cell.trim().parse::<f64>().is_ok() {
                    " class=\"n\""
                } else {
                    ""
                };
                self.body
                    .push_str(&format!("<td{class}>{}</td>", escape(cell)));
            }
            self.body.push_str("</tr>\n");
        }
        self.body.push_str("</table>\n");
        self
    }

    /// A figure: an SVG drawn by [`chart`] (trusted markup, inserted as is) and its caption.
    pub fn figure(&mut self, svg: &str, caption: &str) -> &mut Self {
        self.body.push_str(&format!(
            "<figure>\n{svg}\n<figcaption>{}</figcaption>\n</figure>\n",
            escape(caption)
        ));
        self
    }

    /// The whole page.
    pub fn render(&self) -> String {
        let title = escape(&self.title);
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{title}</h1>\n\
             {}</body>\n</html>\n",
            self.body
        )
    }
}

/// A number for a table cell: integers as they are, others with `digits` significant digits.
pub fn number(x: f64, digits: usize) -> String {
    if x.is_finite() && x == x.trunc() && x.abs() < 1e15 {
        format!("{x:.0}")
    } else if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e6) {
        format!("{x:.*e}", digits.saturating_sub(1))
    } else {
        let magnitude = if x == 0.0 {
            0
        } else {
            x.abs().log10().floor() as i64
        };
        let decimals = (digits as i64 - 1 - magnitude).max(0) as usize;
        format!("{x:.decimals$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">O'Neil & co</a>"),
            "&lt;a href=&quot;x&quot;&gt;O&#39;Neil &amp; co&lt;/a&gt;"
        );
    }

    #[test]
    fn page_holds_its_parts_in_order_and_escaped() {
        let mut page = Page::new("Run <1>");
        page.heading("Rows")
            .table(&["shard", "rows"], &[vec!["part-00000", "12"]])
            .note("not for <publishing>");
        let html = page.render();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("<title>Run &lt;1&gt;</title>"));
        assert!(html.contains("<td class=\"n\">12</td>"));
        assert!(html.contains("not for &lt;publishing&gt;"));
        assert!(html.find("<h2>Rows</h2>").unwrap() < html.find("<table>").unwrap());
        assert!(!html.contains("<script"), "no scripts");
        assert!(!html.contains("http"), "nothing fetched");
    }

    #[test]
    fn numbers_for_tables() {
        assert_eq!(number(12.0, 3), "12");
        assert_eq!(number(0.68412, 3), "0.684");
        assert_eq!(number(1.5e-5, 2), "1.5e-5");
        assert_eq!(number(f64::NAN, 3), "NaN");
    }
}
