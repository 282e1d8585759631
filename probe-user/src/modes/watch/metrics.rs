//! The Prometheus/OpenMetrics endpoint of the sidecar (`--metrics-addr`): a tiny HTTP server
//! that serves the text exposition format on GET /metrics.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
};

use probe_ebpf::{Call, CallStats, HIST_BUCKETS, NUM_CALLS};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::report::Counters;

/// What the session knows right now, in numbers.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub processes: u64,
    /// Processes with state kept: (records, loaded unwind tables and symbols).
    pub tracked: (usize, usize),
    /// Live threads by state.
    pub threads: BTreeMap<&'static str, u64>,
    /// Threads blocked past the threshold, by (call, role).
    pub blocked: BTreeMap<(&'static str, &'static str), u64>,
    /// Block-time statistics per call, all threads ever seen.
    pub calls: [CallStats; NUM_CALLS],
    pub dropped: Counters,
    /// Flagged threads of the last verdict.
    pub flagged: u64,
    /// Flagged goroutines of the last verdict (Go targets).
    pub flagged_goroutines: u64,
    /// Verdicts given, by kind.
    pub verdicts: BTreeMap<&'static str, u64>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            processes: 0,
            tracked: (0, 0),
            threads: BTreeMap::new(),
            blocked: BTreeMap::new(),
            calls: [CallStats {
                count: 0,
                total_ns: 0,
                max_ns: 0,
                buckets: [0; HIST_BUCKETS],
            }; NUM_CALLS],
            dropped: Counters::default(),
            flagged: 0,
            flagged_goroutines: 0,
            verdicts: BTreeMap::new(),
        }
    }
}

/// stallprobe's own CPU time (s) and resident memory (bytes).
fn self_usage() -> (f64, u64) {
    let stat = crate::procfs::read_process_stat(std::process::id());
    let cpu = stat
        .map(|s| (s.utime + s.stime) as f64 / crate::procfs::clock_ticks() as f64)
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            crate::procfs::status_field(&s, "VmRSS")
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    (cpu, rss)
}

/// Histogram buckets exposed: upper bounds 2^i ns for i in this range (1 µs .. ~550 s).
const FIRST_BUCKET: usize = 10;

