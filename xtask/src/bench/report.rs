//! Turning runs into medians, ratios and target verdicts; the printed table and the JSON file.

use serde::Serialize;

use super::{
    extras::{AttachTime, Grace, Memory},
    goroutines::Goroutines,
    proc::HostLoad,
    tools::{Config, ToolRun},
    workloads::{Measurement, Workload},
};

/// A run is noisy when other processes used more than this much CPU (% of one CPU) during its
/// measured window, or when another tracer was running.
pub const NOISY_OTHERS_CPU_PCT: f64 = 10.0;

/// One run of one workload under one configuration.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    pub round: usize,
    pub workload: Workload,
    pub config: &'static str,
    pub ops_per_sec: Option<f64>,
    pub measurement: Option<Measurement>,
    pub tool: ToolRun,
    /// CPU use of everything else on the host during the measured window.
    pub host: HostLoad,
    /// Tracers not started by the bench that were running during the run.
    pub foreign_tracers: Vec<String>,
    pub error: Option<String>,
}

impl RunRecord {
    pub fn is_noisy(&self) -> bool {
        self.host.others_cpu_pct > NOISY_OTHERS_CPU_PCT || !self.foreign_tracers.is_empty()
    }
}

/// Median of a non-empty list (mean of the middle two for an even count); NaN when empty.
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn median_opt(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = v.flatten().collect();
    (!v.is_empty()).then(|| median(&v))
}

/// Workload x configuration.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    pub workload: Workload,
    pub config: &'static str,
    pub runs: usize,
    pub median_ops_per_sec: Option<f64>,
    pub min_ops_per_sec: Option<f64>,
    pub max_ops_per_sec: Option<f64>,
    /// median / baseline median.
    pub ratio: Option<f64>,
    /// Median over rounds of (this run / the same round's baseline run): less sensitive to
    /// slow drifts of the host than the ratio of medians.
    pub paired_ratio: Option<f64>,
    pub tool_attach_secs: Option<f64>,
    pub tool_cpu_pct: Option<f64>,
    /// Runs during which someone else's tracer was running.
    pub noisy_runs: usize,
    /// Median CPU use of other processes during the runs, % of one CPU.
    pub others_cpu_pct: Option<f64>,
    pub errors: Vec<String>,
}

impl Cell {
    /// (max - min) / median / 2, in %: how much the runs of this cell disagree.
    pub fn spread_pct(&self) -> Option<f64> {
        Some(
            100.0 * (self.max_ops_per_sec? - self.min_ops_per_sec?)
                / self.median_ops_per_sec?
                / 2.0,
        )
    }
}

pub fn cells(runs: &[RunRecord], workloads: &[Workload], configs: &[Config]) -> Vec<Cell> {
    let mut out = Vec::new();
    for &w in workloads {
        let mut base = None;
        for &c in configs {
            let rs: Vec<&RunRecord> = runs
                .iter()
                .filter(|r| r.workload == w && r.config == c.name())
                .collect();
            let ok: Vec<f64> = rs.iter().filter_map(|r| r.ops_per_sec).collect();
            let med = (!ok.is_empty()).then(|| median(&ok));
            if c == Config::Baseline {
                base = med;
            }
            let paired: Vec<f64> = rs
                .iter()
                .filter_map(|r| {
                    let b = runs.iter().find(|b| {
                        b.workload == w && b.round == r.round && b.config == "baseline"
                    })?;
                    Some(r.ops_per_sec? / b.ops_per_sec?)
                })
                .collect();
            let mut errors: Vec<String> = rs
                .iter()
                .filter_map(|r| r.error.clone().or(r.tool.problem.clone()))
                .collect();
            errors.dedup();
            out.push(Cell {
                workload: w,
                config: c.name(),
                runs: ok.len(),
                median_ops_per_sec: med,
                min_ops_per_sec: ok.iter().copied().reduce(f64::min),
                max_ops_per_sec: ok.iter().copied().reduce(f64::max),
                ratio: med.zip(base).map(|(m, b)| m / b),
                paired_ratio: (!paired.is_empty()).then(|| median(&paired)),
                tool_attach_secs: median_opt(rs.iter().map(|r| r.tool.attach_secs)),
                tool_cpu_pct: median_opt(rs.iter().map(|r| r.tool.cpu_pct)),
                noisy_runs: rs.iter().filter(|r| r.is_noisy()).count(),
                others_cpu_pct: median_opt(
                    rs.iter()
                        .map(|r| r.ops_per_sec.map(|_| r.host.others_cpu_pct)),
                ),
                errors,
            });
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Status {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "FAIL")]
    Fail,
    #[serde(rename = "INFO")]
    Info,
    /// Not measured (error, or excluded with --only).
    #[serde(rename = "N/A")]
    NotMeasured,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Info => "INFO",
            Status::NotMeasured => "N/A ",
        }
    }
}

/// One target from the issue, with what was measured.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub what: String,
    pub status: Status,
    pub measured: String,
}

