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

use super::proc::{self, Pipes, Proc};
use crate::util;

/// How long a tool may take to attach, and to exit after SIGINT.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Config {
    Baseline,
    /// `stallprobe --pid TARGET` with the default hook (auto: fentry, else raw tracepoints).
    Stallprobe,
    /// The same with `--hook tracepoint`.
    StallprobeTp,
    /// The same with `--hook fentry` (the hook comparison, `bench --hooks`).
    StallprobeFentry,
    /// The same with `--hook raw` (the hook comparison, `bench --hooks`).
    StallprobeRaw,
    /// stallprobe watching an idle process: what every other process on the host pays.
    StallprobeOther,
    Bpftrace,
    Offcputime,
}

impl Config {
    pub const ALL: [Config; 6] = [
        Config::Baseline,
        Config::Stallprobe,
        Config::StallprobeTp,
        Config::StallprobeOther,
        Config::Bpftrace,
        Config::Offcputime,
    ];

    /// The hook comparison (`bench --hooks`, and in the kernel matrix's guests): no probes, and
    /// stallprobe on the target with each hook.
    pub const HOOKS: [Config; 4] = [
        Config::Baseline,
        Config::StallprobeFentry,
        Config::StallprobeRaw,
        Config::StallprobeTp,
    ];

    /// The `--hook` this configuration passes to stallprobe (None: the default, auto).
    fn hook(self) -> Option<&'static str> {
        match self {
            Config::StallprobeTp => Some("tracepoint"),
            Config::StallprobeFentry => Some("fentry"),
            Config::StallprobeRaw => Some("raw"),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Stallprobe => "stallprobe",
            Config::StallprobeTp => "stallprobe-tp",
            Config::StallprobeFentry => "stallprobe-fentry",
            Config::StallprobeRaw => "stallprobe-raw",
            Config::StallprobeOther => "stallprobe-other",
            Config::Bpftrace => "bpftrace",
            Config::Offcputime => "offcputime",
        }
    }

    /// The command, as the table's legend shows it.
    pub fn describe(self) -> &'static str {
        match self {
            Config::Baseline => "no probes",
            Config::Stallprobe => {
                "stallprobe --pid TARGET --threshold 500ms --format json -o FILE (default --hook auto)"
            }
            Config::StallprobeTp => "the same with --hook tracepoint (syscalls:sys_{enter,exit}_*)",
            Config::StallprobeFentry => {
                "the same with --hook fentry (fentry/fexit on each probed syscall)"
            }
            Config::StallprobeRaw => {
                "the same with --hook raw (raw tracepoints sys_enter/sys_exit)"
            }
            Config::StallprobeOther => {
                "stallprobe attached to an idle `sleep` instead: the cost to the rest of the host"
            }
            Config::Bpftrace => {
                "bpftrace tests/workloads/bench/syscalls.bt TARGET (per-thread latency histograms)"
            }
            Config::Offcputime => {
                "offcputime -p TARGET (libbpf-tools; filtered to the target, but its sched_switch hook runs for every switch on the host)"
            }
        }
    }
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

    /// Start `stallprobe --pid PID ...` and wait for its "watching pid" line.
    ///
    /// Not `--quiet`: with it stallprobe prints nothing until the report, so there is no way to
    /// tell when it has attached. Without it, stderr gets one line, plus live lines for threads
    /// blocked past the threshold (none in these workloads).
    pub fn start_stallprobe(
        &self,
        pid: u32,
        hook: Option<&str>,
        report: &Path,
    ) -> Result<(Proc, f64)> {
        let mut cmd = Command::new(&self.stallprobe);
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

    /// Start the tool of configuration `c` on `target` and wait until it is attached.
    pub fn attach(&self, c: Config, target: u32) -> Result<Attached> {
        if let Some(why) = self.missing(c) {
            bail!("{why}");
        }
        let report = self.scratch.join(format!("{}.json", c.name()));
        let _ = std::fs::remove_file(&report);
        let mut idle = None;
        let (tool, attach_secs) = match c {
            Config::Baseline => (None, None),
            Config::Stallprobe
            | Config::StallprobeTp
            | Config::StallprobeOther
            | Config::StallprobeFentry
            | Config::StallprobeRaw => {
                let pid = if c == Config::StallprobeOther {
                    let sleeper = Proc::spawn(
                        "sleep",
                        Command::new("sleep").arg("100000"),
                        Pipes::default(),
                    )?;
                    let pid = sleeper.pid();
                    idle = Some(sleeper);
                    pid
                } else {
                    target
                };
                let (p, secs) = self.start_stallprobe(pid, c.hook(), &report)?;
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
            Config::Stallprobe
            | Config::StallprobeTp
            | Config::StallprobeOther
            | Config::StallprobeFentry
            | Config::StallprobeRaw => stallprobe_saw(&self.report),
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
