//! `stallprobe run -- CMD`: start CMD with the probes attached before it execs, forward
//! Ctrl-C/SIGTERM to it, optionally stop it after a while, judge its shutdown, clean up.

use std::time::{Duration, Instant};

use clap::Args;
use nix::sys::{signal::Signal, wait::WaitStatus};

use super::{
    child::{Child, RunAs, spawn_paused},
    event_loop::{self, Mode, StopSignals, drop_privileges, one_shot_end},
    options::{CommonOptions, parse_duration},
};
use crate::{error::StallError, session::Session, signals, verdict};

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: CommonOptions,

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

    /// Under sudo, CMD runs as the user who ran sudo (so it leaves no root-owned files); with
    /// this, it runs as root (a service that needs it).
    #[arg(long)]
    pub as_root: bool,

    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

struct RunMode {
    child: Child,
    /// Send this signal at this moment (`--stop-after`, `--timeout`), once.
    stop: Option<(Instant, Duration, Signal)>,
    duration_end: Option<Instant>,
    /// The first Ctrl-C/SIGTERM was forwarded to the command.
    forwarded: bool,
    quiet: bool,
}

impl Mode for RunMode {
    fn deadline(&self) -> Option<Instant> {
        [self.stop.map(|s| s.0), self.duration_end]
            .into_iter()
            .flatten()
            .min()
    }

    async fn event(&mut self) {
        self.child.exited().await
    }

    /// The first Ctrl-C/SIGTERM goes to the command (a shutdown the probes see, with its grace
    /// period); a second one ends the watch.
    fn interrupted(&mut self, sig: Signal) -> bool {
        if self.forwarded || !self.child.alive() {
            return true;
        }
        self.forwarded = true;
        self.child.signal(sig);
        if !self.quiet {
            eprintln!(
                "stallprobe: forwarded {} to pid {} (again to stop watching now)",
                sig.as_str(),
                self.child.pid
            );
        }
        false
    }

    fn tick(
        &mut self,
        session: &mut Session,
        event_fired: bool,
    ) -> Result<Option<verdict::EndReason>, StallError> {
        if event_fired && let Some(st) = self.child.try_reap() {
            note_status(session, st);
        }
        if let Some((at, after, sig)) = self.stop
            && Instant::now() >= at
        {
            self.stop = None;
            if self.child.alive() {
                if !self.quiet {
                    eprintln!(
                        "stallprobe: sending {} to pid {} (--stop-after {})",
                        sig.as_str(),
                        self.child.pid,
                        humantime::format_duration(after)
                    );
                }
                self.child.signal(sig);
            }
        }
        Ok(one_shot_end(session, self.duration_end))
    }
}

fn note_status(session: &mut Session, st: WaitStatus) {
    match st {
        WaitStatus::Exited(pid, code) => {
            session.note_exit_status(pid.as_raw() as u32, Some(code), None)
        }
        WaitStatus::Signaled(pid, sig, _) => {
            session.note_exit_status(pid.as_raw() as u32, None, Some(sig as i32))
        }
        _ => {}
    }
}

pub async fn run(args: RunArgs) -> Result<i32, StallError> {
    let opts = &args.common;
    let session_opts = opts.session_options()?;
    let stop_sig = signals::parse(&args.stop_signal)?;
    let mut stops = StopSignals::install()?;
    let mut session = Session::attach(session_opts)?;
    let run_as = if args.as_root {
        None
    } else {
        RunAs::sudo_user()
    };
    // Forked before the privileges go: CMD starts with the ones it was given (or as the sudo
    // user), then stallprobe keeps what reading it needs — and CAP_KILL to stop it if it runs
    // as root while stallprobe does not.
    let paused = spawn_paused(&args.cmd, run_as.as_ref())?;
    if let Err(e) = drop_privileges(&[crate::preflight::cap::KILL]) {
        paused.abort();
        return Err(e);
    }
    if let Err(e) = session.add_process(paused.pid) {
        paused.abort();
        return Err(e);
    }
    let pid = paused.release()?;
    if !opts.quiet {
        eprintln!(
            "stallprobe: started pid {pid}: {}{}",
            args.cmd.join(" "),
            match (args.stop_after, args.timeout) {
                (Some(d), _) => format!(
                    " (will send {} after {})",
                    stop_sig.as_str(),
                    humantime::format_duration(d)
                ),
                (None, Some(d)) => format!(
                    " (timeout {}: then {}, grace, verdict)",
                    humantime::format_duration(d),
                    stop_sig.as_str()
                ),
                _ => String::new(),
            }
        );
    }
    let now = Instant::now();
    let mut mode = RunMode {
        child: Child::new(pid),
        stop: args
            .stop_after
            .or(args.timeout)
            .map(|d| (now + d, d, stop_sig)),
        duration_end: opts.duration.map(|d| now + d),
        forwarded: false,
        quiet: opts.quiet,
    };
    let end = match event_loop::run(&mut session, opts, &mut mode, &mut stops).await {
        Ok(e) => e,
        Err(e) => {
            mode.child.kill_and_reap();
            return Err(e);
        }
    };
    if end == verdict::EndReason::TargetExited && mode.child.status.is_none() {
        // The kernel reports the exit a moment before the child can be reaped: wait for it
        // (bounded), or a command that finished by itself would lose its exit code.
        if let Some(st) = mode.child.reap_within(Duration::from_secs(2)) {
            note_status(&mut session, st);
        }
    }
    let report = session.finish(end);
    // With --timeout, a command that finished by itself before it ends like itself.
    let own_exit = match (args.timeout, mode.child.status) {
        (Some(_), Some(WaitStatus::Exited(_, code))) if report.shutdown.is_none() => Some(code),
        (Some(_), Some(WaitStatus::Signaled(_, sig, _))) if report.shutdown.is_none() => {
            Some(128 + sig as i32)
        }
        _ => None,
    };
    if !args.keep {
        mode.child.kill_and_reap();
    }
    opts.output.write(&report)?;
    Ok(own_exit.unwrap_or_else(|| verdict::exit_code(report.verdict)))
}
