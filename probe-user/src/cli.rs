//! The command line: `stallprobe --pid N` and `stallprobe run -- CMD`.

use std::{
    io::IsTerminal,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Parser, Subcommand};

use crate::{
    bpf::HookChoice,
    error::StallError,
    export,
    render::{self, Style},
    report::Report,
    session::SessionOptions,
    signals,
};

const EXIT_CODES: &str = "\
Exit codes:
  0  nothing flagged: the target exited within the grace period after a shutdown signal,
     or no shutdown signal was seen (a report of what was observed)
  1  stalled: the target was still alive when the grace period after a shutdown signal ran
     out; the report flags the threads that kept it alive and says why
  2  stallprobe could not do its job: bad usage, no such process, missing privileges
     (CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE), a kernel without BTF or fentry, an output file
     (-o, --junit, --summary, --pprof, --flamegraph) that could not be written
  With `run --timeout DUR`, a command that finishes before the timeout makes stallprobe exit
  with the command's own exit code (so a failing test suite still fails).

In CI: --junit, --summary, --pprof and --flamegraph write their files in addition to the
report. Under GitHub Actions (GITHUB_ACTIONS=true) each flagged thread also becomes an
`::error` annotation on stdout at the workspace source line where it waits, and the Markdown
summary is appended to $GITHUB_STEP_SUMMARY.

Examples:
  sudo stallprobe --pid 4242                       watch until Ctrl-C, then report
  sudo stallprobe --pid 4242 --duration 10s --format json -o report.json
  sudo stallprobe run --stop-after 10s -- ./my-service --flag
                                                   start, send SIGTERM after 10s, verdict
  sudo stallprobe run --stop-after 10s --junit stallprobe.xml --flamegraph offcpu.svg \\
       --pprof blocked.pb.gz -- ./my-service      the same, for CI";

#[derive(Parser, Debug)]
#[command(
    name = "stallprobe",
    version,
    about = "Find the threads that block, and the ones that keep a process from shutting down.",
    long_about = "stallprobe watches a process from the kernel (eBPF probes on futex, epoll and \
socket/pipe reads), shows per OS thread what it is blocked in, on what and where in the code \
(symbolized user and kernel stacks), how long its blocking calls take, and after a shutdown \
signal (SIGTERM, SIGINT, SIGHUP, SIGQUIT) which threads kept the process alive past the grace \
period, and why. Works for any language runtime.",
    after_help = EXIT_CODES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Process to watch.
    #[arg(short, long, required = true, value_name = "PID")]
    pub pid: Option<u32>,

    #[command(flatten)]
    pub watch: WatchArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start CMD with the probes already attached, optionally stop it, and judge its shutdown.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Run next to a service until stopped: judge every shutdown, log verdicts to the journal.
    #[command(after_help = WATCH_HELP)]
    Watch(SidecarArgs),
}

const WATCH_HELP: &str = "\
Runs until it is stopped (SIGTERM/SIGINT: exit 0). Each time a shutdown signal reaches the
watched processes it applies the grace period and logs the verdict to the systemd journal
(STALLPROBE_VERDICT, STALLPROBE_TID, STALLPROBE_REASON, STALLPROBE_STACK, STALLPROBE_UNIT, ...;
`journalctl SYSLOG_IDENTIFIER=stallprobe`), then goes on watching: a restarted service's new
processes are followed. With Type=notify it reports readiness and sends watchdog keep-alives.

Examples:
  systemctl enable --now stallprobe@nginx.service      (packaging/systemd/stallprobe@.service)
  sudo stallprobe watch --unit nginx --metrics-addr 127.0.0.1:9464
  sudo stallprobe watch --cgroup /sys/fs/cgroup/system.slice/myapp.service";

#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("scope").required(true).args(["unit", "cgroup", "pid"])))]
pub struct SidecarArgs {
    #[command(flatten)]
    pub watch: WatchArgs,

    /// The systemd unit to watch (its cgroup; `.service` is added when no suffix is given).
    #[arg(long, value_name = "NAME")]
    pub unit: Option<String>,

    /// A cgroup directory to watch (all its processes, and its sub-cgroups').
    #[arg(long, value_name = "DIR")]
    pub cgroup: Option<PathBuf>,

