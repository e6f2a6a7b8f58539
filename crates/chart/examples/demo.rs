fn main() {
    use dpselft_chart::*;
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap());
    let c = Chart::Lines(LineChart {
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
                name: "dp-selft:perturb=gaussian".into(),
                points: vec![(0, 0.55), (2, 0.72)],
                reference: Some(0.78),
            },
        ],
    });
    write(&c, &out.join("lines.svg")).unwrap();
    let b = Chart::Bars(BarChart {
        title: "S_val score per candidate set (chosen in orange)".into(),
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
                label: "head,block.1".into(),
                value: -0.70,
                highlight: false,
            },
        ],
    });
    write(&b, &out.join("bars.svg")).unwrap();
    let s = Chart::Scatter(ScatterChart {
        title: "spam at ε = 3: Spearman 0.91, regret 0.000".into(),
        x_label: "synthetic score (−S_val loss)".into(),
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
        ],
    });
    write(&s, &out.join("scatter.svg")).unwrap();
}
