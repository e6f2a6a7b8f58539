//! Each chart kind draws its data into an SVG with its labels, survives values that cannot be
//! drawn, and renders to a PNG of the SVG's size when the system has a font.

use dpselft_chart::{Bar, BarChart, Chart, LineChart, Point, ScatterChart, Series, write};

fn bars() -> Chart {
    Chart::Bars(BarChart {
        title: "S_val score per candidate".into(),
        value_label: "score".into(),
        bars: vec![
            Bar {
                label: "head".into(),
                value: -0.69,
                highlight: true,
            },
            Bar {
                label: "head,block.0".into(),
                value: -0.71,
                highlight: false,
            },
            Bar {
                label: "not drawn".into(),
                value: f64::NAN,
                highlight: false,
            },
        ],
    })
}

fn lines() -> Chart {
    Chart::Lines(LineChart {
        title: "test accuracy against ε".into(),
        x_ticks: vec!["ε = 1".into(), "ε = 3".into(), "ε = 8".into()],
        y_label: "accuracy".into(),
        series: vec![
            Series {
                name: "last-k".into(),
                points: vec![(0, 0.5), (1, 0.6), (2, 0.7)],
                reference: Some(0.8),
            },
            Series {
                name: "dp-selft".into(),
                points: vec![(0, 0.55), (2, 0.72)],
                reference: None,
            },
        ],
    })
}

fn scatter() -> Chart {
    Chart::Scatter(ScatterChart {
        title: "spam at ε = 3".into(),
        x_label: "synthetic score".into(),
        y_label: "held-out accuracy".into(),
        points: vec![
            Point {
                label: "head".into(),
                x: -0.6,
                y: 0.8,
                highlight: true,
                circled: false,
            },
            Point {
                label: "head,block.5".into(),
                x: -0.5,
                y: 0.85,
                highlight: false,
                circled: true,
            },
            Point {
                label: "inf".into(),
                x: f64::INFINITY,
                y: 0.1,
                highlight: false,
                circled: false,
            },
        ],
    })
}

#[test]
fn every_chart_kind_draws_its_labels() {
    for (chart, labels) in [
        (
            bars(),
            vec!["S_val score per candidate", "head,block.0", "-0.6900"],
        ),
        (
            lines(),
            vec![
                "test accuracy against ε",
                "ε = 8",
                "last-k",
                "dp-selft",
                "accuracy",
            ],
        ),
        (
            scatter(),
            vec!["spam at ε = 3", "head,block.5", "synthetic score"],
        ),
    ] {
        let svg = chart.svg().unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        for l in labels {
            assert!(svg.contains(l), "{l} missing from\n{svg}");
        }
    }
}

#[test]
fn an_empty_chart_still_draws() {
    let empty = Chart::Bars(BarChart {
        title: "none".into(),
        value_label: "x".into(),
        bars: vec![],
    });
    assert!(empty.svg().unwrap().contains("none"));
    let empty = Chart::Lines(LineChart {
        title: "none".into(),
        x_ticks: vec![],
        y_label: "y".into(),
        series: vec![],
    });
    assert!(empty.svg().unwrap().contains("none"));
}

#[test]
fn write_puts_an_svg_and_a_png_of_its_size_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chart.svg");
    let written = write(&lines(), &path).unwrap();
    let svg = std::fs::read_to_string(&written.svg).unwrap();
    assert!(svg.contains("last-k"));
    let has_fonts = !resvg_fonts_missing();
    assert_eq!(written.png.is_some(), has_fonts);
    if let Some(png) = written.png {
        let bytes = std::fs::read(png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // The IHDR chunk: width and height, big-endian, after the signature and chunk header.
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        let want = |attr: &str| -> u32 {
            let at = svg.find(&format!("{attr}=\"")).unwrap() + attr.len() + 2;
            svg[at..].split('"').next().unwrap().parse().unwrap()
        };
        assert_eq!((w, h), (want("width"), want("height")));
    }
}

/// Whether the machine has no font file at all (then no PNG is written, by design).
fn resvg_fonts_missing() -> bool {
    let dirs = ["/usr/share/fonts", "/usr/local/share/fonts", "/root/.fonts"];
    !dirs.iter().any(|d| walk_has_font(std::path::Path::new(d)))
}

fn walk_has_font(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            walk_has_font(&p)
        } else {
            p.extension()
                .is_some_and(|x| x == "ttf" || x == "otf" || x == "ttc")
        }
    })
}
