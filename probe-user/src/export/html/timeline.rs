//! The shutdown timeline of the HTML report, as an inline SVG chart: one row per thread, from
//! the start of the watch to its exit (or the end), the part at the end it spent blocked
//! darker; the shutdown signal, the end of the grace period and the process's exit as
//! vertical lines. Times are relative to the signal (to the start of the watch without one).

use std::fmt::Write as _;

use super::esc;
use crate::report::{Report, Role, ThreadReport, ThreadState, format_ms};

/// Rows drawn (flagged threads first, then exits, then the rest).
pub const MAX_ROWS: usize = 40;

const LABEL_W: f64 = 230.0;
const PLOT_W: f64 = 760.0;
const ROW_H: f64 = 22.0;
const TOP: f64 = 46.0;

/// The time span drawn, in ms relative to the signal (or to the start of the watch).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Span {
    pub start: f64,
    pub end: f64,
}

/// From the start of the watch to its end (and at least to the end of the grace period).
pub fn span(r: &Report) -> Span {
    let watched = r.session.watched_ms as f64;
    match &r.shutdown {
        Some(sd) => {
            let start = -(sd.at_ms.max(0) as f64);
            let mut end = (watched + start).max(if sd.process_exited {
                0.0
            } else {
                sd.grace_ms as f64
            });
            for t in &r.threads {
                if let Some(x) = t.exited_after_ms {
                    end = end.max(x as f64);
                }
            }
            if let Some(x) = sd.exited_after_ms {
                end = end.max(x as f64);
            }
            Span {
                start,
                end: end.max(start + 1.0),
            }
        }
        None => Span {
            start: 0.0,
            end: watched.max(1.0),
        },
    }
}

/// The threads drawn, in order: flagged, then exited, then application threads, then the
/// runtime's; at most [`MAX_ROWS`].
pub fn rows(r: &Report) -> Vec<&ThreadReport> {
    let mut v: Vec<&ThreadReport> = r.threads.iter().collect();
    v.sort_by_key(|t| {
        (
            !t.flagged,
            t.state != ThreadState::Exited,
            t.role == Role::Runtime,
        )
    });
    v.truncate(MAX_ROWS);
    v
}

/// A tick step giving 5 to 10 ticks over `range` ms.
fn tick_step(range: f64) -> f64 {
    let raw = range / 8.0;
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= raw {
            return m * mag;
        }
    }
    10.0 * mag
}

fn signed_ms(ms: f64) -> String {
    if ms < 0.0 {
        format!("−{}", format_ms(-ms))
    } else if ms == 0.0 {
        "0".to_string()
    } else {
        format!("+{}", format_ms(ms))
    }
}

