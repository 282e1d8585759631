//! The command line: parse, pick the mode (`--pid`, `run`, `watch`), map errors to exit codes.
//! The modes and their options live in `crate::modes`.

use clap::{Parser, Subcommand};

use crate::{
    error::StallError,
    modes::{self, options::CommonOptions, run::RunArgs, watch::WatchArgs},
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
    pub common: CommonOptions,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start CMD with the probes already attached, optionally stop it, and judge its shutdown.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Run next to a service until stopped: judge every shutdown, log verdicts to the journal.
    #[command(after_help = WATCH_HELP)]
    Watch(WatchArgs),
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
    let common = match &cli.command {
        Some(Command::Run(r)) => &r.common,
        Some(Command::Watch(w)) => &w.common,
        None => &cli.common,
    };
    let bpf_log = common.bpf_log;
    // The JVM attach broker is forked now, while stallprobe is one thread with all its
    // privileges (see attach_broker); without CAP_SETUID there is none, and a JVM that would
    // be attached to gets a note saying why.
    if !common.no_runtime_attach {
        let _ = crate::attach_broker::start();
    }
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
            Some(Command::Run(args)) => modes::run::run(args).await,
            Some(Command::Watch(args)) => modes::watch::run(args).await,
            None => match cli.pid {
                Some(pid) => modes::pid::run(cli.common, pid).await,
                None => Err(StallError::Usage("--pid is required".into())),
            },
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
    use std::{path::Path, time::Duration};

    use super::*;
    use crate::export::outputs::ReportFormat;

    #[test]
    fn cli_shapes() {
        Cli::command_for_test();
        let c = Cli::try_parse_from(["stallprobe", "--pid", "1", "--threshold", "1s"]).unwrap();
        assert_eq!(c.pid, Some(1));
        assert_eq!(c.common.threshold, Duration::from_secs(1));
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
                assert_eq!(r.common.output.format, ReportFormat::Folded);
                assert_eq!(r.common.output.junit.as_deref(), Some(Path::new("j.xml")));
                assert_eq!(r.common.output.summary.as_deref(), Some(Path::new("s.md")));
                assert_eq!(r.common.output.pprof.as_deref(), Some(Path::new("p.pb.gz")));
                assert_eq!(
                    r.common.output.flamegraph.as_deref(),
                    Some(Path::new("f.svg"))
                );
            }
            _ => panic!(),
        }
        let c = Cli::try_parse_from(["stallprobe", "--pid", "1", "--junit", "j.xml"]).unwrap();
        assert_eq!(c.common.output.junit.as_deref(), Some(Path::new("j.xml")));
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
        c.common.output.check_outputs().unwrap();
        assert!(dir.join("a/b").is_dir());
        // A directory is not a file name.
        let c = Cli::try_parse_from(
            ["stallprobe", "--pid", "1", "--pprof"]
                .map(String::from)
                .into_iter()
                .chain([dir.display().to_string()]),
        )
        .unwrap();
        let e = c.common.output.check_outputs().unwrap_err().to_string();
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
