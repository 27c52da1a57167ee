//! Bar and line charts as SVG strings, drawn with plotters' SVG backend.

use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use crate::{Error, Result};

const SIZE: (u32, u32) = (760, 380);

/// A bar chart: one bar per label.
#[derive(Debug, Clone, Default)]
pub struct Bars {
    /// The chart's title.
    pub title: String,
    /// The horizontal axis' description.
    pub x_label: String,
    /// The vertical axis' description.
    pub y_label: String,
    /// The bars: label and height (negative heights are drawn as 0).
    pub bars: Vec<(String, f64)>,
}

/// One line of a [`Lines`] chart.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// The legend's name for it.
    pub name: String,
    /// Its points, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// For each point, a (low, high) range drawn as an error bar.
    pub spread: Option<Vec<(f64, f64)>>,
    /// Drawn dashed-looking (thin, no markers): for baselines and reference lines.
    pub reference: bool,
}

/// A line chart of several series over one pair of axes.
#[derive(Debug, Clone, Default)]
pub struct Lines {
    /// The chart's title.
    pub title: String,
    /// The horizontal axis' description.
    pub x_label: String,
    /// The vertical axis' description.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
    /// A logarithmic horizontal axis (every x must then be positive).
    pub log_x: bool,
}

fn plot_error(chart: &str) -> impl Fn(&dyn std::fmt::Display) -> Error + '_ {
    move |e| Error::Plot {
        chart: chart.to_string(),
        reason: e.to_string(),
    }
}

/// An SVG saying that a chart has no data, in place of the chart.
fn empty(title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"60\">\
         <text x=\"10\" y=\"35\" font-family=\"sans-serif\" font-size=\"16\">{}: no data</text></svg>",
        SIZE.0,
        crate::escape(title)
    )
}

/// A chart on `root` with the title, margins and label areas every chart here has.
fn builder<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(72);
    builder
}

/// `(lo, hi)` widened so that a flat or single value still has a visible range.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let span = hi - lo;
    if span > 0.0 {
        (lo - span * 0.05, hi + span * 0.05)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - pad, hi + pad)
    }
}

impl Bars {
    /// The chart as an SVG document.
    pub fn svg(&self) -> Result<String> {
        if self.bars.is_empty() {
            return Ok(empty(&self.title));
        }
        let err = plot_error(&self.title);
        let top = self
            .bars
            .iter()
            .map(|b| b.1)
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        let top = if top > 0.0 { top * 1.1 } else { 1.0 };
        let n = self.bars.len();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            root.fill(&WHITE).map_err(|e| err(&e))?;
            let mut chart = builder(&root, &self.title)
                .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..top)
                .map_err(|e| err(&e))?;
            let labels: Vec<&str> = self.bars.iter().map(|b| b.0.as_str()).collect();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .light_line_style(TRANSPARENT)
                .x_labels(n)
                .x_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) => labels.get(*i).unwrap_or(&"").to_string(),
                    _ => String::new(),
                })
                .x_desc(&self.x_label)
                .y_desc(&self.y_label)
                .label_style(("sans-serif", 13))
                .axis_desc_style(("sans-serif", 15))
                .draw()
                .map_err(|e| err(&e))?;
            chart
                .draw_series(
                    Histogram::vertical(&chart)
                        .style(Palette99::pick(0).filled())
                        .margin(6)
                        .data(
                            self.bars.iter().enumerate().map(|(i, b)| {
                                (i, if b.1.is_finite() { b.1.max(0.0) } else { 0.0 })
                            }),
                        ),
                )
                .map_err(|e| err(&e))?;
            root.present().map_err(|e| err(&e))?;
        }
        Ok(svg)
    }
}

