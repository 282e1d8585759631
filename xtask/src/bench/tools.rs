//! The configurations a workload runs under: no probes, stallprobe (three ways), bpftrace and
//! offcputime. Each tool is started, waited for until it is really attached, and after the
//! measured window stopped with SIGINT (and killed if it does not exit).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{
    proc::{self, Pipes, Proc},
    workloads::Workload,
};
use crate::util;

/// How long a tool may take to attach, and to exit after SIGINT.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A `--hook` of stallprobe's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Fentry,
    Sched,
    Raw,
    Tracepoint,
}

impl Hook {
    /// In the order the tables show them (auto's preference first).
    pub const ALL: [Hook; 4] = [Hook::Fentry, Hook::Sched, Hook::Raw, Hook::Tracepoint];

    /// The `--hook` value (and `session.hook` in the report).
    pub fn name(self) -> &'static str {
        match self {
            Hook::Fentry => "fentry",
            Hook::Sched => "sched",
            Hook::Raw => "raw",
            Hook::Tracepoint => "tracepoint",
        }
    }

    pub fn from_name(s: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.name() == s)
    }

    fn describe(self) -> &'static str {
        match self {
            Hook::Fentry => "fentry/fexit on each probed syscall",
            Hook::Sched => "BTF tracepoint sched_switch",
            Hook::Raw => "raw tracepoints sys_enter/sys_exit",
            Hook::Tracepoint => "syscalls:sys_{enter,exit}_* tracepoints",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    Baseline,
    /// `stallprobe --hook H --pid TARGET`.
    Stallprobe(Hook),
    /// `stallprobe --hook H` attached to an idle `sleep` instead: what every other process on
    /// the host pays.
    StallprobeOther(Hook),
    Bpftrace,
    Offcputime,
    /// An earlier build of stallprobe (`STALLPROBE_BENCH_BEFORE=BIN`) with `--hook raw`, to
    /// compare a change with what came before it, side by side.
    Before,
}

/// The earlier build to compare with, from `STALLPROBE_BENCH_BEFORE`.
pub fn before_bin() -> Option<PathBuf> {
    std::env::var_os("STALLPROBE_BENCH_BEFORE")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
}

impl Config {
    /// The configurations of one workload: no probes; stallprobe with each hook in `hooks`, on
    /// the target (on an idle process for the workloads no tool watches, and both ways for the
    /// ping-pong); with `tools`, bpftrace and offcputime.
    pub fn for_workload(w: Workload, hooks: &[Hook], tools: bool) -> Vec<Config> {
        let mut v = vec![Config::Baseline];
        if w.unrelated() {
            v.extend(hooks.iter().map(|&h| Config::StallprobeOther(h)));
        } else {
            v.extend(hooks.iter().map(|&h| Config::Stallprobe(h)));
            if w == Workload::Pingpong {
                v.extend(hooks.iter().map(|&h| Config::StallprobeOther(h)));
            }
            if before_bin().is_some() {
                v.push(Config::Before);
            }
        }
        if tools {
            v.extend([Config::Bpftrace, Config::Offcputime]);
        }
        v
    }

    /// The tool watches an idle process, not the workload.
    pub fn watches_other(self) -> bool {
        matches!(self, Config::StallprobeOther(_))
    }

    pub fn name(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Stallprobe(Hook::Fentry) => "stallprobe-fentry",
            Config::Stallprobe(Hook::Sched) => "stallprobe-sched",
            Config::Stallprobe(Hook::Raw) => "stallprobe-raw",
            Config::Stallprobe(Hook::Tracepoint) => "stallprobe-tp",
            Config::StallprobeOther(Hook::Fentry) => "stallprobe-fentry-other",
            Config::StallprobeOther(Hook::Sched) => "stallprobe-sched-other",
            Config::StallprobeOther(Hook::Raw) => "stallprobe-raw-other",
            Config::StallprobeOther(Hook::Tracepoint) => "stallprobe-tp-other",
            Config::Bpftrace => "bpftrace",
            Config::Offcputime => "offcputime",
            Config::Before => "stallprobe-before-raw",
        }
    }

    /// The command, as the table's legend shows it.
    pub fn describe(self) -> String {
        match self {
            Config::Baseline => "no probes".into(),
            Config::Stallprobe(h) => format!(
                "stallprobe --hook {} --pid TARGET --threshold 500ms --format json -o FILE ({})",
                h.name(),
                h.describe()
            ),
            Config::StallprobeOther(h) => format!(
                "the same with --hook {} attached to an idle `sleep`: the cost to the rest of the host",
                h.name()
            ),
            Config::Bpftrace => {
                "bpftrace tests/workloads/bench/syscalls.bt TARGET (per-thread latency histograms)"
                    .into()
            }
            Config::Offcputime => {
                "offcputime -p TARGET (libbpf-tools; filtered to the target, but its sched_switch hook runs for every switch on the host)".into()
            }
            Config::Before => format!(
                "an earlier stallprobe ({}) with --hook raw, to compare with stallprobe-raw",
                before_bin().map(|p| p.display().to_string()).unwrap_or_default()
            ),
        }
    }
}

