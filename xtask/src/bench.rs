//! `cargo xtask bench`: stallprobe's overhead, against no probes, bpftrace and offcputime, and
//! its resource use.
//!
//! - Throughput of four C workloads (tests/workloads/bench/: futex ping-pong, mutex work queue,
//!   epoll echo server, UDP receiver) under each configuration ([`tools::Config`]), alternating
//!   configurations run after run so slow drifts of a noisy host hit all of them alike; medians,
//!   ratios to the baseline and min-max spreads.
//! - Each workload sets up, prints its pid and waits for a go byte on stdin; the tool is started
//!   and waited for until it is attached, then the workload measures for `--secs` (after a 100 ms
//!   warm-up) and prints its rate; then the tool is stopped with SIGINT.
//! - stallprobe's attach time, its memory on a 1,000-thread target, and the time from grace
//!   expiry to the report on a 200-thread target that ignores SIGTERM.
//!
//! Results: a table, the issue's targets with PASS/FAIL, and target/bench/latest.json with every
//! run. Missed targets do not fail the command.

mod extras;
mod goroutines;
mod proc;
mod report;
mod tools;
mod workloads;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use serde_json::json;

use crate::util::{self, step};
use report::RunRecord;
use tools::{Config, Tools};
use workloads::Workload;

/// Extra measurements' sizes.
const MEMORY_THREADS: u32 = 1000;
const MEMORY_WATCH: Duration = Duration::from_secs(3);
const GRACE_THREADS: u32 = 200;
const GRACE_RUNS: usize = 3;
/// Parked goroutines of the Go target, and stallprobe runs against it.
const GOROUTINES: u64 = 100_000;
const GOROUTINE_RUNS: usize = 3;
const ATTACH_RUNS: usize = 5;
/// Before each run, wait up to this long for other processes to use less than
/// `report::NOISY_OTHERS_CPU_PCT` of a CPU; at most `QUIET_BUDGET` in all.
const QUIET_WAIT: Duration = Duration::from_secs(5);
const QUIET_BUDGET: Duration = Duration::from_secs(30);

/// Set by Ctrl-C / SIGTERM: finish the current run (its processes are killed and reaped), skip
/// the rest, report what was measured. A second Ctrl-C exits at once.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_sig: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// `cargo xtask bench`'s options.
pub struct Options {
    pub runs: usize,
    pub secs: f64,
    pub only: Option<String>,
    /// Only the hook comparison: no probes, and stallprobe with each hook (no other tools, no
    /// attach/memory/grace measurements).
    pub hooks: bool,
    /// Run the hook comparison in the kernel matrix's guests instead (see kernel.rs).
    pub kernel: Option<String>,
}

pub fn run(o: &Options) -> Result<()> {
    if o.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if !(o.secs > 0.0 && o.secs <= 600.0) {
        bail!("--secs must be between 0 and 600");
    }
    let workloads = Workload::select(o.only.as_deref())?;
    util::require_root("the bench loads BPF programs")?;
    let stallprobe = crate::build()?;
    step("building the bench workloads (tests/workloads/bench/*.c, gcc -O2 -g -pthread)");
    let bins = workloads::build()?;
    if let Some(k) = &o.kernel {
        return in_guests(o, k, &stallprobe, &bins);
    }
    let configs: &[Config] = if o.hooks {
        &Config::HOOKS
    } else {
        &Config::ALL
    };
    let path = util::root().join("target/bench/latest.json");
    measure(o, &workloads, stallprobe, &bins, configs, !o.hooks, &path)
}