impl Lines {
    /// The chart as an SVG document.
    pub fn svg(&self) -> Result<String> {
        let points = || {
            self.series
                .iter()
                .flat_map(|s| {
                    let spread = s.spread.iter().flatten().flat_map(|&(lo, hi)| [lo, hi]);
                    s.points.iter().map(|p| p.1).chain(spread).map(|y| (0.0, y))
                })
                .chain(self.series.iter().flat_map(|s| s.points.iter().copied()))
                .filter(|p| p.0.is_finite() && p.1.is_finite())
        };
        let xs: Vec<f64> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .filter(|x| x.is_finite() && (!self.log_x || *x > 0.0))
            .collect();
        if xs.is_empty() {
            return Ok(empty(&self.title));
        }
        let (x_lo, x_hi) = xs
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            });
        let (y_lo, y_hi) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
        let (y_lo, y_hi) = padded(y_lo, y_hi);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            root.fill(&WHITE).map_err(|e| plot_error(&self.title)(&e))?;
            if self.log_x {
                let (lo, hi) = if x_hi > x_lo {
                    (x_lo / 1.2, x_hi * 1.2)
                } else {
                    (x_lo / 2.0, x_hi * 2.0)
                };
                let corner = self.emptiest_corner((lo.ln(), hi.ln()), (y_lo, y_hi));
                self.draw(&root, (lo..hi).log_scale(), y_lo..y_hi, corner)?;
            } else {
                let (lo, hi) = padded(x_lo, x_hi);
                let corner = self.emptiest_corner((lo, hi), (y_lo, y_hi));
                self.draw(&root, lo..hi, y_lo..y_hi, corner)?;
            }
            root.present().map_err(|e| plot_error(&self.title)(&e))?;
        }
        Ok(svg)
    }

    /// The corner of the plot (x and y ranges given, x as drawn: log for a log axis) that the
    /// lines, sampled along each segment, and the error bars cross least: the legend goes there.
    fn emptiest_corner(&self, x: (f64, f64), y: (f64, f64)) -> SeriesLabelPosition {
        // Regions: left and right (the outer 40%), each in three bands: top, middle, bottom.
        let mut counts = [0usize; 6];
        let mut mark = |px: f64, py: f64| {
            let u = (if self.log_x { px.ln() } else { px } - x.0) / (x.1 - x.0);
            let v = (py - y.0) / (y.1 - y.0);
            if !(u.is_finite() && v.is_finite()) || (0.4..=0.6).contains(&u) {
                return;
            }
            let side = usize::from(u > 0.6);
            let band = if v > 0.65 {
                0
            } else if v >= 0.35 {
                1
            } else {
                2
            };
            counts[band * 2 + side] += 1;
            // Near a band's edge, the legend there would touch it too.
            if (0.6..=0.7).contains(&v) || (0.3..=0.4).contains(&v) {
                let other = if (0.6..=0.7).contains(&v) {
                    1 - band.min(1)
                } else if band == 1 {
                    2
                } else {
                    1
                };
                counts[other * 2 + side] += 1;
            }
        };
        for s in &self.series {
            for w in s.points.windows(2) {
                for i in 0..=16 {
                    let t = f64::from(i) / 16.0;
                    mark(
                        w[0].0 + (w[1].0 - w[0].0) * t,
                        w[0].1 + (w[1].1 - w[0].1) * t,
                    );
                }
            }
            for (p, &(lo, hi)) in s.points.iter().zip(s.spread.iter().flatten()) {
                mark(p.0, p.1);
                mark(p.0, lo);
                mark(p.0, hi);
            }
            if let [p] = s.points.as_slice() {
                mark(p.0, p.1);
            }
        }
        // Ties go to the upper right, lower right, middle right, then the left side likewise.
        let order = [1, 5, 3, 0, 4, 2];
        let best = order
            .into_iter()
            .min_by_key(|&i| counts[i])
            .expect("six regions");
        match best {
            0 => SeriesLabelPosition::UpperLeft,
            1 => SeriesLabelPosition::UpperRight,
            2 => SeriesLabelPosition::MiddleLeft,
            3 => SeriesLabelPosition::MiddleRight,
            4 => SeriesLabelPosition::LowerLeft,
            _ => SeriesLabelPosition::LowerRight,
        }
    }

    fn draw<X>(
        &self,
        root: &DrawingArea<SVGBackend<'_>, Shift>,
        x: X,
        y: std::ops::Range<f64>,
        legend: SeriesLabelPosition,
    ) -> Result<()>
    where
        X: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
    {
        let err = plot_error(&self.title);
        let mut chart = builder(root, &self.title)
            .build_cartesian_2d(x, y)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 15))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, s) in self.series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let style = if s.reference {
                color.stroke_width(1)
            } else {
                color.stroke_width(2)
            };
            let points: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite() && (!self.log_x || p.0 > 0.0))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), style))
                .map_err(|e| err(&e))?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
            if !s.reference {
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| err(&e))?;
            }
            if let Some(spread) = &s.spread {
                chart
                    .draw_series(
                        s.points
                            .iter()
                            .zip(spread)
                            .filter(|&(p, &(lo, hi))| {
                                p.0.is_finite() && lo.is_finite() && hi.is_finite()
                            })
                            .map(|(p, &(lo, hi))| {
                                ErrorBar::new_vertical(p.0, lo, p.1, hi, color.filled(), 8)
                            }),
                    )
                    .map_err(|e| err(&e))?;
            }
        }
        chart
            .configure_series_labels()
            .position(legend)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text elements' contents (plotters puts each on a line of its own).
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .map(|t| {
                let inner = &t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()];
                inner.trim().to_string()
            })
            .collect()
    }

    #[test]
    fn bars_draw_each_label_and_the_axis_names() {
        let svg = Bars {
            title: "Rows per shard".into(),
            x_label: "shard".into(),
            y_label: "rows".into(),
            bars: vec![("part-00000".into(), 10.0), ("part-00001".into(), 30.0)],
        }
        .svg()
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        let drawn = texts(&svg);
        for text in [
            "Rows per shard",
            "part-00000",
            "part-00001",
            "shard",
            "rows",
        ] {
            assert!(drawn.iter().any(|t| t == text), "{text} missing: {drawn:?}");
        }
        assert!(svg.matches("<rect").count() >= 3, "background and two bars");

        let one = Bars {
            title: "One".into(),
            bars: vec![("only".into(), 3.0)],
            ..Bars::default()
        }
        .svg()
        .unwrap();
        assert!(texts(&one).iter().any(|t| t == "only"));
    }

    #[test]
    fn lines_on_a_log_axis_with_spread_and_a_reference() {
        let svg = Lines {
            title: "Accuracy against epsilon".into(),
            x_label: "epsilon".into(),
            y_label: "test accuracy".into(),
            series: vec![
                Series {
                    name: "DP-SGD".into(),
                    points: vec![(0.5, 0.6), (1.0, 0.65), (8.0, 0.68)],
                    spread: Some(vec![(0.58, 0.62), (0.64, 0.66), (0.67, 0.69)]),
                    reference: false,
                },
                Series {
                    name: "majority class".into(),
                    points: vec![(0.5, 0.55), (8.0, 0.55)],
                    spread: None,
                    reference: true,
                },
            ],
            log_x: true,
        }
        .svg()
        .unwrap();
        let drawn = texts(&svg);
        for text in [
            "Accuracy against epsilon",
            "DP-SGD",
            "majority class",
            "epsilon",
        ] {
            assert!(drawn.iter().any(|t| t == text), "{text} missing: {drawn:?}");
        }
        assert!(svg.contains("<polyline"), "lines are drawn");
        assert!(svg.contains("<circle"), "markers are drawn");
    }

    /// A rising curve leaves the lower right free, a falling one the upper right.
    #[test]
    fn the_legend_goes_where_the_lines_are_not() {
        let lines = |points: Vec<(f64, f64)>| Lines {
            series: vec![Series {
                name: "a".into(),
                points,
                ..Series::default()
            }],
            ..Lines::default()
        };
        let rising = lines(vec![(0.0, 0.0), (1.0, 1.0)]);
        assert!(matches!(
            rising.emptiest_corner((0.0, 1.0), (0.0, 1.0)),
            SeriesLabelPosition::LowerRight
        ));
        // Two flat lines near the top and the bottom leave the middle free.
        let apart = Lines {
            series: vec![
                Series {
                    name: "high".into(),
                    points: vec![(0.0, 0.9), (1.0, 0.95)],
                    ..Series::default()
                },
                Series {
                    name: "low".into(),
                    points: vec![(0.0, 0.05), (1.0, 0.2)],
                    ..Series::default()
                },
            ],
            ..Lines::default()
        };
        assert!(matches!(
            apart.emptiest_corner((0.0, 1.0), (0.0, 1.0)),
            SeriesLabelPosition::MiddleRight
        ));
        let falling = lines(vec![(0.0, 1.0), (1.0, 0.0)]);
        assert!(matches!(
            falling.emptiest_corner((0.0, 1.0), (0.0, 1.0)),
            SeriesLabelPosition::UpperRight
        ));
    }

    #[test]
    fn no_data_says_so() {
        let svg = Lines {
            title: "Loss".into(),
            ..Lines::default()
        }
        .svg()
        .unwrap();
        assert!(svg.contains("Loss: no data"));
        let svg = Bars::default().svg().unwrap();
        assert!(svg.contains("no data"));
    }

    #[test]
    fn one_point_and_flat_values_still_draw() {
        let svg = Lines {
            title: "One epoch".into(),
            series: vec![Series {
                name: "loss".into(),
                points: vec![(1.0, 0.5)],
                ..Series::default()
            }],
            ..Lines::default()
        }
        .svg()
        .unwrap();
        assert!(svg.contains("<circle"));
    }
}
