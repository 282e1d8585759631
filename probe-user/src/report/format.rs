//! How the report writes durations, sizes, addresses and paths: one way each, for every output.

use serde::Serializer;

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
    fn sizes() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1500), "1500 B");
        assert_eq!(format_bytes(65536), "64 KiB");
        assert_eq!(format_bytes(3 << 20), "3 MiB");
    }
}
