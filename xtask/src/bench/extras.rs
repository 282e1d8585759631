//! Measurements besides throughput: how long stallprobe takes to attach, how much memory it
//! uses on a 1,000-thread target, and how soon after the grace period it reports.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{
    proc::{self, MapInfo, Pipes, Proc},
    report::median,
    tools::Tools,
};

/// stallprobe start -> "watching pid" on stderr, against an idle process.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AttachTime {
    pub samples_secs: Vec<f64>,
    pub median_secs: f64,
}

pub fn attach_time(tools: &Tools, n: usize) -> Result<AttachTime> {
    let idle = Proc::spawn(
        "sleep",
        Command::new("sleep").arg("100000"),
        Pipes::default(),
    )?;
    let report = tools.scratch.join("attach.json");
    let mut samples = Vec::new();
    for _ in 0..n {
        let (mut sp, secs) =
            tools.start_stallprobe(&tools.stallprobe, idle.pid(), None, &report)?;
        sp.stop(libc::SIGINT, Duration::from_secs(15));
        samples.push(secs);
    }
    Ok(AttachTime {
        median_secs: median(&samples),
        samples_secs: samples,
    })
}

const MEMORY_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// stallprobe's memory while watching a target with many threads.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Memory {
    pub target_threads: u32,
    pub watched_secs: f64,
    /// Highest VmRSS seen while attached and while it wrote its report.
    pub vm_rss_max_bytes: u64,
    /// VmHWM (peak RSS) at the last reading before it exited.
    pub vm_hwm_bytes: u64,
    /// Sum of `memlock` over the BPF maps it holds (/proc/PID/fdinfo).
    pub bpf_map_memlock_bytes: u64,
    pub bpf_maps: Vec<MapInfo>,
    /// stallprobe's CPU use while watching, in % of one CPU (its snapshots of every thread).
    pub cpu_pct: f64,
    /// SIGINT -> exit (final snapshot and report for every thread).
    pub report_secs: f64,
    /// It did not exit cleanly after SIGINT (the numbers above still hold).
    pub problem: Option<String>,
}

pub fn memory(
    tools: &Tools,
    bins: &std::path::Path,
    threads: u32,
    watch: Duration,
) -> Result<Memory> {
    let mut target = Proc::spawn(
        "many_threads",
        Command::new(bins.join("many_threads")).arg(threads.to_string()),
        Pipes {
            stdin: true,
            stdout: true,
            stderr: true,
        },
    )?;
    target.stdout_line("ready", Duration::from_secs(60))?;
    let report = tools.scratch.join("memory.json");
    let (mut sp, _) = tools.start_stallprobe(&tools.stallprobe, target.pid(), None, &report)?;
    let pid = sp.pid();
    let cpu0 = proc::cpu_secs(pid).unwrap_or(0.0);
    let t0 = Instant::now();
    let mut rss_max = 0;
    let mut hwm = 0;
    let sample = |rss_max: &mut u64, hwm: &mut u64| {
        *rss_max = (*rss_max).max(proc::status_kb(pid, "VmRSS").unwrap_or(0));
        *hwm = (*hwm).max(proc::status_kb(pid, "VmHWM").unwrap_or(0));
    };
    while t0.elapsed() < watch {
        sample(&mut rss_max, &mut hwm);
        std::thread::sleep(Duration::from_millis(100));
    }
    let watched = t0.elapsed().as_secs_f64();
    let cpu_pct = 100.0 * (proc::cpu_secs(pid).unwrap_or(cpu0) - cpu0) / watched;
    let maps = proc::bpf_maps(pid);
    // Keep sampling while it builds the final report: that may be the peak.
    sp.signal(libc::SIGINT);
    let t1 = Instant::now();
    while sp.try_wait().is_none() && t1.elapsed() < MEMORY_STOP_TIMEOUT {
        sample(&mut rss_max, &mut hwm);
        std::thread::sleep(Duration::from_millis(5));
    }
    let report_secs = t1.elapsed().as_secs_f64();
    let stuck_in = sp.try_wait().is_none().then(|| proc::kernel_stack(pid, 4));
    let (st, _) = sp.stop(libc::SIGINT, Duration::from_secs(1));
    let problem = match stuck_in {
        Some(stack) => Some(format!(
            "stallprobe did not exit within 30 s of SIGINT (kernel stack: {stack}); killed"
        )),
        None if !st.success() => Some(format!("stallprobe exited with {st}")),
        None => None,
    };
    Ok(Memory {
        target_threads: threads,
        watched_secs: watched,
        vm_rss_max_bytes: rss_max,
        vm_hwm_bytes: hwm,
        bpf_map_memlock_bytes: maps.iter().map(|m| m.memlock).sum(),
        bpf_maps: maps,
        cpu_pct,
        report_secs,
        problem,
    })
}

