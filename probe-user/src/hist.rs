//! Summaries of the kernel side's log2 block-time histograms.

use probe_ebpf::{CallStats, HIST_BUCKETS};

use crate::report::CallSummary;

fn ms(ns: f64) -> f64 {
    (ns / 1e6 * 1000.0).round() / 1000.0
}

/// Estimate the `q` quantile (0..=1) in ns: find the bucket holding that rank and interpolate
/// linearly inside it (bucket `i` spans `[2^i, 2^(i+1))` ns), never above the exact maximum.
pub fn quantile_ns(buckets: &[u32; HIST_BUCKETS], count: u64, max_ns: u64, q: f64) -> f64 {
    let total: u64 = buckets.iter().map(|&b| b as u64).sum();
    let n = if total > 0 { total } else { count };
    if n == 0 {
        return 0.0;
    }
    let rank = (q * n as f64).ceil().max(1.0);
    let mut seen = 0f64;
    for (i, &b) in buckets.iter().enumerate() {
        let b = b as f64;
        if b == 0.0 {
            continue;
        }
        if seen + b >= rank {
            let lo = if i == 0 { 0.0 } else { (1u64 << i) as f64 };
            let hi = (1u64 << (i + 1)) as f64;
            let frac = (rank - seen) / b;
            let v = lo + (hi - lo) * frac;
            return v.min(max_ns as f64);
        }
        seen += b;
    }
    max_ns as f64
}

pub fn summarize(s: &CallStats) -> CallSummary {
    CallSummary {
        count: s.count,
        total_ms: ms(s.total_ns as f64),
        p50_ms: ms(quantile_ns(&s.buckets, s.count, s.max_ns, 0.50)),
        p99_ms: ms(quantile_ns(&s.buckets, s.count, s.max_ns, 0.99)),
        max_ms: ms(s.max_ns as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(samples: &[u64]) -> CallStats {
        let mut s = CallStats {
            count: 0,
            total_ns: 0,
            max_ns: 0,
            buckets: [0; HIST_BUCKETS],
        };
        for &d in samples {
            s.count += 1;
            s.total_ns += d;
            s.max_ns = s.max_ns.max(d);
            let b = (63 - (d | 1).leading_zeros() as usize).min(HIST_BUCKETS - 1);
            s.buckets[b] += 1;
        }
        s
    }

    #[test]
    fn empty() {
        assert_eq!(summarize(&stats(&[])), CallSummary::default());
    }

    #[test]
    fn percentiles_within_a_factor_of_two() {
        // 99 short waits of ~100us and one of 2s.
        let mut v = vec![100_000u64; 99];
        v.push(2_000_000_000);
        let s = summarize(&stats(&v));
        assert_eq!(s.count, 100);
        assert!(s.p50_ms >= 0.05 && s.p50_ms <= 0.2, "{s:?}");
        assert!(s.p99_ms >= 0.05 && s.p99_ms <= 0.2, "{s:?}");
        assert_eq!(s.max_ms, 2000.0);
        assert!((s.total_ms - (9.9 + 2000.0)).abs() < 0.01);
    }

    #[test]
    fn quantile_never_exceeds_max() {
        let s = stats(&[3_000_000]);
        let q = quantile_ns(&s.buckets, s.count, s.max_ns, 0.99);
        assert!((2_097_152.0..=3_000_000.0).contains(&q));
    }

    #[test]
    fn monotonic_in_q() {
        let s = stats(&[10, 1_000, 100_000, 10_000_000, 1_000_000_000]);
        let mut last = 0.0;
        for i in 0..=100 {
            let q = quantile_ns(&s.buckets, s.count, s.max_ns, i as f64 / 100.0);
            assert!(q >= last);
            last = q;
        }
    }
}
