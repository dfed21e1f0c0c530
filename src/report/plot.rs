//! Inline SVG line plots, one per series. Every coordinate written is finite:
//! empty and constant series get a made-up range instead of a zero span.

use std::fmt::Write;

use super::html::escape;
use super::{Series, TimelineEntry};

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 40.0;
/// Above this many points the line is drawn without a dot per point.
const MAX_DOTS: usize = 60;

/// One `<svg>` plotting `series` over `[0, x_end]` seconds (widened to fit
/// every point and marker), with a dashed marker at each timeline action.
pub(super) fn svg(series: &Series, x_end: f64, marks: &[TimelineEntry]) -> String {
    let mut points: Vec<(f64, f64)> = series
        .points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let marks: Vec<&TimelineEntry> = marks.iter().filter(|m| m.at_s.is_finite()).collect();

    let xs = points
        .iter()
        .map(|p| p.0)
        .chain(marks.iter().map(|m| m.at_s));
    let (x_lo, x_hi) = xs.fold((0.0f64, finite_or(x_end, 0.0)), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    let x_axis = Axis::new(x_lo, x_hi, false);
    let (y_lo, y_hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    let y_axis = if points.is_empty() {
        Axis::new(0.0, 1.0, true)
    } else {
        Axis::new(y_lo, y_hi, true)
    };

    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| finite_or(LEFT + x_axis.fraction(x) * plot_w, LEFT);
    let py = |y: f64| finite_or(TOP + (1.0 - y_axis.fraction(y)) * plot_h, TOP + plot_h);

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{}">"#,
        escape(&series.name)
    );
    let _ = write!(
        s,
        r#"<rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>"#
    );

    for &t in &y_axis.ticks {
        let y = py(t);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            y_axis.label(t)
        );
    }
    for &t in &x_axis.ticks {
        let x = px(t);
        let _ = write!(
            s,
            r#"<line class="tickmark" x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}"/><text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + plot_h,
            TOP + plot_h + 5.0,
            TOP + plot_h + 18.0,
            x_axis.label(t)
        );
    }
    let _ = write!(
        s,
        r#"<text class="axis" x="{:.1}" y="{:.1}" text-anchor="middle">time (s)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 4.0
    );
    if !series.unit.is_empty() {
        let (x, y) = (14.0, TOP + plot_h / 2.0);
        let _ = write!(
            s,
            r#"<text class="axis" x="{x}" y="{y:.1}" text-anchor="middle" transform="rotate(-90 {x} {y:.1})">{}</text>"#,
            escape(&series.unit)
        );
    }

    for m in &marks {
        let x = px(m.at_s);
        let _ = write!(
            s,
            r#"<line class="mark" x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}"><title>{} s: {}</title></line>"#,
            TOP + plot_h,
            super::format_number(m.at_s),
            escape(&m.action)
        );
    }

    if points.is_empty() {
        let _ = write!(
            s,
            r#"<text class="nodata" x="{:.1}" y="{:.1}" text-anchor="middle">no data</text>"#,
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
    } else {
        if points.len() > 1 {
            s.push_str(r#"<polyline class="line" points=""#);
            for (i, &(x, y)) in points.iter().enumerate() {
                let sep = if i == 0 { "" } else { " " };
                let _ = write!(s, "{sep}{:.1},{:.1}", px(x), py(y));
            }
            s.push_str(r#""/>"#);
        }
        if points.len() <= MAX_DOTS {
            for &(x, y) in &points {
                let _ = write!(
                    s,
                    r#"<circle class="dot" cx="{:.1}" cy="{:.1}" r="2.5"/>"#,
                    px(x),
                    py(y)
                );
            }
        }
    }
    s.push_str("</svg>");
    s
}

/// A linear axis over `[lo, hi]` with "nice" ticks (1, 2 or 5 times a power
/// of ten). `lo < hi` always holds, so `fraction` never divides by zero.
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    step: f64,
    /// Divisor and suffix for labels of large values (`k`, `M`, ...).
    scale: (f64, &'static str),
}

impl Axis {
    /// With `round`, the range is widened to whole steps (for values);
    /// without, it stays as given (for time, which starts at 0).
    fn new(lo: f64, hi: f64, round: bool) -> Axis {
        let (mut lo, mut hi) = (lo, hi);
        if !(hi - lo).is_finite() {
            // Values near f64::MAX: halve the range to keep it representable.
            lo = finite_or(lo, f64::MIN) / 2.0;
            hi = finite_or(hi, f64::MAX) / 2.0;
        }
        if hi <= lo {
            // A constant: centre it in a range of its own size (or of 1).
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() / 10.0 };
            lo -= pad;
            hi += pad;
        }
        let step = nice_step(hi - lo);
        if round && step > 0.0 {
            let (l, h) = ((lo / step).floor() * step, (hi / step).ceil() * step);
            if l.is_finite() && h.is_finite() && l < h {
                (lo, hi) = (l, h);
            }
        }
        let mut ticks = Vec::new();
        if step > 0.0 {
            let first = (lo / step).ceil() * step;
            for i in 0..=50 {
                let t = first + f64::from(i) * step;
                if !t.is_finite() || t > hi + step * 1e-9 {
                    break;
                }
                ticks.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
            }
        }
        let big = lo.abs().max(hi.abs());
        let scale = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e4, "k")]
            .into_iter()
            .find(|&(limit, _)| big >= limit)
            .map(|(limit, suffix)| (if suffix == "k" { 1e3 } else { limit }, suffix))
            .unwrap_or((1.0, ""));
        Axis {
            lo,
            hi,
            ticks,
            step,
            scale,
        }
    }

    /// Where `v` lies in the range, 0 at `lo` and 1 at `hi`.
    fn fraction(&self, v: f64) -> f64 {
        (v - self.lo) / (self.hi - self.lo)
    }

    /// A tick's label with as many decimals as the step needs.
    fn label(&self, v: f64) -> String {
        let (div, suffix) = self.scale;
        let step = self.step / div;
        let decimals = if step > 0.0 && step < 1.0 {
            ((-step.log10()).ceil() as usize).min(9)
        } else {
            0
        };
        let v = v / div;
        if v.abs() >= 1e15 {
            return format!("{v:.1e}");
        }
        let s = format!("{v:.decimals$}{suffix}");
        if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
            s[1..].to_string()
        } else {
            s
        }
    }
}

