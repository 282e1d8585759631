//! The event loop shared by `stallprobe --pid` and `stallprobe run`: poll the session, print
//! live lines, stop at the right moment (duration, grace expiry, target exit, Ctrl-C), report.

use std::{
    os::fd::{FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use nix::{
    sys::{
        signal::{Signal, kill},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

use crate::{
    cli::WatchArgs,
    clock::mono_ns,
    error::StallError,
    procfs, render,
    session::{EndReason, Session},
    verdict,
};

/// A child process stallprobe started (run mode): signals are forwarded to it, it is reaped.
pub struct Child {
    pub pid: u32,
    pidfd: Option<AsyncFd<OwnedFd>>,
    pub status: Option<WaitStatus>,
}

impl Child {
    pub fn new(pid: u32) -> Child {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
        let pidfd = (fd >= 0)
            .then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
            .and_then(|fd| {
                // SAFETY: the pidfd is owned by the AsyncFd and closed only when it drops.
                unsafe { AsyncFd::register(fd) }.ok()
            });
        Child {
            pid,
            pidfd,
            status: None,
        }
    }

    pub fn alive(&self) -> bool {
        self.status.is_none()
    }

    /// Signal the child's process group (it leads one: see run.rs), like a terminal would:
    /// its own children, e.g. the test binaries under `cargo test`, get it too.
    pub fn signal(&self, sig: Signal) {
        if self.alive() && kill(Pid::from_raw(-(self.pid as i32)), sig).is_err() {
            let _ = kill(Pid::from_raw(self.pid as i32), sig);
        }
    }

    /// Resolves when the child has exited (not reaped yet).
    async fn exited(&self) {
        match &self.pidfd {
            Some(fd) if self.alive() => {
                let _ = fd.readable().await;
            }
            _ => std::future::pending::<()>().await,
        }
    }

    /// Reap the child if it has exited.
    pub fn try_reap(&mut self) -> Option<WaitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        match waitpid(Pid::from_raw(self.pid as i32), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => None,
            Ok(st @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                self.status = Some(st);
                self.status
            }
            Ok(_) => None,
            Err(_) => {
                // Not our child any more (or already reaped): treat as gone.
                self.status = Some(WaitStatus::Exited(Pid::from_raw(self.pid as i32), -1));
                self.status
            }
        }
    }

    /// Kill and reap (used when the report is done and `--keep` was not given).
    pub fn kill_and_reap(&mut self) {
        if self.try_reap().is_some() {
            return;
        }
        self.signal(Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(self.pid as i32), None);
        self.status = Some(WaitStatus::Signaled(
            Pid::from_raw(self.pid as i32),
            Signal::SIGKILL,
            false,
        ));
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

/// SIGINT and SIGTERM to stallprobe itself, caught from the start (before attaching, so a
/// signal right after "watching" is never lost nor fatal).
pub struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn install() -> Result<StopSignals, StallError> {
        Ok(StopSignals {
            int: tokio::signal::unix::signal(SignalKind::interrupt())
                .map_err(|e| StallError::Other(e.into()))?,
            term: tokio::signal::unix::signal(SignalKind::terminate())
                .map_err(|e| StallError::Other(e.into()))?,
        })
    }

    /// The next one to arrive.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.int.recv() => Signal::SIGINT,
            _ = self.term.recv() => Signal::SIGTERM,
        }
    }
}

/// What run mode asks the loop to do with its child.
pub struct ChildPlan {
    pub child: Child,
    /// Send this signal after this long.
    pub stop: Option<(Duration, Signal)>,
}

/// Watch until the session should end; returns why it ended.
pub async fn drive(
    session: &mut Session,
    args: &WatchArgs,
    mut plan: Option<&mut ChildPlan>,
    stops: &mut StopSignals,
) -> Result<EndReason, StallError> {
    let style = args.live_style();
    let started = Instant::now();
    let mut forwarded = false;
    let mut stop_sent = false;
    let interval = session.options().interval;
    let duration_end = args.duration.map(|d| started + d);

    // A first look right away: threads blocked since before we attached show up at once.
    let first = session.poll(true);
    if !args.quiet {
        for ev in &first {
            eprintln!(
                "{}",
                render::live_line(ev, started.elapsed().as_secs_f64(), style)
            );
        }
    }
    let end = loop {
        let mut wake = interval;
        if let Some(p) = plan.as_ref()
            && let Some((after, _)) = p.stop
            && !stop_sent
        {
            wake = wake.min((started + after).saturating_duration_since(Instant::now()));
        }
        if let Some(g) = session.grace_deadline_ns() {
            wake = wake.min(Duration::from_nanos(g.saturating_sub(mono_ns())));
        }
        if let Some(d) = duration_end {
            wake = wake.min(d.saturating_duration_since(Instant::now()));
        }
        let mut interrupt: Option<Signal> = None;
        let mut child_exited = false;
        {
            let child_exit = async {
                match plan.as_ref() {
                    Some(p) => p.child.exited().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = session.wait(wake.max(Duration::from_millis(1))) => {}
                sig = stops.recv() => interrupt = Some(sig),
                _ = child_exit => child_exited = true,
            }
        }
        if let Some(sig) = interrupt {
            match plan.as_mut() {
                // Run mode: the first Ctrl-C/SIGTERM is forwarded to the command (a shutdown
                // the probes see, with its grace period); a second one ends the watch.
                Some(p) if !forwarded && p.child.alive() => {
                    forwarded = true;
                    p.child.signal(sig);
                    if !args.quiet {
                        eprintln!(
                            "stallprobe: forwarded {} to pid {} (again to stop watching now)",
                            sig.as_str(),
                            p.child.pid
                        );
                    }
                }
                _ => break EndReason::Interrupted,
            }
        }
        if child_exited
            && let Some(p) = plan.as_mut()
            && let Some(st) = p.child.try_reap()
        {
            note_status(session, st);
        }
        let live = session.poll(false);
        if !args.quiet {
            let secs = started.elapsed().as_secs_f64();
            for ev in &live {
                eprintln!("{}", render::live_line(ev, secs, style));
            }
        }
        if let Some(p) = plan.as_mut()
            && let Some((after, sig)) = p.stop
            && !stop_sent
            && started.elapsed() >= after
        {
            stop_sent = true;
            if p.child.alive() {
                if !args.quiet {
                    eprintln!(
                        "stallprobe: sending {} to pid {} (--stop-after {})",
                        sig.as_str(),
                        p.child.pid,
                        humantime::format_duration(after)
                    );
                }
                p.child.signal(sig);
            }
        }
        if session.all_exited() {
            break EndReason::TargetExited;
        }
        if let Some(g) = session.grace_deadline_ns() {
            if mono_ns() >= g {
                break EndReason::GraceExpired;
            }
            continue; // a shutdown is in progress: the grace period decides, not --duration
        }
        if let Some(d) = duration_end
            && Instant::now() >= d
        {
            break EndReason::Duration;
        }
    };
    Ok(end)
}

/// Once attached, keep only what reading the target needs (see preflight::KEPT_AFTER_ATTACH).
pub fn drop_privileges_or_warn(quiet: bool) {
    if let Err(e) = crate::preflight::drop_privileges()
        && !quiet
    {
        eprintln!("stallprobe: warning: could not drop privileges after attaching: {e}");
    }
}

/// `stallprobe --pid N`.
pub async fn watch_pid(args: WatchArgs, pid: u32) -> Result<i32, StallError> {
    let opts = args.session_options()?;
    if !procfs::process_exists(pid) {
        return Err(StallError::NoSuchProcess { pid, exited: false });
    }
    let mut stops = StopSignals::install()?;
    let mut session = Session::attach(opts)?;
    session.add_process(pid).map_err(|e| match e {
        StallError::NoSuchProcess { pid, .. } => StallError::NoSuchProcess { pid, exited: true },
        other => other,
    })?;
    drop_privileges_or_warn(args.quiet);
    if !args.quiet {
        let comm = procfs::read_comm(pid, pid).unwrap_or_default();
        eprintln!(
            "stallprobe: watching pid {pid} ({comm}), threshold {}; {}",
            humantime::format_duration(args.threshold),
            match args.duration {
                Some(d) => format!("for {}", humantime::format_duration(d)),
                None => "Ctrl-C to stop and report".into(),
            }
        );
    }
    let end = drive(&mut session, &args, None, &mut stops).await?;
    let report = session.finish(end);
    args.emit(&report)?;
    Ok(verdict::exit_code(report.verdict))
}
