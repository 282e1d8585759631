//! The command line: parse, pick the mode (`--pid`, `run`, `watch`), map errors to exit codes.
//! The modes and their options live in `crate::modes`.

use std::{ffi::OsString, path::PathBuf};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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

/// `stallprobe --version`: the version, the commit it was built from, what it was built for,
/// and the hooks the embedded BPF object carries (read from the object itself).
pub fn long_version() -> String {
    let mut s = format!(
        "{} (commit {})\nbuilt for {}{}\nBPF hooks in the embedded object:",
        env!("CARGO_PKG_VERSION"),
        env!("STALLPROBE_GIT_COMMIT"),
        env!("STALLPROBE_TARGET"),
        if cfg!(target_env = "musl") {
            ", statically linked"
        } else {
            ""
        }
    );
    let groups = crate::bpf::embedded_hooks();
    if groups.is_empty() {
        s.push_str(" none (built with AYA_BUILD_SKIP=1: cannot watch anything)");
    }
    let mut shown: Vec<(String, Vec<String>)> = Vec::new();
    for mut g in groups {
        g.targets.sort();
        let targets = compress_tracepoints(&g.targets);
        // fentry and fexit attach to the same functions: one line.
        match shown.iter_mut().find(|(_, t)| *t == targets) {
            Some((kinds, _)) => kinds.push_str(&format!(", {}", g.kind)),
            None => shown.push((g.kind, targets)),
        }
    }
    for (kinds, targets) in shown {
        s.push_str(&format!("\n  {kinds}:"));
        let mut col = kinds.len() + 3;
        for t in targets {
            if col + t.len() + 1 > 100 {
                s.push_str("\n   ");
                col = 3;
            }
            s.push(' ');
            s.push_str(&t);
            col += t.len() + 1;
        }
    }
    s
}

/// `syscalls/sys_enter_futex` and `syscalls/sys_exit_futex` as `syscalls/sys_{enter,exit}_futex`.
fn compress_tracepoints(targets: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for t in targets {
        if let Some(name) = t.strip_prefix("syscalls/sys_exit_")
            && targets.contains(&format!("syscalls/sys_enter_{name}"))
        {
            continue;
        }
        match t.strip_prefix("syscalls/sys_enter_") {
            Some(name) if targets.contains(&format!("syscalls/sys_exit_{name}")) => {
                out.push(format!("syscalls/sys_{{enter,exit}}_{name}"))
            }
            _ => out.push(t.clone()),
        }
    }
    out
}

/// `--color never|always` seen before the command: clap's own help and errors follow it too
/// (`NO_COLOR` it follows by itself).
fn clap_color(args: &[OsString]) -> clap::ColorChoice {
    let mut it = args.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(a) = it.next() {
        let v = if a == "--" {
            break;
        } else if a == "--color" {
            it.next().map(|v| v.into_owned())
        } else {
            a.strip_prefix("--color=").map(str::to_string)
        };
        match v.as_deref() {
            Some("never") => return clap::ColorChoice::Never,
            Some("always") => return clap::ColorChoice::Always,
            _ => {}
        }
    }
    clap::ColorChoice::Auto
}

/// The clap command with what is only known at run time (the long version, the colour).
pub fn command(args: &[OsString]) -> clap::Command {
    let version: &'static str = Box::leak(long_version().into_boxed_str());
    Cli::command().long_version(version).color(clap_color(args))
}

/// Parse `args` (program name first).
pub fn parse(args: Vec<OsString>) -> Result<Cli, clap::Error> {
    let mut cmd = command(&args);
    let m = cmd.try_get_matches_from_mut(args)?;
    Cli::from_arg_matches(&m).map_err(|e| e.format(&mut cmd))
}

