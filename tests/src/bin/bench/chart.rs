//! SVG charts for the report (plotters, SVG backend: no fonts or native libraries needed).

use std::path::Path;

use plotters::prelude::*;

/// A line chart of several named series of (x, y) points.
pub(crate) fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> anyhow::Result<()> {
    let (mut x_max, mut y_max) = (1e-9f64, 1e-9f64);
    for (_, pts) in series {
        for &(x, y) in pts {
            x_max = x_max.max(x);
            y_max = y_max.max(y);
        }
    }
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max * 1.05, 0f64..y_max * 1.1)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()?;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Latency distribution (percentile curve) of several runs: x = percentile, y = ms.
pub(crate) fn percentiles(
    path: &Path,
    title: &str,
    runs: &[(String, &hdrhistogram::Histogram<u64>)],
) -> anyhow::Result<()> {
    let qs = [0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9];
    let series: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|(name, h)| {
            let pts = qs
                .iter()
                .map(|&q| (q, h.value_at_quantile(q / 100.0) as f64 / 1000.0))
                .collect();
            (name.clone(), pts)
        })
        .collect();
    lines(path, title, "percentile", "latency (ms)", &series)
}