/// About a fifth of `span`, rounded to 1, 2 or 5 times a power of ten;
/// 0 when `span` is not a positive finite number.
fn nice_step(span: f64) -> f64 {
    if !(span.is_finite() && span > 0.0) {
        return 0.0;
    }
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    let step = nice * mag;
    if step.is_finite() && step > 0.0 {
        step
    } else {
        0.0
    }
}

fn finite_or(v: f64, default: f64) -> f64 {
    if v.is_finite() { v } else { default }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: Vec<(f64, f64)>) -> Series {
        Series {
            name: "s".into(),
            unit: "pkt/s".into(),
            points,
        }
    }

    fn clean(svg: &str) {
        assert!(!svg.contains("NaN"), "{svg}");
        assert!(!svg.contains("inf"), "{svg}");
        assert_eq!(svg.matches("<svg").count(), 1);
    }

    #[test]
    fn steps_are_nice() {
        assert_eq!(nice_step(10.0), 2.0);
        assert_eq!(nice_step(1.0), 0.2);
        assert_eq!(nice_step(100.0), 20.0);
        assert_eq!(nice_step(30.0), 5.0);
        assert_eq!(nice_step(0.0), 0.0);
        assert_eq!(nice_step(f64::NAN), 0.0);
    }

    #[test]
    fn value_axis_rounds_to_steps() {
        let a = Axis::new(3.0, 97.0, true);
        assert_eq!((a.lo, a.hi), (0.0, 100.0));
        assert_eq!(a.ticks, vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(a.label(40.0), "40");
    }

    #[test]
    fn constant_and_zero_ranges_get_a_span() {
        for v in [0.0, 5.0, -5.0, 1e-300, 1e300] {
            let a = Axis::new(v, v, true);
            assert!(a.lo < a.hi, "{v}: {} {}", a.lo, a.hi);
            assert!(a.fraction(v).is_finite());
            assert!(!a.ticks.is_empty(), "{v}");
        }
    }

    #[test]
    fn labels_fit_the_step() {
        let a = Axis::new(0.0, 1.0, true);
        assert_eq!(a.label(0.4), "0.4");
        let a = Axis::new(0.0, 50_000.0, true);
        assert_eq!(a.label(20_000.0), "20k");
        let a = Axis::new(0.0, 3e6, true);
        assert_eq!(a.label(1.5e6), "1.5M");
        let a = Axis::new(-1.0, 1.0, true);
        assert_eq!(a.label(-0.0), "0.0");
    }

    #[test]
    fn awkward_series_render_finite() {
        clean(&svg(&series(vec![]), 30.0, &[]));
        clean(&svg(&series(vec![(1.0, 7.0)]), 30.0, &[]));
        clean(&svg(&series(vec![(0.0, 7.0), (10.0, 7.0)]), 0.0, &[]));
        clean(&svg(&series(vec![(0.0, 7.0)]), 0.0, &[]));
        clean(&svg(
            &series(vec![
                (f64::NAN, 1.0),
                (1.0, f64::INFINITY),
                (2.0, f64::MAX),
                (3.0, f64::MIN),
            ]),
            f64::NAN,
            &[TimelineEntry {
                at_s: f64::INFINITY,
                action: "x".into(),
                outcome: "ok".into(),
            }],
        ));
    }

    #[test]
    fn marks_and_points_are_drawn() {
        let marks = [TimelineEntry {
            at_s: 5.0,
            action: "start <replay>".into(),
            outcome: "ok".into(),
        }];
        let svg = svg(&series(vec![(0.0, 1.0), (10.0, 3.0)]), 20.0, &marks);
        assert_eq!(svg.matches(r#"class="mark""#).count(), 1);
        assert!(svg.contains("start &lt;replay&gt;"));
        assert_eq!(svg.matches("<circle").count(), 2);
        assert_eq!(svg.matches("<polyline").count(), 1);
    }
}