/// `cargo xtask bench --kernel K`: the hook comparison in a guest per kernel (emulated: only
/// the ratios to the baseline mean something). Results: target/kernel-matrix/K/bench/bench.json.
fn in_guests(o: &Options, which: &str, stallprobe: &Path, bins: &Path) -> Result<()> {
    let kernels = crate::kernel::select(which)?;
    crate::kernel::ensure()?;
    let xtask = std::env::current_exe()?;
    let mut failed = Vec::new();
    for k in kernels {
        step(&format!(
            "bench: hook comparison on kernel {} (emulated guest)",
            k.name
        ));
        let out = crate::kernel::out_dir(k, "bench")?;
        let q = |p: &Path| crate::kernel::sh_quote(&p.to_string_lossy());
        let mut cmd = format!(
            "{} bench-guest --runs {} --secs {} --stallprobe {} --bins {} --out {}",
            q(&xtask),
            o.runs,
            o.secs,
            q(stallprobe),
            q(bins),
            q(&out)
        );
        if let Some(only) = &o.only {
            cmd.push_str(&format!(" --only {}", crate::kernel::sh_quote(only)));
        }
        let overlay = util::root().join("target/bench");
        std::fs::create_dir_all(&overlay)?;
        let g = crate::kernel::boot(k, &out, &cmd, &[overlay], Duration::from_secs(30 * 60))?;
        let doc: Option<serde_json::Value> = std::fs::read_to_string(out.join("bench.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        println!(
            "\n  kernel {}: boot {}, guest {:.0} s, results {}",
            k.name,
            g.boot_secs.map_or("?".into(), |b| format!("{b:.0} s")),
            g.total_secs,
            out.join("bench.json").display()
        );
        match &doc {
            Some(d) => {
                for c in d["summary"].as_array().into_iter().flatten() {
                    println!(
                        "    {:<9} {:<18} ratio {}  (paired {})",
                        c["workload"].as_str().unwrap_or("?"),
                        c["config"].as_str().unwrap_or("?"),
                        c["ratio"]
                            .as_f64()
                            .map_or("-".into(), |r| format!("{r:.3}")),
                        c["paired_ratio"]
                            .as_f64()
                            .map_or("-".into(), |r| format!("{r:.3}")),
                    );
                }
            }
            None => println!("    no results"),
        }
        if g.exit != Some(0) || doc.is_none() {
            failed.push(k.name);
        }
    }
    if !failed.is_empty() {
        bail!("the bench failed in the guest of {}", failed.join(", "));
    }
    Ok(())
}

/// `xtask bench-guest`, inside a guest: the hook comparison with host-built binaries, results
/// to `out/bench.json`.
pub fn guest(o: &Options, stallprobe: PathBuf, bins: &Path, out: &Path) -> Result<()> {
    println!("{}: bench", crate::kernel::GUEST_HELLO);
    let workloads = Workload::select(o.only.as_deref())?;
    measure(
        o,
        &workloads,
        stallprobe,
        bins,
        &Config::HOOKS,
        false,
        &out.join("bench.json"),
    )
}

/// Run every configuration (and with `extras` the attach/memory/grace measurements), print
/// the table, write `path`.
fn measure(
    o: &Options,
    workloads: &[Workload],
    stallprobe: PathBuf,
    bins: &Path,
    configs: &[Config],
    extras: bool,
    path: &Path,
) -> Result<()> {
    let (runs, secs) = (o.runs, o.secs);
    let started = Instant::now();
    let tools = Tools::find(stallprobe)?;
    let configs: Vec<Config> = configs.to_vec();
    for c in &configs {
        if let Some(why) = tools.missing(*c) {
            println!("  {}: skipped, {why}", c.name());
        }
    }
    let machine = machine_info(&tools);
    let loadavg_start = loadavg();
    // SAFETY: the handler only touches an atomic (and _exit).
    unsafe {
        let handler = on_interrupt as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }

    step(&format!(
        "throughput: {} workload(s) x {} configurations x {runs} runs of {secs} s, alternating",
        workloads.len(),
        configs.len()
    ));
    for w in workloads {
        println!("  {:<9} {}", w.name(), w.describe());
    }
    let (records, waited) = run_matrix(runs, secs, workloads, &configs, &tools, bins);

    let (mut attach, mut memory, mut grace) = (None, None, None);
    if extras && !interrupted() {
        step("attach time, memory and time to report");
        attach = report_err("attach time", extras::attach_time(&tools, ATTACH_RUNS));
    }
    if extras && !interrupted() {
        memory = report_err(
            "memory",
            extras::memory(&tools, bins, MEMORY_THREADS, MEMORY_WATCH),
        );
    }
    if extras && !interrupted() {
        grace = report_err(
            "grace",
            extras::grace(&tools, bins, GRACE_THREADS, GRACE_RUNS),
        );
    }
    let mut gor = None;
    if extras && !interrupted() {
        step(&format!(
            "goroutines: {GOROUTINES} parked, read by stallprobe ({GOROUTINE_RUNS} runs)"
        ));
        gor = report_err(
            "goroutines",
            goroutines::measure(&tools, GOROUTINES, GOROUTINE_RUNS),
        );
    }
    if interrupted() {
        println!("\ninterrupted: reporting what was measured so far");
    }

    let cells = report::cells(&records, workloads, &configs);
    let targets = report::targets(
        &cells,
        &records,
        workloads,
        attach.as_ref(),
        memory.as_ref(),
        grace.as_ref(),
        gor.as_ref(),
    );
    step("results");
    println!(
        "  {} | {} CPUs | {} | kernel {}",
        machine["cpu_model"].as_str().unwrap_or("?"),
        machine["nproc"],
        machine["date"].as_str().unwrap_or("?"),
        machine["kernel"].as_str().unwrap_or("?"),
    );
    report::print_table(&cells, &configs);
    report::print_targets(&targets);
    print_noise_warning(&records);

    std::fs::create_dir_all(path.parent().unwrap())?;
    let doc = json!({
        "schema": "stallprobe-bench/1",
        "machine": machine,
        "loadavg": { "start": loadavg_start, "end": loadavg() },
        "params": {
            "runs": runs,
            "secs": secs,
            "warmup_secs": 0.1,
            "workloads": workloads.iter().map(|w| json!({"name": w.name(), "what": w.describe()})).collect::<Vec<_>>(),
            "configs": configs.iter().map(|c| json!({"name": c.name(), "what": c.describe()})).collect::<Vec<_>>(),
            "order": "for each round: for each workload: every configuration in the order above",
            "noisy_run": format!("other processes used more than {}% of one CPU during the window, or another tracer ran", report::NOISY_OTHERS_CPU_PCT),
        },
        "summary": cells,
        "targets": targets,
        "attach_time": attach,
        "memory": memory,
        "grace": grace,
        "goroutines": gor,
        "interrupted": interrupted(),
        "waited_for_quiet_host_secs": waited.as_secs_f64(),
        "total_secs": started.elapsed().as_secs_f64(),
        "runs": records,
    });
    std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")?;
    println!(
        "\nall runs, medians, ratios and machine info: {} ({:.0} s in total)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Every configuration of every workload, `runs` times, alternating. Before each run, wait (a
/// little, within a budget) for the host to be quiet. Returns the runs and the time spent waiting.
fn run_matrix(
    runs: usize,
    secs: f64,
    workloads: &[Workload],
    configs: &[Config],
    tools: &Tools,
    bins: &std::path::Path,
) -> (Vec<RunRecord>, Duration) {
    let mut records = Vec::new();
    let mut waited = Duration::ZERO;
    for round in 1..=runs {
        for &w in workloads {
            for &c in configs {
                if interrupted() {
                    return (records, waited);
                }
                if waited < QUIET_BUDGET {
                    let max = QUIET_WAIT.min(QUIET_BUDGET - waited);
                    let this = proc::wait_for_quiet(report::NOISY_OTHERS_CPU_PCT, max);
                    if this >= Duration::from_secs(1) {
                        println!(
                            "  (waited {:.1} s for other processes to quiet down)",
                            this.as_secs_f64()
                        );
                    }
                    waited += this;
                }
                let r = run_one(round, w, c, tools, bins, secs);
                if interrupted() {
                    // Ctrl-C reached the workload and the tool too: not a real result.
                    return (records, waited);
                }
                print_progress(runs, &r);
                records.push(r);
            }
        }
    }
    (records, waited)
}

fn print_noise_warning(records: &[RunRecord]) {
    let noisy = records.iter().filter(|r| r.is_noisy()).count();
    if noisy == 0 {
        return;
    }
    let mut tracers: Vec<&str> = records
        .iter()
        .flat_map(|r| {
            r.foreign_tracers
                .iter()
                .map(|t| t.split_once(' ').map_or(t.as_str(), |x| x.1))
        })
        .collect();
    tracers.sort();
    tracers.dedup();
    println!(
        "\nwarning: {noisy} of {} runs were noisy: other processes used more than {:.0}% of a CPU \
         during the measured window{}. Their ratios are less trustworthy; re-run on a quiet host.",
        records.len(),
        report::NOISY_OTHERS_CPU_PCT,
        if tracers.is_empty() {
            String::new()
        } else {
            format!(
                ", or other tracers ran ({}; they slow the syscalls of every configuration, \
                 the baseline included)",
                tracers.join(", ")
            )
        }
    );
}

/// One workload under one configuration. Every process it starts is gone when it returns.
fn run_one(
    round: usize,
    w: Workload,
    c: Config,
    tools: &Tools,
    bins: &std::path::Path,
    secs: f64,
) -> RunRecord {
    let mut rec = RunRecord {
        round,
        workload: w,
        config: c.name(),
        ops_per_sec: None,
        measurement: None,
        tool: Default::default(),
        host: Default::default(),
        foreign_tracers: Vec::new(),
        error: None,
    };
    if let Some(why) = tools.missing(c) {
        rec.error = Some(why);
        return rec;
    }
    let result = (|| -> Result<()> {
        let mut running = w.start(bins, secs)?;
        let attached = tools.attach(c, running.pid())?;
        let mut ours = running.pids();
        ours.extend(attached.pids());
        ours.push(std::process::id());
        rec.foreign_tracers = proc::foreign_tracers(&ours);
        let cpu0 = proc::HostCpu::now(&ours);
        running.go()?;
        let m = running.result(secs);
        rec.host = cpu0.load_until(&proc::HostCpu::now(&ours));
        rec.foreign_tracers.extend(proc::foreign_tracers(&ours));
        rec.foreign_tracers.sort();
        rec.foreign_tracers.dedup();
        // Stop the tool while the target is still alive (as a user would), then the workload.
        running.freeze();
        rec.tool = attached.detach();
        running.stop();
        let m = m?;
        rec.ops_per_sec = Some(m.ops_per_sec);
        rec.measurement = Some(m);
        Ok(())
    })();
    if let Err(e) = result {
        rec.error = Some(format!("{e:#}"));
    }
    rec
}

fn print_progress(runs: usize, r: &RunRecord) {
    let what = match (&r.ops_per_sec, &r.error) {
        (Some(v), _) => format!("{v:>12.0} ops/s"),
        (None, Some(e)) => format!("error: {}", e.lines().next().unwrap_or("")),
        (None, None) => "?".into(),
    };
    let mut extra = String::new();
    if let Some(a) = r.tool.attach_secs {
        extra.push_str(&format!("  attach {a:.2}s"));
    }
    if let Some(p) = &r.tool.problem {
        extra.push_str(&format!("  ({p})"));
    }
    if r.is_noisy() {
        extra.push_str(&format!(
            "  [noisy: others used {:.0}% CPU{}]",
            r.host.others_cpu_pct,
            if r.foreign_tracers.is_empty() {
                String::new()
            } else {
                format!(", {} other tracer(s)", r.foreign_tracers.len())
            }
        ));
    }
    println!(
        "  [{}/{runs}] {:<9} {:<17} {what}{extra}",
        r.round,
        r.workload.name(),
        r.config
    );
}

fn report_err<T>(what: &str, r: Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            println!("  {what}: error: {e:#}");
            None
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn machine_info(tools: &Tools) -> serde_json::Value {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let cpu_model = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|x| x.1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cmd = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .args(args)
            .current_dir(util::root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let dirty = cmd("git", &["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    json!({
        "kernel": cmd("uname", &["-r"]).unwrap_or_else(|| read("/proc/sys/kernel/osrelease")),
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu_model,
        "date": cmd("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        "git_commit": cmd("git", &["rev-parse", "HEAD"]),
        "git_dirty": dirty,
        "stallprobe": tools.stallprobe_version(),
        "bpftrace": tools.bpftrace_version(),
        "offcputime": tools.offcputime.as_ref().map(|p| p.display().to_string()),
    })
}
