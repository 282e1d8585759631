//! The one loop every mode runs: wait for kernel events or the next look, poll the session,
//! print live lines, handle Ctrl-C/SIGTERM to stallprobe, and let the mode decide the rest.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use tokio::signal::unix::SignalKind;

use super::options::CommonOptions;
use crate::{
    clock::mono_ns, error::StallError, export::live::live_line, session::Session,
    verdict::EndReason,
};

/// What a mode adds to the loop.
pub trait Mode {
    /// The next moment the mode needs a tick of its own (a stop signal to send, a watchdog).
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// Look at every thread right away, before the first interval (threads blocked since
    /// before attach show up at once).
    fn look_at_start(&self) -> bool {
        true
    }

    /// Resolves when the mode has an event of its own (run: the child exited). Must be
    /// cancel-safe; never resolves by default.
    fn event(&mut self) -> impl Future<Output = ()> {
        std::future::pending()
    }

    /// Ctrl-C or SIGTERM reached stallprobe: `true` ends the watch now.
    fn interrupted(&mut self, _sig: Signal) -> bool {
        true
    }

    /// After each poll of the session: the mode's own work; `Some` ends the watch.
    /// `event_fired`: [`Mode::event`] resolved in this round.
    fn tick(
        &mut self,
        session: &mut Session,
        event_fired: bool,
    ) -> Result<Option<EndReason>, StallError>;
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

/// How a one-shot watch (`--pid`, `run`) ends: every target exited, the grace period after a
/// shutdown signal ran out, or `--duration` passed (not while a grace period runs).
pub fn one_shot_end(session: &Session, duration_end: Option<Instant>) -> Option<EndReason> {
    let t = session.tracker();
    if t.all_exited() {
        return Some(EndReason::TargetExited);
    }
    if let Some(g) = t.grace_deadline_ns() {
        return (mono_ns() >= g).then_some(EndReason::GraceExpired);
    }
    duration_end
        .filter(|d| Instant::now() >= *d)
        .map(|_| EndReason::Duration)
}

/// Watch until the mode (or an interrupt) ends it; returns why it ended.
pub async fn run<M: Mode>(
    session: &mut Session,
    opts: &CommonOptions,
    mode: &mut M,
    stops: &mut StopSignals,
) -> Result<EndReason, StallError> {
    let style = opts.output.live_style();
    let started = Instant::now();
    let interval = session.options().interval;
    let print = |live: &[crate::tracker::LiveEvent]| {
        if !opts.quiet {
            let secs = started.elapsed().as_secs_f64();
            for ev in live.iter().filter(|e| !e.is_runtime_idle()) {
                eprintln!("{}", live_line(ev, secs, style));
            }
        }
    };

    if mode.look_at_start() {
        print(&session.poll(true));
    }
    loop {
        let now = Instant::now();
        let mut wake = interval;
        if let Some(d) = mode.deadline() {
            wake = wake.min(d.saturating_duration_since(now));
        }
        if let Some(g) = session.tracker().grace_deadline_ns() {
            wake = wake.min(Duration::from_nanos(g.saturating_sub(mono_ns())));
        }
        let mut interrupt = None;
        let mut event_fired = false;
        tokio::select! {
            _ = session.wait(wake.max(Duration::from_millis(1))) => {}
            sig = stops.recv() => interrupt = Some(sig),
            _ = mode.event() => event_fired = true,
        }
        if let Some(sig) = interrupt
            && mode.interrupted(sig)
        {
            return Ok(EndReason::Interrupted);
        }
        print(&session.poll(false));
        if let Some(end) = mode.tick(session, event_fired)? {
            return Ok(end);
        }
    }
}

/// Once attached, keep only what reading the target needs (`crate::privileges`), before any
/// file the target chose is read. A failed drop stops stallprobe.
pub fn drop_privileges(also_keep: &[u32]) -> Result<(), StallError> {
    crate::privileges::drop_privileges(&crate::privileges::Drop::for_this_process(also_keep))
        .map_err(|e| StallError::Privileges {
            detail: e,
            hint: "stallprobe drops its privileges once attached; run it as root or with the \
                   capabilities it needs, including CAP_SETPCAP (and CAP_SETUID/CAP_SETGID under sudo)"
                .into(),
        })
}