    /// One process to watch (the sidecar stops when it exits).
    #[arg(short, long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Serve Prometheus/OpenMetrics metrics on this address (GET /metrics).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9464")]
    pub metrics_addr: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct WatchArgs {
    /// A thread blocked this long is listed; a call this slow is reported.
    #[arg(long, default_value = "500ms", value_parser = parse_duration, value_name = "DUR")]
    pub threshold: Duration,

    /// Stop after this long (default: until Ctrl-C or the target exits).
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub duration: Option<Duration>,

    /// How often blocked threads are re-checked.
    #[arg(long, default_value = "250ms", value_parser = parse_duration, value_name = "DUR")]
    pub interval: Duration,

    /// After the first shutdown signal, wait this long for the process to exit before the verdict.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DUR")]
    pub grace: Duration,

    /// Signals that mean "shut down" (names or numbers, comma-separated).
    #[arg(long, default_value = signals::DEFAULT_SHUTDOWN, value_name = "SIGS")]
    pub signals: String,

    /// Report format: text, json, or folded stacks weighted by blocked ms (for flamegraph.pl,
    /// inferno, speedscope).
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,

    /// Write the report to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Also write a JUnit XML report to FILE: one failing test case per flagged thread.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// Also write a Markdown summary to FILE (under GitHub Actions it is appended to
    /// $GITHUB_STEP_SUMMARY in any case).
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,

    /// Also write a pprof profile (gzip'ed protobuf) of blocked time per thread stack to FILE.
    #[arg(long, value_name = "FILE")]
    pub pprof: Option<PathBuf>,

    /// Also write an off-CPU flame graph (SVG) of blocked time per thread stack to FILE.
    #[arg(long, value_name = "FILE")]
    pub flamegraph: Option<PathBuf>,

    /// Also watch child processes the target forks (default: only the target itself; its
    /// children are reported as they start).
    #[arg(long)]
    pub follow_children: bool,

    /// Where the blocking-call probes hook in: auto picks fentry (cheapest) when the kernel
    /// allows it, else raw tracepoints; see docs/design.md.
    #[arg(long, value_enum, default_value = "auto")]
    pub hook: HookChoice,

    /// With more live threads than this, the final report has stacks only for threads asleep
    /// past the threshold.
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub max_stacks: usize,

    /// Colour: auto (on a terminal), always, never.
    #[arg(long, default_value = "auto", value_parser = ["auto", "always", "never"])]
    pub color: String,

    /// No live lines while watching; only the report.
    #[arg(short, long)]
    pub quiet: bool,

    /// Forward the kernel programs' debug log to stderr.
    #[arg(long, hide = true)]
    pub bpf_log: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub watch: WatchArgs,

    /// Send the stop signal to CMD after this long.
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub stop_after: Option<Duration>,

    /// For commands that should finish on their own (a test suite): if CMD is still running
    /// after DUR, treat it as a shutdown (stop signal, grace, verdict). When CMD finishes in
    /// time, stallprobe exits with CMD's own exit code, so failing tests still fail the job.
    #[arg(long, value_parser = parse_duration, value_name = "DUR", conflicts_with = "stop_after")]
    pub timeout: Option<Duration>,

    /// The signal --stop-after / --timeout sends.
    #[arg(long, default_value = "TERM", value_name = "SIG")]
    pub stop_signal: String,

    /// Leave CMD running after the report instead of killing it.
    #[arg(long)]
    pub keep: bool,

    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

/// Format of the main report (`--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    /// Folded stacks, one line per thread stack, weighted by blocked ms.
    Folded,
}

/// Whether stallprobe runs in a GitHub Actions job.
fn github_actions() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

/// The workspace annotations are relative to: `$GITHUB_WORKSPACE`, else the current
/// directory; as given and, when different, with symlinks resolved.
fn workspace_roots() -> Vec<PathBuf> {
    let ws = std::env::var_os("GITHUB_WORKSPACE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok());
    let Some(ws) = ws else {
        return Vec::new();
    };
    let ws = if ws.is_absolute() {
        ws
    } else {
        std::env::current_dir().map(|d| d.join(&ws)).unwrap_or(ws)
    };
    let mut roots = vec![ws.clone()];
    if let Ok(real) = std::fs::canonicalize(&ws)
        && real != ws
    {
        roots.push(real);
    }
    roots
}

/// The same file (after resolving symlinks, when both exist), or the same path.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>()
        && secs >= 0.0
    {
        return Ok(Duration::from_secs_f64(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 2s, 1m30s)"))
}

impl WatchArgs {
    pub fn session_options(&self) -> Result<SessionOptions, StallError> {
        if self.interval.is_zero() {
            return Err(StallError::Usage(
                "--interval must be greater than 0".into(),
            ));
        }
        self.check_outputs()?;
        Ok(SessionOptions {
            threshold: self.threshold,
            interval: self.interval,
            grace: self.grace,
            shutdown_sigmask: signals::parse_mask(&self.signals)?,
            hook: self.hook,
            follow_children: self.follow_children,
            bpf_log: self.bpf_log,
            max_stacks: self.max_stacks,
        })
    }

    pub fn style_for(&self, is_tty: bool) -> Style {
        Style {
            color: match self.color.as_str() {
                "always" => true,
                "never" => false,
                _ => is_tty && std::env::var_os("NO_COLOR").is_none(),
            },
        }
    }

    /// Live lines go to stderr.
    pub fn live_style(&self) -> Style {
        self.style_for(std::io::stderr().is_terminal())
    }

    /// The files this run will write, with the flag that names each.
    fn output_files(&self) -> Vec<(&'static str, &Path)> {
        [
            ("-o", &self.output),
            ("--junit", &self.junit),
            ("--summary", &self.summary),
            ("--pprof", &self.pprof),
            ("--flamegraph", &self.flamegraph),
        ]
        .into_iter()
        .filter_map(|(flag, p)| p.as_deref().map(|p| (flag, p)))
        .collect()
    }

    /// Before watching (which may take minutes): every output file's directory exists (created
    /// if need be) and the file is not a directory, so that a typo fails now, not at the end.
    pub fn check_outputs(&self) -> Result<(), StallError> {
        for (flag, path) in self.output_files() {
            if path.is_dir() {
                return Err(StallError::Usage(format!(
                    "{flag} {}: is a directory, expected a file name",
                    path.display()
                )));
            }
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StallError::Usage(format!(
                        "{flag} {}: cannot create the directory {}: {e}",
                        path.display(),
                        dir.display()
                    ))
                })?;
            }
        }
        Ok(())
    }