/// The chart as an `<svg>` element.
pub fn svg(r: &Report) -> String {
    let sp = span(r);
    let rows = rows(r);
    let x = |ms: f64| LABEL_W + (ms - sp.start) / (sp.end - sp.start) * PLOT_W;
    let h = TOP + rows.len().max(1) as f64 * ROW_H + 34.0;
    let w = LABEL_W + PLOT_W + 30.0;
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" role="img" aria-label="shutdown timeline">"#
    );
    // Axis and grid.
    let step = tick_step(sp.end - sp.start);
    let bottom = TOP + rows.len().max(1) as f64 * ROW_H;
    let mut t = (sp.start / step).ceil() * step;
    while t <= sp.end + 1e-6 {
        let _ = write!(
            o,
            r#"<line class="grid" x1="{0:.1}" y1="{TOP:.1}" x2="{0:.1}" y2="{bottom:.1}"/><text class="tick" x="{0:.1}" y="{1:.1}" text-anchor="middle">{2}</text>"#,
            x(t),
            bottom + 16.0,
            signed_ms(t)
        );
        t += step;
    }
    // Rows.
    let end_of = |t: &ThreadReport| match t.exited_after_ms {
        Some(e) if t.state == ThreadState::Exited => e as f64,
        _ => sp.end,
    };
    for (i, t) in rows.iter().enumerate() {
        let y = TOP + i as f64 * ROW_H;
        let end = end_of(t).clamp(sp.start, sp.end);
        let class = if t.flagged {
            "bar flagged"
        } else if t.state == ThreadState::Exited {
            "bar exited"
        } else if t.role == Role::Runtime {
            "bar runtime"
        } else {
            "bar alive"
        };
        let what = match (t.state, t.exited_after_ms) {
            (ThreadState::Exited, Some(e)) => format!("exited at {}", signed_ms(e as f64)),
            (ThreadState::Exited, None) => "exited".to_string(),
            (s, _) => format!("{} at the end", s.as_str()),
        };
        let _ = write!(
            o,
            r#"<g class="{class}" data-tid="{}"><title>{} (tid {}): {}{}</title><text class="label" x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="2"/>"#,
            t.tid,
            esc(&t.name),
            t.tid,
            esc(&what),
            if t.flagged { ", flagged" } else { "" },
            LABEL_W - 8.0,
            y + 15.0,
            esc(&format!("{} ({})", super::trunc(&t.name, 22), t.tid)),
            x(sp.start),
            y + 5.0,
            (x(end) - x(sp.start)).max(1.0),
            ROW_H - 10.0
        );
        // The block it is still in at the end.
        if t.state != ThreadState::Exited
            && let Some(b) = t.blocked_ms
        {
            let from = (end - b as f64).max(sp.start);
            let _ = write!(
                o,
                r#"<rect class="blocked" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>blocked{} for {}</title></rect>"#,
                x(from),
                y + 5.0,
                (x(end) - x(from)).max(1.0),
                ROW_H - 10.0,
                t.syscall
                    .as_deref()
                    .map(|s| format!(" in {}", esc(s)))
                    .unwrap_or_default(),
                format_ms(b as f64)
            );
        }
        if t.state == ThreadState::Exited && t.exited_after_ms.is_some() {
            let _ = write!(
                o,
                r#"<path class="exit" d="M{0:.1},{1:.1} l-4,-4 m4,4 l4,-4 m-4,4 l-4,4 m4,-4 l4,4"/>"#,
                x(end),
                y + ROW_H / 2.0
            );
        }
        o.push_str("</g>");
    }
    if rows.is_empty() {
        let _ = write!(
            o,
            r#"<text class="tick" x="{:.1}" y="{:.1}">no threads</text>"#,
            LABEL_W + 10.0,
            TOP + 15.0
        );
    }
    // The moments of the shutdown.
    let mut mark = |ms: f64, class: &str, label: String, anchor: &str, dy: f64| {
        if ms < sp.start - 1e-6 || ms > sp.end + 1e-6 {
            return;
        }
        let _ = write!(
            o,
            r#"<g class="mark {class}"><line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{bottom:.1}"/><text x="{0:.1}" y="{2:.1}" text-anchor="{anchor}">{3}</text></g>"#,
            x(ms),
            TOP - 6.0 - dy,
            TOP - 10.0 - dy,
            esc(&label)
        );
    };
    if let Some(sd) = &r.shutdown {
        mark(
            0.0,
            "signal",
            format!(
                "{} from pid {} ({})",
                sd.signal, sd.sender_pid, sd.sender_comm
            ),
            "middle",
            16.0,
        );
        if sd.process_exited {
            if let Some(e) = sd.exited_after_ms {
                mark(
                    e as f64,
                    "exited",
                    format!("process exited {}", signed_ms(e as f64)),
                    "start",
                    0.0,
                );
            }
        } else {
            mark(
                sd.grace_ms as f64,
                "grace",
                format!("grace period ends {}", signed_ms(sd.grace_ms as f64)),
                "end",
                0.0,
            );
        }
    }
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testutil;

    #[test]
    fn span_rows_and_marks() {
        let mut r = testutil::report();
        r.session.watched_ms = 4003;
        r.threads[3].exited_after_ms = Some(2);
        let sp = span(&r);
        assert_eq!(
            sp,
            Span {
                start: -2002.0,
                end: 2001.0
            }
        );
        let names: Vec<&str> = rows(&r).iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["main", "locker-a", "locker-b", "helper", "ticker"]
        );
        let s = svg(&r);
        assert!(s.contains("mark signal"), "{s}");
        assert!(s.contains("SIGTERM from pid 99 (stallprobe)"), "{s}");
        assert!(s.contains("grace period ends +2s"), "{s}");
        assert_eq!(s.matches("class=\"bar flagged\"").count(), 3);
        assert_eq!(s.matches("class=\"exit\"").count(), 1);
        assert_eq!(s.matches("class=\"blocked\"").count(), 3, "{s}");
        // A clean exit: the process's exit is the mark, no grace line.
        let s = svg(&testutil::clean_report());
        assert!(s.contains("process exited +12ms"), "{s}");
        assert!(!s.contains("mark grace"), "{s}");
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(4000.0), 500.0);
        assert_eq!(tick_step(100.0), 20.0);
        assert_eq!(signed_ms(-2000.0), "−2s");
        assert_eq!(signed_ms(1500.0), "+1.5s");
    }
}