/// The man pages, one per command (`stallprobe.1`, `stallprobe-run.1`, `stallprobe-watch.1`),
/// written into `dir`; the exit codes and examples under EXIT STATUS AND EXAMPLES.
fn manpages(dir: &std::path::Path) -> Result<Vec<PathBuf>, StallError> {
    let io = |e: std::io::Error| {
        StallError::Usage(format!(
            "cannot write the man pages into {}: {e}",
            dir.display()
        ))
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut cmd = command(&[]).disable_help_subcommand(true);
    cmd.build();
    let mut all = vec![cmd.clone()];
    all.extend(cmd.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
    let mut written = Vec::new();
    for c in all {
        let man = clap_mangen::Man::new(c)
            .source(format!("stallprobe {}", env!("CARGO_PKG_VERSION")))
            .manual("stallprobe manual");
        let mut roff = Vec::new();
        man.render(&mut roff).map_err(io)?;
        let roff =
            String::from_utf8_lossy(&roff).replace(".SH EXTRA", ".SH \"EXIT STATUS AND EXAMPLES\"");
        let path = dir.join(man.get_filename());
        crate::export::files::write_atomically(&path, roff.as_bytes()).map_err(io)?;
        written.push(path);
    }
    Ok(written)
}

/// `stallprobe completions SHELL` (a completion script on stdout: bash, zsh, fish, elvish,
/// powershell) and `stallprobe manpages DIR`: for packagers (`cargo xtask dist` runs them),
/// so not in `--help` nor in the completions themselves.
fn packaging_commands(args: &[OsString]) -> Option<i32> {
    let word = |i: usize| args.get(i).map(|a| a.to_string_lossy().into_owned());
    let usage = |msg: String| {
        eprintln!("stallprobe: error: {msg}");
        Some(crate::error::EXIT_ERROR)
    };
    match word(1).as_deref() {
        Some("completions") => {
            let shells = "bash, zsh, fish, elvish, powershell";
            let Some(name) = word(2) else {
                return usage(format!("usage: stallprobe completions SHELL ({shells})"));
            };
            let Ok(shell) = <clap_complete::Shell as clap::ValueEnum>::from_str(&name, true) else {
                return usage(format!("unknown shell {name:?}: one of {shells}"));
            };
            clap_complete::generate(
                shell,
                &mut command(&[]),
                "stallprobe",
                &mut std::io::stdout(),
            );
            Some(0)
        }
        Some("manpages") => {
            let Some(dir) = word(2) else {
                return usage("usage: stallprobe manpages DIR".into());
            };
            match manpages(std::path::Path::new(&dir)) {
                Ok(paths) => {
                    for p in paths {
                        println!("{}", p.display());
                    }
                    Some(0)
                }
                Err(e) => usage(e.to_string()),
            }
        }
        _ => None,
    }
}

/// Parse arguments, run, and return the process exit code.
pub fn main() -> i32 {
    let args: Vec<OsString> = std::env::args_os().collect();
    crate::error::set_invocation(
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
    );
    if let Some(code) = packaging_commands(&args) {
        return code;
    }
    let cli = match parse(args) {
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

    #[test]
    fn version_names_the_commit_and_the_hooks_of_the_object() {
        let v = long_version();
        assert!(v.starts_with(env!("CARGO_PKG_VERSION")), "{v}");
        assert!(v.contains("(commit "), "{v}");
        if !crate::bpf::embedded_hooks().is_empty() {
            assert!(v.contains("fentry, fexit: __x64_sys_epoll_pwait"), "{v}");
            assert!(v.contains("__x64_sys_futex_waitv"), "{v}");
            assert!(v.contains("syscalls/sys_{enter,exit}_futex"), "{v}");
            assert!(v.contains("iter: task"), "{v}");
        }
        let args: Vec<OsString> = ["stallprobe", "--version"].map(Into::into).to_vec();
        let e = parse(args).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
        assert!(
            e.to_string().contains("BPF hooks in the embedded object"),
            "{e}"
        );
    }

    #[test]
    fn color_flag_reaches_clap() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            clap_color(&a(&["s", "--color", "never", "--pid", "1"])),
            clap::ColorChoice::Never
        );
        assert_eq!(
            clap_color(&a(&["s", "run", "--color=always", "--", "x"])),
            clap::ColorChoice::Always
        );
        assert_eq!(
            clap_color(&a(&["s", "run", "--", "x", "--color", "never"])),
            clap::ColorChoice::Auto
        );
    }

    #[test]
    fn man_pages_and_completions() {
        let dir = std::env::temp_dir().join(format!("stallprobe-man-{}", std::process::id()));
        let paths = manpages(&dir).unwrap();
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["stallprobe.1", "stallprobe-run.1", "stallprobe-watch.1"]
        );
        let root = std::fs::read_to_string(&paths[0]).unwrap();
        assert!(root.contains(".SH \"EXIT STATUS AND EXAMPLES\""), "{root}");
        assert!(root.contains("threshold"), "{root}");
        let run = std::fs::read_to_string(&paths[1]).unwrap();
        assert!(run.contains("stop\\-after"), "{run}");
        let _ = std::fs::remove_dir_all(&dir);
        let mut out = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut command(&[]),
            "stallprobe",
            &mut out,
        );
        let bash = String::from_utf8(out).unwrap();
        assert!(
            bash.contains("--stop-after") && bash.contains("--html"),
            "{bash}"
        );
        // The packaging commands are not offered.
        assert!(!bash.contains("manpages"), "{bash}");
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            packaging_commands(&a(&["s", "completions", "tcsh"])),
            Some(2)
        );
        assert_eq!(packaging_commands(&a(&["s", "manpages"])), Some(2));
        assert_eq!(packaging_commands(&a(&["s", "--pid", "1"])), None);
    }

    impl Cli {
        fn command_for_test() {
            use clap::CommandFactory;
            Cli::command().debug_assert();
        }
    }
}