    /// Write the report where it was asked for, and the exports that were asked for. Every
    /// output is attempted; the first that could not be written is the error (exit code 2).
    pub fn emit(&self, report: &Report) -> Result<(), StallError> {
        use std::io::Write;
        let mut errors: Vec<String> = Vec::new();
        let write = |errors: &mut Vec<String>, what: &str, path: &Path, data: &[u8]| {
            if let Err(e) = std::fs::write(path, data) {
                errors.push(format!("cannot write {what} to {}: {e}", path.display()));
            }
        };

        // GitHub Actions annotations: workflow commands on stdout, before the report.
        if github_actions() {
            let lines = export::annotations::annotations(report, &workspace_roots());
            if !lines.is_empty() {
                let mut so = std::io::stdout().lock();
                for l in lines {
                    let _ = writeln!(so, "{l}");
                }
                let _ = so.flush();
            }
        }

        let to_file = self.output.is_some();
        let style = self.style_for(!to_file && std::io::stdout().is_terminal());
        let out = match self.format {
            ReportFormat::Json => render::json(report),
            ReportFormat::Text => render::text(report, style),
            ReportFormat::Folded => export::folded::folded(report),
        };
        match &self.output {
            Some(path) => write(&mut errors, "the report", path, out.as_bytes()),
            None => {
                let mut so = std::io::stdout().lock();
                let _ = so.write_all(out.as_bytes());
                let _ = so.flush();
            }
        }

        if let Some(path) = &self.junit {
            write(
                &mut errors,
                "the JUnit report",
                path,
                export::junit::junit(report).as_bytes(),
            );
        }
        let step_summary = std::env::var_os("GITHUB_STEP_SUMMARY")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        if self.summary.is_some() || step_summary.is_some() {
            let md = export::markdown::summary(report);
            if let Some(path) = &self.summary {
                // The same file as $GITHUB_STEP_SUMMARY: appended below, not overwritten.
                if !step_summary.as_deref().is_some_and(|s| same_file(s, path)) {
                    write(&mut errors, "the summary", path, md.as_bytes());
                }
            }
            if let Some(path) = &step_summary {
                let appended = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .and_then(|mut f| f.write_all(format!("{md}\n").as_bytes()));
                if let Err(e) = appended {
                    let msg = format!(
                        "cannot append the summary to $GITHUB_STEP_SUMMARY ({}): {e}",
                        path.display()
                    );
                    // Asked for explicitly (the same file as --summary): an error; else a warning.
                    if self.summary.as_deref().is_some_and(|s| same_file(s, path)) {
                        errors.push(msg);
                    } else {
                        eprintln!("stallprobe: warning: {msg}");
                    }
                }
            }
        }
        if let Some(path) = &self.pprof {
            write(
                &mut errors,
                "the pprof profile",
                path,
                &export::pprof::pprof_gz(report),
            );
        }
        if let Some(path) = &self.flamegraph {
            match export::flamegraph::flamegraph_svg(report) {
                Ok(svg) => write(&mut errors, "the flame graph", path, &svg),
                Err(e) => errors.push(format!("cannot render the flame graph: {e}")),
            }
        }

        match errors.len() {
            0 => Ok(()),
            1 => Err(StallError::Usage(errors.remove(0))),
            _ => {
                for e in &errors[1..] {
                    eprintln!("stallprobe: error: {e}");
                }
                Err(StallError::Usage(errors.remove(0)))
            }
        }
    }
}