/// The hooks that load here and what `--hook auto` picks.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct HookSupport {
    pub available: Vec<Hook>,
    /// Hooks that do not load, with stallprobe's reason.
    pub refused: Vec<(Hook, String)>,
    pub auto: Option<Hook>,
}

/// Where the tools are.
pub struct Tools {
    pub stallprobe: PathBuf,
    pub bpftrace: Option<PathBuf>,
    pub offcputime: Option<PathBuf>,
    /// The bpftrace script.
    pub script: PathBuf,
    /// stallprobe's report of the last run (read back for the sanity check).
    pub scratch: PathBuf,
}

fn which(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

impl Tools {
    pub fn find(stallprobe: PathBuf) -> Result<Tools> {
        let scratch = util::root().join("target/bench/tmp");
        std::fs::create_dir_all(&scratch)?;
        Ok(Tools {
            stallprobe,
            bpftrace: which("bpftrace", &["/usr/bin/bpftrace"]),
            offcputime: which("offcputime", &["/usr/sbin/offcputime"]),
            script: util::root().join("tests/workloads/bench/syscalls.bt"),
            scratch,
        })
    }

    /// Why a configuration cannot run here, if it cannot.
    pub fn missing(&self, c: Config) -> Option<String> {
        match c {
            Config::Bpftrace if self.bpftrace.is_none() => {
                Some("bpftrace not found (cargo xtask setup installs it)".into())
            }
            Config::Offcputime if self.offcputime.is_none() => {
                Some("offcputime not found (package libbpf-tools)".into())
            }
            _ => None,
        }
    }

    pub fn stallprobe_version(&self) -> String {
        util::output(Command::new(&self.stallprobe).arg("--version"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    pub fn bpftrace_version(&self) -> Option<String> {
        let bt = self.bpftrace.as_ref()?;
        util::output(Command::new(bt).arg("--version"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Which hooks load on this kernel, and which one `--hook auto` picks: a 1 s watch of an
    /// idle process with each (stallprobe says why one does not load).
    pub fn hooks(&self) -> Result<HookSupport> {
        let idle = Proc::spawn(
            "sleep",
            Command::new("sleep").arg("100000"),
            Pipes::default(),
        )?;
        let pid = idle.pid().to_string();
        let run = |hook: &str| -> Result<Option<Hook>, String> {
            let out = Command::new(&self.stallprobe)
                .args(["--hook", hook, "--pid", &pid, "--duration", "1s"])
                .args(["--format", "json", "--quiet"])
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                return Err(err.lines().next().unwrap_or("failed").trim().to_string());
            }
            let r: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            Ok(r["session"]["hook"].as_str().and_then(Hook::from_name))
        };
        let mut support = HookSupport::default();
        for h in Hook::ALL {
            match run(h.name()) {
                Ok(Some(ran)) if ran == h => support.available.push(h),
                Ok(other) => support
                    .refused
                    .push((h, format!("the report says {other:?} ran"))),
                Err(why) => support.refused.push((h, why)),
            }
        }
        support.auto = run("auto").ok().flatten();
        Ok(support)
    }

    /// Start `stallprobe --pid PID ...` and wait for its "watching pid" line.
    ///
    /// Not `--quiet`: with it stallprobe prints nothing until the report, so there is no way to
    /// tell when it has attached. Without it, stderr gets one line, plus live lines for threads
    /// blocked past the threshold (none in these workloads).
    pub fn start_stallprobe(
        &self,
        bin: &Path,
        pid: u32,
        hook: Option<&str>,
        report: &Path,
    ) -> Result<(Proc, f64)> {
        let mut cmd = Command::new(bin);
        cmd.arg("--pid")
            .arg(pid.to_string())
            .args(["--threshold", "500ms", "--format", "json", "-o"])
            .arg(report);
        if let Some(h) = hook {
            cmd.args(["--hook", h]);
        }
        let t0 = Instant::now();
        let mut p = Proc::spawn(
            "stallprobe",
            &mut cmd,
            Pipes {
                stderr: true,
                ..Pipes::default()
            },
        )?;
        p.stderr_line("watching pid", ATTACH_TIMEOUT)?;
        Ok((p, t0.elapsed().as_secs_f64()))
    }

    /// Start the tool of configuration `c` and wait until it is attached: on `target`, or on an
    /// idle process it starts when `target` is None or `c` watches another process.
    pub fn attach(&self, c: Config, target: Option<u32>) -> Result<Attached> {
        if let Some(why) = self.missing(c) {
            bail!("{why}");
        }
        let report = self.scratch.join(format!("{}.json", c.name()));
        let _ = std::fs::remove_file(&report);
        let mut idle = None;
        let target = match target.filter(|_| !c.watches_other()) {
            Some(t) => t,
            None if c == Config::Baseline => 0,
            None => {
                let sleeper = Proc::spawn(
                    "sleep",
                    Command::new("sleep").arg("100000"),
                    Pipes::default(),
                )?;
                let pid = sleeper.pid();
                idle = Some(sleeper);
                pid
            }
        };
        let (tool, attach_secs) = match c {
            Config::Baseline => (None, None),
            Config::Stallprobe(h) | Config::StallprobeOther(h) => {
                let (p, secs) =
                    self.start_stallprobe(&self.stallprobe, target, Some(h.name()), &report)?;
                (Some(p), Some(secs))
            }
            Config::Before => {
                let bin = before_bin().context("STALLPROBE_BENCH_BEFORE is not a file")?;
                let (p, secs) = self.start_stallprobe(&bin, target, Some("raw"), &report)?;
                (Some(p), Some(secs))
            }
            Config::Bpftrace => {
                let t0 = Instant::now();
                let mut p = Proc::spawn(
                    "bpftrace",
                    Command::new(self.bpftrace.as_ref().unwrap())
                        .args(["-B", "line"])
                        .arg(&self.script)
                        .arg(target.to_string()),
                    Pipes {
                        stdout: true,
                        stderr: true,
                        ..Pipes::default()
                    },
                )?;
                // The script's BEGIN line: printed once every probe is attached.
                p.stdout_line("bench: attached", ATTACH_TIMEOUT)?;
                (Some(p), Some(t0.elapsed().as_secs_f64()))
            }
            Config::Offcputime => {
                let t0 = Instant::now();
                let mut p = Proc::spawn(
                    "offcputime",
                    Command::new(self.offcputime.as_ref().unwrap())
                        .arg("-p")
                        .arg(target.to_string()),
                    Pipes {
                        stdout: true,
                        stderr: true,
                        ..Pipes::default()
                    },
                )?;
                wait_offcputime_attached(&mut p)?;
                (Some(p), Some(t0.elapsed().as_secs_f64()))
            }
        };
        let cpu_at_ready = tool.as_ref().and_then(|p| proc::cpu_secs(p.pid()));
        Ok(Attached {
            config: c,
            tool,
            idle,
            attach_secs,
            cpu_at_ready,
            ready_at: Instant::now(),
            report,
        })
    }
}

/// offcputime prints nothing when it is ready: it attaches, installs its SIGINT handler and
/// sleeps for the tracing duration. It is attached once its main thread sleeps in
/// clock_nanosleep (or nanosleep); a SIGINT before that would kill it without output.
fn wait_offcputime_attached(p: &mut Proc) -> Result<()> {
    const NANOSLEEP: u64 = 35;
    const CLOCK_NANOSLEEP: u64 = 230;
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    loop {
        if let Some(st) = p.try_wait() {
            let err = p.stderr.as_mut().map(|l| {
                l.finish(Duration::from_millis(200));
                l.tail(8)
            });
            bail!(
                "offcputime exited before attaching ({st}): {}",
                err.unwrap_or_default()
            );
        }
        if matches!(
            proc::current_syscall(p.pid()),
            Some(NANOSLEEP | CLOCK_NANOSLEEP)
        ) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("offcputime did not attach within {ATTACH_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A tool attached for one run.
pub struct Attached {
    config: Config,
    tool: Option<Proc>,
    /// The idle process stallprobe-other watches.
    idle: Option<Proc>,
    attach_secs: Option<f64>,
    cpu_at_ready: Option<f64>,
    ready_at: Instant,
    report: PathBuf,
}

/// What a tool did in one run, for the results file.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ToolRun {
    /// Start of the tool to attached.
    pub attach_secs: Option<f64>,
    /// The tool's own CPU use between attached and stopped, in % of one CPU.
    pub cpu_pct: Option<f64>,
    /// SIGINT to exit.
    pub stop_secs: Option<f64>,
    /// What the tool saw: proof that it was watching the workload.
    pub saw: Option<Value>,
    /// Anything that went wrong at stop (bad exit, had to be killed).
    pub problem: Option<String>,
}

impl Attached {
    pub fn pids(&self) -> Vec<u32> {
        self.tool
            .iter()
            .chain(self.idle.iter())
            .map(|p| p.pid())
            .collect()
    }

    /// Stop the tool (SIGINT, as a user would), collect what it saw.
    pub fn detach(mut self) -> ToolRun {
        let mut out = ToolRun {
            attach_secs: self.attach_secs,
            ..ToolRun::default()
        };
        let Some(mut tool) = self.tool.take() else {
            return out;
        };
        let cpu_now = proc::cpu_secs(tool.pid());
        if let (Some(a), Some(b)) = (self.cpu_at_ready, cpu_now) {
            let wall = self.ready_at.elapsed().as_secs_f64();
            out.cpu_pct = Some(100.0 * (b - a) / wall.max(1e-3));
        }
        let t0 = Instant::now();
        tool.signal(libc::SIGINT);
        let exited = tool.wait_timeout(STOP_TIMEOUT);
        // Where it is stuck, before killing it (detaching a tracepoint waits for RCU grace
        // periods, which a loaded host can stretch).
        let stuck_in = exited.is_none().then(|| proc::kernel_stack(tool.pid(), 4));
        let st = exited.unwrap_or_else(|| tool.kill());
        out.stop_secs = Some(t0.elapsed().as_secs_f64());
        if let Some(stack) = stuck_in {
            out.problem = Some(format!(
                "{} did not exit within {STOP_TIMEOUT:?} of SIGINT (kernel stack: {stack}); killed",
                tool.name
            ));
        } else if !st.success() {
            let err = tool.stderr.as_mut().map(|l| {
                l.finish(Duration::from_millis(500));
                l.tail(4)
            });
            out.problem = Some(format!(
                "{} exited with {st}: {}",
                tool.name,
                err.unwrap_or_default()
            ));
        }
        if let Some(l) = tool.stdout.as_mut() {
            l.finish(Duration::from_secs(2));
        }
        out.saw = match self.config {
            Config::Stallprobe(_) | Config::StallprobeOther(_) | Config::Before => {
                stallprobe_saw(&self.report)
            }
            Config::Bpftrace => tool.stdout.as_ref().map(|l| {
                json!({ "threads_with_histograms":
                    l.seen.iter().filter(|s| s.starts_with("@h[")).count() })
            }),
            Config::Offcputime => tool.stdout.as_ref().map(|l| {
                json!({ "output_lines": l.seen.iter().filter(|s| !s.trim().is_empty()).count() })
            }),
            Config::Baseline => None,
        };
        out
    }
}

/// From stallprobe's JSON report: the hook it used, how many probed calls it counted on how many
/// threads, and whether it dropped events.
fn stallprobe_saw(report: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(report)
        .with_context(|| format!("reading {}", report.display()))
        .ok()?;
    let r: Value = serde_json::from_str(&text).ok()?;
    let threads = r["threads"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut calls = serde_json::Map::new();
    for t in threads {
        if let Some(blocks) = t["blocks"].as_object() {
            for (call, s) in blocks {
                let n = s["count"].as_u64().unwrap_or(0);
                let e = calls.entry(call.clone()).or_insert(json!(0));
                *e = json!(e.as_u64().unwrap_or(0) + n);
            }
        }
    }
    Some(json!({
        "hook": r["session"]["hook"],
        "threads": threads.len(),
        "blocking_calls_counted": calls,
        "dropped_events": r["dropped_events"],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_workload_gets_the_baseline_every_hook_and_the_tools() {
        let hooks = [Hook::Sched, Hook::Raw];
        let pp = Config::for_workload(Workload::Pingpong, &hooks, true);
        assert_eq!(
            pp.iter().map(|c| c.name()).collect::<Vec<_>>(),
            [
                "baseline",
                "stallprobe-sched",
                "stallprobe-raw",
                "stallprobe-sched-other",
                "stallprobe-raw-other",
                "bpftrace",
                "offcputime"
            ]
        );
        // Workloads no tool watches: stallprobe only ever watches an idle process there.
        let unwatched = Config::for_workload(Workload::Getppid, &hooks, false);
        assert_eq!(
            unwatched,
            [
                Config::Baseline,
                Config::StallprobeOther(Hook::Sched),
                Config::StallprobeOther(Hook::Raw)
            ]
        );
        let mutex = Config::for_workload(Workload::Mutex, &[Hook::Sched], false);
        assert_eq!(mutex, [Config::Baseline, Config::Stallprobe(Hook::Sched)]);
    }

    #[test]
    fn hook_names_round_trip_and_configs_are_named_apart() {
        for h in Hook::ALL {
            assert_eq!(Hook::from_name(h.name()), Some(h));
        }
        assert_eq!(Hook::from_name("auto"), None);
        let mut names: Vec<&str> = Hook::ALL
            .iter()
            .flat_map(|&h| {
                [
                    Config::Stallprobe(h).name(),
                    Config::StallprobeOther(h).name(),
                ]
            })
            .collect();
        names.extend(["baseline", "bpftrace", "offcputime"]);
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "{names:?}");
    }
}
