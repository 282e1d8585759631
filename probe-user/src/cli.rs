//! The command line: `stallprobe --pid N` and `stallprobe run -- CMD`.

use std::{io::IsTerminal, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    bpf::Hook,
    error::StallError,
    render::{self, Format, Style},
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
     (CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE), a kernel without BTF or fentry

Examples:
  sudo stallprobe --pid 4242                       watch until Ctrl-C, then report
  sudo stallprobe --pid 4242 --duration 10s --format json -o report.json
  sudo stallprobe run --stop-after 10s -- ./my-service --flag
                                                   start, send SIGTERM after 10s, verdict";

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

    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,

    /// Write the report to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Also watch child processes the target forks (default: only the target itself; its
    /// children are reported as they start).
    #[arg(long)]
    pub follow_children: bool,

    /// Where the blocking-call probes hook in: auto picks fentry (cheapest) when the kernel
    /// allows it, else raw tracepoints; see docs/design.md.
    #[arg(long, value_enum, default_value = "auto")]
    pub hook: Hook,

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

    /// The signal --stop-after sends.
    #[arg(long, default_value = "TERM", value_name = "SIG")]
    pub stop_signal: String,

    /// Leave CMD running after the report instead of killing it.
    #[arg(long)]
    pub keep: bool,

    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<String>,
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

    /// Write the report where it was asked for.
    pub fn emit(&self, report: &Report) -> Result<(), StallError> {
        let to_file = self.output.is_some();
        let style = self.style_for(!to_file && std::io::stdout().is_terminal());
        let out = match self.format {
            Format::Json => render::json(report),
            Format::Text => render::text(report, style),
        };
        match &self.output {
            Some(path) => std::fs::write(path, out).map_err(|e| {
                StallError::Usage(format!(
                    "cannot write the report to {}: {e}",
                    path.display()
                ))
            }),
            None => {
                use std::io::Write;
                let mut so = std::io::stdout().lock();
                let _ = so.write_all(out.as_bytes());
                let _ = so.flush();
                Ok(())
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
        assert!(Cli::try_parse_from(["stallprobe"]).is_err());
        assert!(Cli::try_parse_from(["stallprobe", "run"]).is_err());
    }

    impl Cli {
        fn command_for_test() {
            use clap::CommandFactory;
            Cli::command().debug_assert();
        }
    }
}
