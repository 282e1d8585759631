//! How the report writes durations, sizes, addresses and paths: one way each, for every output.

use serde::Serializer;

/// Whether a character must not reach a terminal or a log as is: C0 and C1 controls, DEL
/// (ESC among them, so no terminal escape sequence), and the bidirectional-text overrides that
/// can make a name read as something else.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_escaped(out: &mut String, c: char) {
    if (c as u32) < 0x100 {
        out.push_str(&format!("\\x{:02x}", c as u32));
    } else {
        out.push_str(&format!("\\u{{{:x}}}", c as u32));
    }
}

/// A name that came from the target (a thread name, a path, a symbol), made safe to show
/// anywhere: control characters and bidi overrides written as `\x1b` / `\u{202e}`. Every string
/// stallprobe takes from a target goes through this (or [`target_text`]) where it is read, so
/// no output — text, live lines, JSON, JUnit, Markdown, annotations, the journal — can carry a
/// terminal escape or a line break the target chose.
pub fn clean(s: &str) -> String {
    if !s.chars().any(is_unsafe) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_unsafe(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// Bytes the target chose (a comm, a path, a cmdline argument) as text: valid UTF-8 kept,
/// each invalid byte written as `\xff`, then [`clean`].
pub fn target_text(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            if is_unsafe(c) {
                push_escaped(&mut out, c);
            } else {
                out.push(c);
            }
        }
        for &x in chunk.invalid() {
            out.push_str(&format!("\\x{x:02x}"));
        }
    }
    out
}

/// Addresses as `"0x7f…"` strings in JSON.
pub fn ser_hex<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

/// The last component of a path.
pub fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// A duration given in ms, for people: `0ms`, `250us`, `3.8ms`, `503ms`, `2s`, `4.25s`,
/// `3m20s`, `2h5m`. Three significant figures at most; `?` for a negative or non-finite value.
pub fn format_ms(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        return "?".into();
    }
    if ms == 0.0 {
        return "0ms".into();
    }
    if ms < 1.0 {
        return format!("{}us", (ms * 1000.0).round().max(1.0));
    }
    if ms < 100.0 {
        return format!("{}ms", trim_float(ms, 1));
    }
    if ms < 999.5 {
        return format!("{ms:.0}ms");
    }
    let s = ms / 1000.0;
    if s < 59.995 {
        return format!("{}s", trim_float(s, 2));
    }
    let total = s.round() as u64;
    if total < 3600 {
        let (m, sec) = (total / 60, total % 60);
        return if sec == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{sec}s")
        };
    }
    let (h, m) = (total / 3600, (total % 3600) / 60);
    if m == 0 {
        format!("{h}h")
    } else {
        format!("{h}h{m}m")
    }
}

/// [`format_ms`] of a whole number of ms.
pub fn format_ms_u64(ms: u64) -> String {
    format_ms(ms as f64)
}

/// At most `decimals` decimals, no trailing zeros.
fn trim_float(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `0 B`, `512 B`, `64 KiB`, `1.5 MiB`.
pub fn format_bytes(n: u64) -> String {
    const K: u64 = 1024;
    if n < K || (n < 64 * K && !n.is_multiple_of(K)) {
        format!("{n} B")
    } else if n < K * K {
        format!("{} KiB", trim_float(n as f64 / K as f64, 2))
    } else {
        format!("{} MiB", trim_float(n as f64 / (K * K) as f64, 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            (0.0, "0ms"),
            (0.0004, "1us"),
            (0.25, "250us"),
            (1.5, "1.5ms"),
            (3.84, "3.8ms"),
            (20.0, "20ms"),
            (99.96, "100ms"),
            (503.2, "503ms"),
            (999.6, "1s"),
            (1250.0, "1.25s"),
            (2000.0, "2s"),
            (2001.0, "2s"),
            (4006.0, "4.01s"),
            (59_999.0, "1m"),
            (200_000.0, "3m20s"),
            (7_500_000.0, "2h5m"),
            (-1.0, "?"),
            (f64::NAN, "?"),
        ];
        for (ms, want) in cases {
            assert_eq!(format_ms(ms), want, "{ms} ms");
        }
    }

    #[test]
    fn names_from_the_target_are_made_safe() {
        assert_eq!(clean("worker-1"), "worker-1");
        assert_eq!(clean("\u{1b}[31mred"), "\\x1b[31mred");
        assert_eq!(clean("a\n::error::x"), "a\\x0a::error::x");
        assert_eq!(clean("del\u{7f}\u{85}"), "del\\x7f\\x85");
        assert_eq!(clean("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(clean("café ✓"), "café ✓");
        assert_eq!(target_text(b"\xff\xfeabc"), "\\xff\\xfeabc");
        // A 15-byte comm that cuts a multi-byte character in two.
        assert_eq!(target_text(&"éééééééé".as_bytes()[..15]), "ééééééé\\xc3");
        assert_eq!(target_text(b"ok\x1b"), "ok\\x1b");
    }

    #[test]
    fn sizes() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1500), "1500 B");
        assert_eq!(format_bytes(65536), "64 KiB");
        assert_eq!(format_bytes(3 << 20), "3 MiB");
    }
}
