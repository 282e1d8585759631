//! CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns()`, so user-space and kernel
//! timestamps compare directly.

pub fn mono_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// CLOCK_REALTIME in ns (for absolute futex timeouts on the realtime clock).
pub fn realtime_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)
        .expect("CLOCK_REALTIME is always available");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// Signed difference a - b in ms.
pub fn diff_ms(a: u64, b: u64) -> i64 {
    (a as i128 - b as i128).div_euclid(1_000_000) as i64
}
