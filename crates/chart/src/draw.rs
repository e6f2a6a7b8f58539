//! The three charts, drawn with plotters on its SVG backend (text is measured by plotters'
//! font-free estimate and set by the viewer, so no font is needed here).

use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::{BLUE, BarChart, ChartError, LineChart, ORANGE, PALETTE, ScatterChart};

const FONT: &str = "sans-serif";

fn rgb((r, g, b): (u8, u8, u8)) -> RGBColor {
    RGBColor(r, g, b)
}

fn draw_err(e: impl std::fmt::Display) -> ChartError {
    ChartError::Draw(e.to_string())
}

/// The range `values` span (finite ones), widened by `pad` of the span on each side, never
/// empty.
fn span(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let width = (hi - lo).max(1e-3);
    (lo - pad * width, hi + pad * width)
}

/// The width of a label column for `labels` (plotters' estimate of 12 px text).
fn label_width<'a>(labels: impl Iterator<Item = &'a str>) -> u32 {
    let chars = labels.map(|l| l.chars().count()).max().unwrap_or(0) as u32;
    (chars * 7 + 16).clamp(50, 320)
}

/// Renders `draw` on an SVG canvas of `size`.
fn on_svg(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), ChartError>,
) -> Result<String, ChartError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw(&root)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// Horizontal bars; the bars start a little below the lowest value so differences show.
pub(crate) fn bars(c: &BarChart) -> Result<String, ChartError> {
    let n = c.bars.len().max(1);
    let (base, hi) = span(c.bars.iter().map(|b| b.value), 0.1);
    // Room right of the longest bar for its printed value.
    let top = hi + 0.25 * (hi - base);
    let row = |k: usize| c.bars.len().saturating_sub(1 + k); // top to bottom
    let size = (760, 80 + 24 * n as u32);
    on_svg(size, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&c.title, (FONT, 15))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(label_width(c.bars.iter().map(|b| b.label.as_str())))
            .build_cartesian_2d(base..top, segments(n))
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(k) => c
                    .bars
                    .get(row(*k))
                    .map(|b| b.label.clone())
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .x_desc(&c.value_label)
            .draw()
            .map_err(draw_err)?;
        let shown = c
            .bars
            .iter()
            .enumerate()
            .filter(|(_, b)| b.value.is_finite());
        chart
            .draw_series(shown.clone().map(|(i, b)| {
                let k = row(i);
                let color = if b.highlight { ORANGE } else { BLUE };
                let mut r = Rectangle::new(
                    [
                        (base, SegmentValue::Exact(k)),
                        (b.value, SegmentValue::Exact(k + 1)),
                    ],
                    rgb(color).filled(),
                );
                r.set_margin(3, 3, 0, 0);
                r
            }))
            .map_err(draw_err)?;
        chart
            .draw_series(shown.map(|(i, b)| {
                Text::new(
                    format!(" {:.4}", b.value),
                    (b.value, SegmentValue::CenterOf(row(i))),
                    TextStyle::from((FONT, 12).into_font()).pos(text_left_middle()),
                )
            }))
            .map_err(draw_err)?;
        Ok(())
    })
}

/// `n` categorical positions 0..n (plotters' segmented range includes its end).
fn segments(
    n: usize,
) -> plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordusize> {
    (0..n.saturating_sub(1)).into_segmented()
}

fn text_left_middle() -> plotters::style::text_anchor::Pos {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    Pos::new(HPos::Left, VPos::Center)
}

/// One line per series over categorical x positions, its reference dashed, the legend in a
/// column to the right of the plot.
pub(crate) fn lines(c: &LineChart) -> Result<String, ChartError> {
    let k = c.x_ticks.len().max(1);
    let ys = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1).chain(s.reference));
    let (lo, hi) = span(ys, 0.05);
    let legend_w = label_width(c.series.iter().map(|s| s.name.as_str())) + 30;
    on_svg((520 + legend_w, 380), |root| {
        let (plot, legend) = root.split_horizontally(520);
        let mut chart = ChartBuilder::on(&plot)
            .caption(&c.title, (FONT, 15))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(segments(k), lo..hi)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(k)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => c.x_ticks.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_desc(&c.y_label)
            .y_label_formatter(&|y| format!("{y:.3}"))
            .draw()
            .map_err(draw_err)?;
        for (i, s) in c.series.iter().enumerate() {
            let color = rgb(PALETTE[i % PALETTE.len()]);
            if let Some(r) = s.reference.filter(|r| r.is_finite()) {
                chart
                    .draw_series(DashedLineSeries::new(
                        [(SegmentValue::Exact(0), r), (SegmentValue::Exact(k), r)],
                        6,
                        4,
                        color.stroke_width(1),
                    ))
                    .map_err(draw_err)?;
            }
            let points: Vec<(SegmentValue<usize>, f64)> = s
                .points
                .iter()
                .filter(|p| p.1.is_finite() && p.0 < k)
                .map(|&(x, y)| (SegmentValue::CenterOf(x), y))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(draw_err)?;
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, color.filled())),
                )
                .map_err(draw_err)?;
            let y = 40 + 18 * i as i32;
            legend
                .draw(&PathElement::new(
                    vec![(4, y), (24, y)],
                    color.stroke_width(2),
                ))
                .map_err(draw_err)?;
            legend
                .draw(&Text::new(
                    s.name.clone(),
                    (30, y),
                    TextStyle::from((FONT, 12).into_font()).pos(text_left_middle()),
                ))
                .map_err(draw_err)?;
        }
        Ok(())
    })
}

/// Labelled dots; highlighted ones orange, circled ones ringed in black.
pub(crate) fn scatter(c: &ScatterChart) -> Result<String, ChartError> {
    let finite: Vec<_> = c
        .points
        .iter()
        .filter(|p| p.x.is_finite() && p.y.is_finite())
        .collect();
    let (x0, x1) = span(finite.iter().map(|p| p.x), 0.08);
    // Room on the right for the last point's label.
    let x1 = x1 + 0.15 * (x1 - x0);
    let (y0, y1) = span(finite.iter().map(|p| p.y), 0.08);
    on_svg((640, 420), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&c.title, (FONT, 14))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc(&c.x_label)
            .y_desc(&c.y_label)
            .draw()
            .map_err(draw_err)?;
        chart
            .draw_series(finite.iter().map(|p| {
                let color = rgb(if p.highlight { ORANGE } else { BLUE });
                EmptyElement::at((p.x, p.y))
                    + Circle::new((0, 0), 4, color.filled())
                    + Text::new(
                        p.label.clone(),
                        (7, 0),
                        TextStyle::from((FONT, 11).into_font()).pos(text_left_middle()),
                    )
            }))
            .map_err(draw_err)?;
        chart
            .draw_series(
                finite
                    .iter()
                    .filter(|p| p.circled)
                    .map(|p| Circle::new((p.x, p.y), 8, BLACK.stroke_width(1))),
            )
            .map_err(draw_err)?;
        Ok(())
    })
}