/// Render the text exposition format (OpenMetrics-compatible, `# EOF` at the end).
pub fn render(s: &Snapshot, unit: &str) -> String {
    let mut o = String::new();
    let lbl = |extra: &str| {
        if unit.is_empty() {
            format!("{{{extra}}}")
        } else if extra.is_empty() {
            format!("{{unit=\"{unit}\"}}")
        } else {
            format!("{{unit=\"{unit}\",{extra}}}")
        }
    };
    let _ = writeln!(o, "# HELP stallprobe_processes Watched processes alive.");
    let _ = writeln!(o, "# TYPE stallprobe_processes gauge");
    let _ = writeln!(o, "stallprobe_processes{} {}", lbl(""), s.processes);
    let _ = writeln!(
        o,
        "# HELP stallprobe_tracked_processes Processes stallprobe keeps state for: records (alive, and exited ones kept for the next report) and loaded (unwind tables, symbols). Bounded."
    );
    let _ = writeln!(o, "# TYPE stallprobe_tracked_processes gauge");
    for (what, n) in [("records", s.tracked.0), ("loaded", s.tracked.1)] {
        let _ = writeln!(
            o,
            "stallprobe_tracked_processes{} {n}",
            lbl(&format!("what=\"{what}\""))
        );
    }
    let _ = writeln!(o, "# HELP stallprobe_threads Watched threads by state.");
    let _ = writeln!(o, "# TYPE stallprobe_threads gauge");
    for st in ["blocked", "running", "sleeping"] {
        let n = s.threads.get(st).copied().unwrap_or(0);
        let _ = writeln!(
            o,
            "stallprobe_threads{} {n}",
            lbl(&format!("state=\"{st}\""))
        );
    }
    let _ = writeln!(
        o,
        "# HELP stallprobe_blocked_threads Threads blocked in a probed call for at least the threshold, by call and role."
    );
    let _ = writeln!(o, "# TYPE stallprobe_blocked_threads gauge");
    for ((call, role), n) in &s.blocked {
        let _ = writeln!(
            o,
            "stallprobe_blocked_threads{} {n}",
            lbl(&format!("call=\"{call}\",role=\"{role}\""))
        );
    }
    let _ = writeln!(
        o,
        "# HELP stallprobe_block_duration_seconds Durations of probed blocking calls."
    );
    let _ = writeln!(o, "# TYPE stallprobe_block_duration_seconds histogram");
    for (c, st) in Call::ALL.iter().zip(s.calls.iter()) {
        if st.count == 0 {
            continue;
        }
        let name = c.name();
        let mut cum: u64 = st.buckets[..FIRST_BUCKET].iter().map(|&b| b as u64).sum();
        for (i, b) in st.buckets.iter().enumerate().skip(FIRST_BUCKET) {
            cum += *b as u64;
            if i + 1 < HIST_BUCKETS {
                let le = (1u64 << (i + 1)) as f64 / 1e9;
                let _ = writeln!(
                    o,
                    "stallprobe_block_duration_seconds_bucket{} {cum}",
                    lbl(&format!("call=\"{name}\",le=\"{le}\""))
                );
            }
        }
        let _ = writeln!(
            o,
            "stallprobe_block_duration_seconds_bucket{} {}",
            lbl(&format!("call=\"{name}\",le=\"+Inf\"")),
            st.count
        );
        let _ = writeln!(
            o,
            "stallprobe_block_duration_seconds_count{} {}",
            lbl(&format!("call=\"{name}\"")),
            st.count
        );
        let _ = writeln!(
            o,
            "stallprobe_block_duration_seconds_sum{} {}",
            lbl(&format!("call=\"{name}\"")),
            st.total_ns as f64 / 1e9
        );
    }
    let _ = writeln!(
        o,
        "# HELP stallprobe_flagged_threads Threads flagged by the last shutdown verdict."
    );
    let _ = writeln!(o, "# TYPE stallprobe_flagged_threads gauge");
    let _ = writeln!(o, "stallprobe_flagged_threads{} {}", lbl(""), s.flagged);
    let _ = writeln!(
        o,
        "# HELP stallprobe_flagged_goroutines Goroutines flagged by the last shutdown verdict (Go targets)."
    );
    let _ = writeln!(o, "# TYPE stallprobe_flagged_goroutines gauge");
    let _ = writeln!(
        o,
        "stallprobe_flagged_goroutines{} {}",
        lbl(""),
        s.flagged_goroutines
    );
    let _ = writeln!(
        o,
        "# HELP stallprobe_verdicts Shutdown verdicts given, by verdict."
    );
    let _ = writeln!(o, "# TYPE stallprobe_verdicts counter");
    for v in ["clean", "stalled"] {
        let n = s.verdicts.get(v).copied().unwrap_or(0);
        let _ = writeln!(
            o,
            "stallprobe_verdicts_total{} {n}",
            lbl(&format!("verdict=\"{v}\""))
        );
    }
    let _ = writeln!(
        o,
        "# HELP stallprobe_dropped_events Events the kernel side could not deliver, by kind."
    );
    let _ = writeln!(o, "# TYPE stallprobe_dropped_events counter");
    let d = &s.dropped;
    for (k, n) in [
        ("slow_call", d.dropped_slow_calls),
        ("signal", d.dropped_signals),
        ("thread_exit", d.dropped_thread_exits),
        ("lifecycle", d.dropped_lifecycle),
        ("task_storage", d.task_storage_failures),
    ] {
        let _ = writeln!(
            o,
            "stallprobe_dropped_events_total{} {n}",
            lbl(&format!("kind=\"{k}\""))
        );
    }
    let (cpu, rss) = self_usage();
    let _ = writeln!(
        o,
        "# HELP stallprobe_cpu_seconds stallprobe's own CPU time."
    );
    let _ = writeln!(o, "# TYPE stallprobe_cpu_seconds counter");
    let _ = writeln!(o, "stallprobe_cpu_seconds_total{} {cpu}", lbl(""));
    let _ = writeln!(
        o,
        "# HELP stallprobe_resident_memory_bytes stallprobe's own resident memory."
    );
    let _ = writeln!(o, "# TYPE stallprobe_resident_memory_bytes gauge");
    let _ = writeln!(o, "stallprobe_resident_memory_bytes{} {rss}", lbl(""));
    o.push_str("# EOF\n");
    o
}