/// Parse arguments, run, and return the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let bpf_log = match &cli.command {
        Some(Command::Run(r)) => r.watch.bpf_log,
        Some(Command::Watch(w)) => w.watch.bpf_log,
        None => cli.watch.bpf_log,
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(if bpf_log {
        "stallprobe_ebpf=debug,warn"
    } else {
        "warn"
    }))
    .format_timestamp(None)
    .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stallprobe: cannot start: {e}");
            return 2;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Some(Command::Run(args)) => crate::run::run(args).await,
            Some(Command::Watch(w)) => {
                let scope = match (&w.unit, &w.cgroup, w.pid) {
                    (Some(u), _, _) => crate::sidecar::Scope::unit(u),
                    (None, Some(c), _) => crate::sidecar::Scope::Cgroup(c.clone()),
                    (None, None, Some(p)) => crate::sidecar::Scope::Pid(p),
                    _ => {
                        return Err(StallError::Usage(
                            "one of --unit, --cgroup, --pid is required".into(),
                        ));
                    }
                };
                crate::sidecar::watch(w.watch, scope, w.metrics_addr).await
            }
            None => {
                let pid = cli
                    .pid
                    .ok_or_else(|| StallError::Usage("--pid is required".into()))?;
                crate::driver::watch_pid(cli.watch, pid).await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stallprobe: error: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn cli_shapes() {
        Cli::command_for_test();
        let c = Cli::try_parse_from(["stallprobe", "--pid", "1", "--threshold", "1s"]).unwrap();
        assert_eq!(c.pid, Some(1));
        assert_eq!(c.watch.threshold, Duration::from_secs(1));
        let c = Cli::try_parse_from([
            "stallprobe",
            "run",
            "--stop-after",
            "2s",
            "--",
            "sleep",
            "9",
        ])
        .unwrap();
        match c.command {
            Some(Command::Run(r)) => {
                assert_eq!(r.cmd, vec!["sleep", "9"]);
                assert_eq!(r.stop_after, Some(Duration::from_secs(2)));
            }
            _ => panic!(),
        }
        let c = Cli::try_parse_from([
            "stallprobe",
            "run",
            "--junit",
            "j.xml",
            "--summary",
            "s.md",
            "--pprof",
            "p.pb.gz",
            "--flamegraph",
            "f.svg",
            "--format",
            "folded",
            "--",
            "true",
        ])
        .unwrap();
        match c.command {
            Some(Command::Run(r)) => {
                assert_eq!(r.watch.format, ReportFormat::Folded);
                assert_eq!(r.watch.junit.as_deref(), Some(Path::new("j.xml")));
                assert_eq!(r.watch.summary.as_deref(), Some(Path::new("s.md")));
                assert_eq!(r.watch.pprof.as_deref(), Some(Path::new("p.pb.gz")));
                assert_eq!(r.watch.flamegraph.as_deref(), Some(Path::new("f.svg")));
            }
            _ => panic!(),
        }
        let c = Cli::try_parse_from(["stallprobe", "--pid", "1", "--junit", "j.xml"]).unwrap();
        assert_eq!(c.watch.junit.as_deref(), Some(Path::new("j.xml")));
        assert!(Cli::try_parse_from(["stallprobe"]).is_err());
        assert!(Cli::try_parse_from(["stallprobe", "run"]).is_err());
    }

    #[test]
    fn output_files_are_checked_before_watching() {
        let dir = std::env::temp_dir().join(format!("stallprobe-cli-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let nested = dir.join("a/b/junit.xml");
        let c = Cli::try_parse_from(
            ["stallprobe", "--pid", "1", "--junit"]
                .map(String::from)
                .into_iter()
                .chain([nested.display().to_string()]),
        )
        .unwrap();
        // The directory is created.
        c.watch.check_outputs().unwrap();
        assert!(dir.join("a/b").is_dir());
        // A directory is not a file name.
        let c = Cli::try_parse_from(
            ["stallprobe", "--pid", "1", "--pprof"]
                .map(String::from)
                .into_iter()
                .chain([dir.display().to_string()]),
        )
        .unwrap();
        let e = c.watch.check_outputs().unwrap_err().to_string();
        assert!(e.contains("--pprof") && e.contains("is a directory"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    impl Cli {
        fn command_for_test() {
            use clap::CommandFactory;
            Cli::command().debug_assert();
        }
    }
}