fn ratio_target(cells: &[Cell], w: Workload, config: &str, min: f64) -> Target {
    let cell = cells.iter().find(|c| c.workload == w && c.config == config);
    let base = cells
        .iter()
        .find(|c| c.workload == w && c.config == "baseline");
    let what = format!("{:<8} {config} >= {min:.2} x baseline", w.name());
    match cell.and_then(|c| c.ratio) {
        None => Target {
            what,
            status: Status::NotMeasured,
            measured: "not measured".into(),
        },
        Some(r) => {
            let paired = cell
                .and_then(|c| c.paired_ratio)
                .map(|p| format!(" (paired {p:.3})"))
                .unwrap_or_default();
            let noise = base
                .and_then(Cell::spread_pct)
                .map(|s| format!("; baseline runs +/-{s:.1}%"))
                .unwrap_or_default();
            let noise = format!("{paired}{noise}");
            let pass = r >= min;
            Target {
                what,
                status: if pass { Status::Pass } else { Status::Fail },
                measured: if pass {
                    format!("{r:.3}{noise}")
                } else {
                    format!(
                        "{r:.3}: {:.1}% slower than baseline, {:.1} points short{noise}",
                        (1.0 - r) * 100.0,
                        (min - r) * 100.0
                    )
                },
            }
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

pub fn targets(
    cells: &[Cell],
    runs: &[RunRecord],
    workloads: &[Workload],
    attach: Option<&AttachTime>,
    memory: Option<&Memory>,
    grace: Option<&Grace>,
    goroutines: Option<&Goroutines>,
) -> Vec<Target> {
    let mut t = Vec::new();
    // Not a number from the issue, but what every configuration relies on: stallprobe prints its
    // report on SIGINT and exits 0.
    let sp_runs: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| r.config.starts_with("stallprobe") && r.tool.stop_secs.is_some())
        .collect();
    let mut bad: Vec<String> = sp_runs
        .iter()
        .filter_map(|r| {
            let p = r.tool.problem.as_ref()?;
            Some(format!(
                "{} {} run {}: {p}",
                r.workload.name(),
                r.config,
                r.round
            ))
        })
        .collect();
    if let Some(p) = memory.and_then(|m| m.problem.as_ref()) {
        bad.push(format!(
            "{}-thread target: {p}",
            memory.unwrap().target_threads
        ));
    }
    let stop_max = sp_runs
        .iter()
        .filter(|r| r.tool.problem.is_none())
        .filter_map(|r| r.tool.stop_secs)
        .reduce(f64::max);
    let sigint_check = Target {
        what: "stallprobe reports and exits 0 on SIGINT".into(),
        status: if bad.is_empty() {
            Status::Pass
        } else {
            Status::Fail
        },
        measured: if bad.is_empty() {
            format!(
                "{} of {} runs; slowest exit {:.2} s",
                sp_runs.len(),
                sp_runs.len(),
                stop_max.unwrap_or(0.0)
            )
        } else {
            format!(
                "{} failure(s) in {} runs, first: {}",
                bad.len(),
                sp_runs.len() + memory.is_some() as usize,
                bad[0]
            )
        },
    };
    for &w in workloads {
        let min = if w == Workload::Pingpong { 0.90 } else { 0.98 };
        t.push(ratio_target(cells, w, "stallprobe", min));
    }
    for &w in workloads {
        t.push(ratio_target(cells, w, "stallprobe-other", 0.99));
    }
    t.push(match memory {
        Some(m) => Target {
            what: format!(
                "stallprobe RSS < 64 MiB on a {}-thread target",
                m.target_threads
            ),
            status: if (m.vm_hwm_bytes as f64) < 64.0 * MIB {
                Status::Pass
            } else {
                Status::Fail
            },
            measured: format!(
                "VmHWM {:.1} MiB (VmRSS max {:.1} MiB)",
                m.vm_hwm_bytes as f64 / MIB,
                m.vm_rss_max_bytes as f64 / MIB
            ),
        },
        None => Target {
            what: "stallprobe RSS < 64 MiB on a 1000-thread target".into(),
            status: Status::NotMeasured,
            measured: "not measured".into(),
        },
    });
    t.push(match grace {
        Some(g) => Target {
            what: format!(
                "report within 1 s of grace expiry ({}-thread target)",
                g.target_threads
            ),
            status: if g.median_secs <= 1.0 {
                Status::Pass
            } else {
                Status::Fail
            },
            measured: format!(
                "{:.3} s after expiry (median of {}; total - 2 s = {:.3} s, which also counts attach)",
                g.median_secs,
                g.samples_secs.len(),
                g.naive_median_secs
            ),
        },
        None => Target {
            what: "report within 1 s of grace expiry".into(),
            status: Status::NotMeasured,
            measured: "not measured".into(),
        },
    });
    t.push(match goroutines {
        Some(g) => Target {
            what: format!(
                "{} goroutines read in < 1 s, stallprobe RSS < 256 MiB (Go {})",
                g.goroutines, g.go_version
            ),
            status: if g.read_ms_median < 1000.0 && (g.peak_rss_kb_max as f64) < 256.0 * 1024.0 {
                Status::Pass
            } else {
                Status::Fail
            },
            measured: format!(
                "{:.0} ms (median of {:?} ms); peak RSS {:.0} MiB",
                g.read_ms_median,
                g.read_ms,
                g.peak_rss_kb_max as f64 / 1024.0
            ),
        },
        None => Target {
            what: "100000 goroutines read in < 1 s, stallprobe RSS < 256 MiB".into(),
            status: Status::NotMeasured,
            measured: "not measured".into(),
        },
    });
    t.push(sigint_check);
    if let Some(a) = attach {
        t.push(Target {
            what: "stallprobe attach time (start -> \"watching pid\")".into(),
            status: Status::Info,
            measured: format!(
                "{:.3} s (median of {})",
                a.median_secs,
                a.samples_secs.len()
            ),
        });
    }
    if let Some(m) = memory {
        t.push(Target {
            what: "BPF map memory (sum of memlock in fdinfo)".into(),
            status: Status::Info,
            measured: format!(
                "{:.1} MiB in {} maps (per-thread task storage is not in memlock)",
                m.bpf_map_memlock_bytes as f64 / MIB,
                m.bpf_maps.len()
            ),
        });
        t.push(Target {
            what: format!("stallprobe CPU watching {} threads", m.target_threads),
            status: Status::Info,
            measured: match &m.problem {
                None => format!(
                    "{:.1}% of one CPU; SIGINT -> report {:.3} s",
                    m.cpu_pct, m.report_secs
                ),
                Some(_) => format!(
                    "{:.1}% of one CPU; no report after SIGINT (see the SIGINT line)",
                    m.cpu_pct
                ),
            },
        });
    }
    t
}

/// 1234567.0 -> "1.23M".
fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

pub fn print_table(cells: &[Cell], configs: &[Config]) {
    println!(
        "\n{:<9} {:<16} {:>8} {:>6} {:>6}  {:<25} {:>5} {:>6}  host",
        "workload", "config", "ops/s", "ratio", "paired", "spread (min-max)", "tool", "attach",
    );
    println!("{}", "-".repeat(104));
    let mut last = None;
    for c in cells {
        if last.is_some() && last != Some(c.workload) {
            println!();
        }
        last = Some(c.workload);
        let config = if c.config == "offcputime" {
            "offcputime [-p]"
        } else {
            c.config
        };
        let Some(med) = c.median_ops_per_sec else {
            println!(
                "{:<9} {:<16} {:>8}  {}",
                c.workload.name(),
                config,
                "-",
                c.errors.first().map(String::as_str).unwrap_or("no run")
            );
            continue;
        };
        let spread = format!(
            "{}-{} (+/-{:.1}%)",
            si(c.min_ops_per_sec.unwrap_or(med)),
            si(c.max_ops_per_sec.unwrap_or(med)),
            c.spread_pct().unwrap_or(0.0)
        );
        let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or("-".into());
        let mut host = format!(
            "{}% others, {}/{} noisy",
            opt(c.others_cpu_pct, &|p| format!("{p:.0}")),
            c.noisy_runs,
            c.runs
        );
        if !c.errors.is_empty() {
            host.push_str(&format!(", {} problem(s)", c.errors.len()));
        }
        println!(
            "{:<9} {:<16} {:>8} {:>6} {:>6}  {:<25} {:>5} {:>6}  {}",
            c.workload.name(),
            config,
            si(med),
            opt(c.ratio, &|r| format!("{r:.3}")),
            opt(c.paired_ratio, &|r| format!("{r:.3}")),
            spread,
            opt(c.tool_cpu_pct, &|p| format!("{p:.1}%")),
            opt(c.tool_attach_secs, &|s| format!("{s:.2}s")),
            host
        );
    }
    println!("\nconfigurations:");
    for c in configs {
        println!("  {:<17} {}", c.name(), c.describe());
    }
    println!(
        "columns:\n  \
         ops/s   median of the runs; ratio = median / baseline median (0.93 = 7% slower)\n  \
         paired  median over rounds of run / same round's baseline run (cross-check for drift)\n  \
         spread  min-max of the runs, +/- half the range in % of the median\n  \
         tool    the tool's own CPU time while attached, % of one CPU; attach = start to attached\n  \
         host    median CPU used by other processes during the runs (% of one CPU), and runs\n          \
         flagged noisy (others > {NOISY_OTHERS_CPU_PCT:.0}% or another tracer running)"
    );
}

pub fn print_targets(targets: &[Target]) {
    println!("\ntargets:");
    let w = targets.iter().map(|t| t.what.len()).max().unwrap_or(0);
    for t in targets {
        println!("  {}  {:<w$}  {}", t.status.label(), t.what, t.measured);
    }
}