/// Connections served at once; more wait in the listen backlog (they hold no fd of ours).
const MAX_CONNECTIONS: usize = 64;
/// A request must arrive whole within this, and be at most this big.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const MAX_REQUEST: usize = 4096;

/// Serve `text` (updated by the caller) on `addr` until the runtime stops. Bounded, so that a
/// flood of connections cannot take the file descriptors the watch itself needs: at most
/// [`MAX_CONNECTIONS`] at once, each with a size and time limit; accept errors (EMFILE) back
/// off instead of spinning.
pub async fn serve(addr: &str, text: Arc<Mutex<String>>) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        let mut backoff = std::time::Duration::from_millis(10);
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let mut sock = match listener.accept().await {
                Ok((sock, _)) => {
                    backoff = std::time::Duration::from_millis(10);
                    sock
                }
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                    continue;
                }
            };
            let text = text.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let Ok(Some(req)) =
                    tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut sock)).await
                else {
                    return;
                };
                let path = req.split_whitespace().nth(1).unwrap_or("");
                let (status, ctype, body) = if req.starts_with("GET ")
                    && (path == "/metrics" || path.starts_with("/metrics?"))
                {
                    let body = text.lock().map(|t| t.clone()).unwrap_or_default();
                    (
                        "200 OK",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        body,
                    )
                } else {
                    ("404 Not Found", "text/plain", "try /metrics\n".to_string())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, async {
                    let _ = sock.write_all(resp.as_bytes()).await;
                    let _ = sock.shutdown().await;
                })
                .await;
            });
        }
    });
    Ok(local)
}

/// The request head (up to the blank line), at most [`MAX_REQUEST`] bytes; `None` if the
/// client closes first or sends more.
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(String::from_utf8_lossy(&buf).into_owned());
        }
        if buf.len() > MAX_REQUEST {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_types_and_eof() {
        let mut s = Snapshot {
            processes: 2,
            flagged_goroutines: 2001,
            ..Snapshot::default()
        };
        s.blocked.insert(("futex", "app"), 3);
        s.calls[0].count = 5;
        s.calls[0].buckets[20] = 5; // ~1 ms
        s.calls[0].total_ns = 5_000_000;
        let t = render(&s, "nginx.service");
        assert!(t.contains("stallprobe_processes{unit=\"nginx.service\"} 2"));
        assert!(t.contains(
            "stallprobe_blocked_threads{unit=\"nginx.service\",call=\"futex\",role=\"app\"} 3"
        ));
        assert!(t.contains(
            "stallprobe_block_duration_seconds_count{unit=\"nginx.service\",call=\"futex\"} 5"
        ));
        assert!(t.contains("le=\"+Inf\"} 5"));
        assert!(t.contains("stallprobe_flagged_goroutines{unit=\"nginx.service\"} 2001"));
        assert!(t.ends_with("# EOF\n"));
        // Buckets are cumulative and end at the count.
        let last_finite: u64 = t
            .lines()
            .rfind(|l| {
                l.starts_with("stallprobe_block_duration_seconds_bucket") && !l.contains("+Inf")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap();
        assert_eq!(last_finite, 5);
    }
}