/// `stallprobe run --stop-after 1s --grace 1s` on a target that ignores SIGTERM.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Grace {
    pub target_threads: u32,
    pub stop_after_secs: f64,
    pub grace_secs: f64,
    /// Grace expiry (SIGTERM as the target saw it + grace) -> stallprobe exited, report written.
    pub samples_secs: Vec<f64>,
    pub median_secs: f64,
    /// The simpler reading: total wall time - (stop-after + grace). It also counts stallprobe's
    /// attach and the target's start, which happen before the stop-after clock starts.
    pub naive_samples_secs: Vec<f64>,
    pub naive_median_secs: f64,
    pub verdicts: Vec<String>,
}

pub fn grace(tools: &Tools, bins: &std::path::Path, threads: u32, n: usize) -> Result<Grace> {
    let (stop_after, grace) = (1.0, 1.0);
    let report = tools.scratch.join("grace.json");
    let mut samples = Vec::new();
    let mut naive = Vec::new();
    let mut verdicts = Vec::new();
    for _ in 0..n {
        let _ = std::fs::remove_file(&report);
        let t0 = proc::mono_ns();
        let mut sp = Proc::spawn(
            "stallprobe run",
            Command::new(&tools.stallprobe)
                .args(["run", "--stop-after", "1s", "--grace", "1s"])
                .args(["--format", "json", "-o"])
                .arg(&report)
                .arg("--")
                .arg(bins.join("ignore_term"))
                .arg(threads.to_string()),
            Pipes {
                stdout: true, // the target's: it inherits stallprobe's stdout
                stderr: true,
                ..Pipes::default()
            },
        )?;
        let line = sp.stdout_line("sigterm_ns=", Duration::from_secs(60))?;
        let sig_ns: u64 = line["sigterm_ns=".len()..]
            .trim()
            .parse()
            .with_context(|| format!("bad line from the target: {line}"))?;
        let st = sp
            .wait_timeout(Duration::from_secs(60))
            .context("stallprobe run did not exit within 60 s of the SIGTERM")?;
        let t_exit = proc::mono_ns();
        if st.code() != Some(1) {
            bail!("stallprobe run exited with {st}; expected 1 (stalled)");
        }
        let expiry = sig_ns + (grace * 1e9) as u64;
        samples.push(t_exit.saturating_sub(expiry) as f64 / 1e9);
        naive.push((t_exit - t0) as f64 / 1e9 - stop_after - grace);
        let r: Value = serde_json::from_str(
            &std::fs::read_to_string(&report).context("stallprobe wrote no report")?,
        )?;
        verdicts.push(r["verdict"].as_str().unwrap_or("?").to_string());
    }
    Ok(Grace {
        target_threads: threads,
        stop_after_secs: stop_after,
        grace_secs: grace,
        median_secs: median(&samples),
        samples_secs: samples,
        naive_median_secs: median(&naive),
        naive_samples_secs: naive,
        verdicts,
    })
}
