//! Percentile plots as SVG, written by hand (no plotting crate): one line per series, latency
//! (milliseconds, logarithmic) against percentile on the `1/(1-p)` axis that HdrHistogram plots use,
//! so the tail (99 %, 99.9 %, 99.99 %) gets as much room as the median.
//!
//! What it is not: a general plotting library. Fixed size, fixed palette, no interactivity.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

const W: f64 = 900.0;
const H: f64 = 520.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const PALETTE: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

/// x position of percentile `p` (0..100): log10(1 / (1 - p/100)), 0 at p = 0, 5 at 99.999.
pub fn percentile_axis(p: f64) -> f64 {
    let tail = (1.0 - p / 100.0).max(1e-5);
    (1.0 / tail).log10()
}

/// The decades (powers of ten) of a log axis that holds `[min, max]`: at least one decade.
pub fn decades(min: f64, max: f64) -> (i32, i32) {
    if !(min > 0.0 && max >= min && max.is_finite()) {
        return (-1, 0);
    }
    let lo = min.log10().floor() as i32;
    let hi = (max.log10().ceil() as i32).max(lo + 1);
    (lo, hi)
}

/// The SVG text: `series` are (label, [(percentile, microseconds)]). The latency axis is
/// logarithmic (whole decades), so a saturated target does not flatten the others.
pub fn svg(title: &str, series: &[(String, Vec<(f64, u64)>)]) -> String {
    let values = || series.iter().flat_map(|(_, p)| p.iter().map(|(_, v)| (*v).max(1) as f64 / 1000.0));
    let (lo, hi) = decades(values().fold(f64::INFINITY, f64::min), values().fold(0.0, f64::max));
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |p: f64| LEFT + percentile_axis(p) / 5.0 * pw;
    let y = |ms: f64| TOP + ph - ((ms.max(1e-3).log10() - lo as f64) / (hi - lo) as f64).clamp(0.0, 1.0) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" font-size="16" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        escape(title)
    );
    // Grid and axes.
    for (p, label) in
        [(0.0, "0%"), (90.0, "90%"), (99.0, "99%"), (99.9, "99.9%"), (99.99, "99.99%"), (99.999, "99.999%")]
    {
        let xp = x(p);
        let _ = writeln!(s, r##"<line x1="{xp:.1}" y1="{TOP}" x2="{xp:.1}" y2="{:.1}" stroke="#ddd"/>"##, TOP + ph);
        let _ = writeln!(s, r#"<text x="{xp:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#, TOP + ph + 18.0);
    }
    for d in lo..=hi {
        let ms = 10f64.powi(d);
        let yp = y(ms);
        let _ = writeln!(s, r##"<line x1="{LEFT}" y1="{yp:.1}" x2="{:.1}" y2="{yp:.1}" stroke="#ddd"/>"##, LEFT + pw);
        let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#, LEFT - 6.0, yp + 4.0, trim(ms));
    }
    frame(&mut s, pw, ph, "percentile", "latency (ms)");
    for (i, (label, points)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let path: Vec<String> =
            points.iter().map(|(p, us)| format!("{:.1},{:.1}", x(*p), y(*us as f64 / 1000.0))).collect();
        let _ = writeln!(s, r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#, path.join(" "));
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let lx = LEFT + pw + 12.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/>"#,
            lx + 22.0
        );
        let _ = writeln!(s, r#"<text x="{}" y="{}">{}</text>"#, lx + 28.0, ly + 4.0, escape(label));
    }
    s.push_str("</svg>\n");
    s
}

/// Writes [`svg`] to `path`.
pub fn write_svg(path: &Path, title: &str, series: &[(String, Vec<(f64, u64)>)]) -> Result<()> {
    std::fs::write(path, svg(title, series)).with_context(|| format!("writing {}", path.display()))
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The plot area's border and the two axis labels of a chart whose plot area (`pw` x `ph`)
/// starts at (`LEFT`, `TOP`) in an SVG of height `H` (the same margins for every chart here).
pub fn frame(s: &mut String, pw: f64, ph: f64, x_label: &str, y_label: &str) {
    let _ = writeln!(s, r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##);
    let _ =
        writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{x_label}</text>"#, LEFT + pw / 2.0, H - 15.0);
    let _ = writeln!(
        s,
        r#"<text transform="translate(22 {:.1}) rotate(-90)" text-anchor="middle">{y_label}</text>"#,
        TOP + ph / 2.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_and_ceiling() {
        assert_eq!(percentile_axis(0.0), 0.0);
        assert!((percentile_axis(99.0) - 2.0).abs() < 1e-9);
        assert!((percentile_axis(100.0) - 5.0).abs() < 1e-9);
        assert_eq!(decades(0.3, 45.0), (-1, 2));
        assert_eq!(decades(1.0, 1.0), (0, 1));
        assert_eq!(decades(0.0, 5.0), (-1, 0));
    }

    #[test]
    fn one_polyline_per_series_with_escaped_labels() {
        let pts = vec![(0.0, 500), (90.0, 900), (99.0, 2_000)];
        let s = svg("t", &[("a<b".into(), pts.clone()), ("c".into(), pts)]);
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains("a&lt;b") && s.starts_with("<svg") && s.ends_with("</svg>\n"));
    }
}
