//! Charts of dpselft's reports and benchmarks, for people: drawn with `plotters` as SVG (the
//! file a report embeds) and rendered to PNG with `resvg` (for a viewer that shows no SVG).
//! Three kinds, each a plain data type: [`BarChart`] (a run's candidate scores),
//! [`LineChart`] (accuracy against ε per method), [`ScatterChart`] (synthetic score against
//! real accuracy). [`write`] writes both files atomically.

mod draw;
mod png;

use std::path::{Path, PathBuf};

/// Orange: the highlighted bar, point or first series.
pub const ORANGE: (u8, u8, u8) = (0xe8, 0x71, 0x0a);
/// Blue: everything else.
pub const BLUE: (u8, u8, u8) = (0x4a, 0x7e, 0xbb);
/// Series colours, cycled.
pub const PALETTE: [(u8, u8, u8); 10] = [
    ORANGE,
    BLUE,
    (0x3a, 0x9a, 0x4a),
    (0xb2, 0x3a, 0x48),
    (0x7d, 0x5b, 0xa6),
    (0x8c, 0x6d, 0x31),
    (0x17, 0xbe, 0xcf),
    (0x55, 0x55, 0x55),
    (0xbc, 0xbd, 0x22),
    (0xe3, 0x77, 0xc2),
];

/// Horizontal bars, one per row, the value printed beside each.
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    /// The title above the chart.
    pub title: String,
    /// What the values are (the x axis).
    pub value_label: String,
    /// The bars, top to bottom.
    pub bars: Vec<Bar>,
}

/// One bar of a [`BarChart`].
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// The row's name.
    pub label: String,
    /// Its value.
    pub value: f64,
    /// Drawn in orange (the chosen one).
    pub highlight: bool,
}

/// Lines over categorical x positions (e.g. the ε of a grid), one per series, with an optional
/// dashed horizontal reference per series (e.g. its non-private accuracy).
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    /// The title above the chart.
    pub title: String,
    /// The names of the x positions, left to right.
    pub x_ticks: Vec<String>,
    /// The y axis's name.
    pub y_label: String,
    /// The series.
    pub series: Vec<Series>,
}

/// One series of a [`LineChart`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its name in the legend.
    pub name: String,
    /// (x position index, y) points; positions without a value are left out.
    pub points: Vec<(usize, f64)>,
    /// A y drawn as a dashed line across the chart.
    pub reference: Option<f64>,
}

/// Labelled points.
#[derive(Debug, Clone, PartialEq)]
pub struct ScatterChart {
    /// The title above the chart.
    pub title: String,
    /// The x axis's name.
    pub x_label: String,
    /// The y axis's name.
    pub y_label: String,
    /// The points.
    pub points: Vec<Point>,
}

/// One point of a [`ScatterChart`].
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Printed beside the point.
    pub label: String,
    /// Its x.
    pub x: f64,
    /// Its y.
    pub y: f64,
    /// Drawn in orange.
    pub highlight: bool,
    /// Circled in black.
    pub circled: bool,
}

/// What went wrong drawing or writing a chart.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// plotters could not draw (e.g. a non-finite value).
    #[error("drawing the chart: {0}")]
    Draw(String),
    /// The PNG could not be rendered or encoded.
    #[error("rendering the chart as PNG: {0}")]
    Png(String),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A chart of any kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Chart {
    /// See [`BarChart`].
    Bars(BarChart),
    /// See [`LineChart`].
    Lines(LineChart),
    /// See [`ScatterChart`].
    Scatter(ScatterChart),
}

impl Chart {
    /// The chart as an SVG document.
    pub fn svg(&self) -> Result<String, ChartError> {
        match self {
            Chart::Bars(c) => draw::bars(c),
            Chart::Lines(c) => draw::lines(c),
            Chart::Scatter(c) => draw::scatter(c),
        }
    }
}

/// The files [`write`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// The SVG file.
    pub svg: PathBuf,
    /// The PNG beside it, unless no font was found to render its text.
    pub png: Option<PathBuf>,
}

/// Writes `chart` as `svg_path` and, when the system has a font for its text, as a PNG beside it
/// (same name, `.png`); each file atomically. A PNG left from an earlier write is removed when no
/// new one can be rendered, so the two files never disagree.
pub fn write(chart: &Chart, svg_path: &Path) -> Result<Written, ChartError> {
    let svg = chart.svg()?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ChartError::Io { path, source }
    };
    dpselft_fsio::write_bytes_atomic(svg_path, svg.as_bytes()).map_err(io(svg_path))?;
    let png_path = svg_path.with_extension("png");
    let png = match png::render(&svg)? {
        Some(bytes) => {
            dpselft_fsio::write_bytes_atomic(&png_path, &bytes).map_err(io(&png_path))?;
            Some(png_path)
        }
        None => {
            match std::fs::remove_file(&png_path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io(&png_path)(e));
                }
                _ => {}
            }
            None
        }
    };
    Ok(Written {
        svg: svg_path.to_path_buf(),
        png,
    })
}
