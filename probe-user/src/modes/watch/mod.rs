//! `stallprobe watch`: the long-running sidecar next to a service. It watches every process of
//! a systemd unit (its cgroup), follows restarts, and each time the service is being stopped
//! (a shutdown signal reaches it) applies the grace period and logs the verdict to the journal
//! with structured fields, then goes on watching. Readiness and watchdog keep-alives go to the
//! service manager (sd_notify); numbers go to a Prometheus endpoint.

pub mod journal;
pub mod metrics;
pub mod notify;
pub mod scope;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Instant,
};

use clap::Args;

pub use scope::Scope;

use super::{
    event_loop::{self, Mode, StopSignals, drop_privileges},
    options::CommonOptions,
};
use crate::{
    clock::mono_ns, error::StallError, report::Verdict, session::Session, verdict::EndReason,
};

#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("scope").required(true).args(["unit", "cgroup", "pid"])))]
pub struct WatchArgs {
    #[command(flatten)]
    pub common: CommonOptions,

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

impl WatchArgs {
    fn scope(&self) -> Result<Scope, StallError> {
        match (&self.unit, &self.cgroup, self.pid) {
            (Some(u), _, _) => Ok(Scope::unit(u)),
            (None, Some(c), _) => Ok(Scope::Cgroup(c.clone())),
            (None, None, Some(p)) => Ok(Scope::Pid(p)),
            _ => Err(StallError::Usage(
                "one of --unit, --cgroup, --pid is required".into(),
            )),
        }
    }
}

struct WatchMode<'a> {
    opts: &'a CommonOptions,
    scope: Scope,
    label: String,
    journal: Option<journal::Journal>,
    notifier: Option<notify::Notifier>,
    metrics: Option<Arc<Mutex<String>>>,
    last_watchdog: Instant,
    flagged_last: u64,
    flagged_goroutines_last: u64,
    verdicts: BTreeMap<&'static str, u64>,
}

impl WatchMode<'_> {
    fn status(&self, s: &Session) -> String {
        format!(
            "watching {}: {} process(es)",
            self.label,
            s.tracker().live_pids().len()
        )
    }

    /// One shutdown episode is over: verdict to the journal (and stdout), then forget it.
    fn episode(&mut self, session: &mut Session, end: EndReason) {
        let report = session.report(end);
        self.flagged_last = report.flagged().count() as u64;
        self.flagged_goroutines_last = report.flagged_groups().map(|g| g.count).sum();
        let v = verdict_name(report.verdict);
        *self.verdicts.entry(v).or_default() += 1;
        if let Some(j) = &self.journal {
            for e in journal::journal_entries(&report, self.scope.unit_name()) {
                if let Err(err) = j.send(&e) {
                    eprintln!("stallprobe: could not write to the journal: {err}");
                    break;
                }
            }
        }
        // The report on stdout (or -o) unless --quiet with a journal to log to.
        if !self.opts.quiet || self.journal.is_none() || self.opts.output.output.is_some() {
            let _ = self.opts.output.write(&report);
        }
        session.reset_episode();
        if let Some(n) = &self.notifier {
            n.status(&format!("{}; last shutdown: {v}", self.status(session)));
        }
    }
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Clean => "clean",
        Verdict::Stalled => "stalled",
        Verdict::Observed => "observed",
    }
}

impl Mode for WatchMode<'_> {
    /// A sidecar is in no hurry: its first look comes after one interval, with the first
    /// histograms of what it saw in it.
    fn look_at_start(&self) -> bool {
        false
    }

    fn deadline(&self) -> Option<Instant> {
        let every = self.notifier.as_ref()?.watchdog_every?;
        Some(self.last_watchdog + every)
    }

    fn tick(
        &mut self,
        session: &mut Session,
        _event_fired: bool,
    ) -> Result<Option<EndReason>, StallError> {
        // Follow the scope: a restarted service has new processes.
        for pid in self.scope.pids() {
            if !session.tracker().watches(pid)
                && session.add_process(pid).is_ok()
                && !self.opts.quiet
            {
                eprintln!("stallprobe: following pid {pid} ({})", self.label);
            }
        }
        // A shutdown episode ends when its processes are gone or the grace period is over.
        let t = session.tracker();
        let end = if t.shutdown_signal().is_none() {
            None
        } else if t.episode_exited() {
            Some(EndReason::TargetExited)
        } else if t.grace_deadline_ns().is_some_and(|g| mono_ns() >= g) {
            Some(EndReason::GraceExpired)
        } else {
            None
        };
        if let Some(end) = end {
            self.episode(session, end);
        }
        let t = session.tracker();
        if matches!(self.scope, Scope::Pid(_)) && t.all_exited() && t.shutdown_signal().is_none() {
            if !self.opts.quiet {
                eprintln!("stallprobe: {} exited; stopping", self.label);
            }
            return Ok(Some(EndReason::TargetExited));
        }
        if let Some(text) = &self.metrics {
            let census = session.census();
            let snap = metrics::Snapshot {
                processes: session.tracker().live_pids().len() as u64,
                tracked: session.tracked_processes(),
                threads: census.threads,
                blocked: census.blocked,
                calls: session.tracker().total_stats(),
                dropped: session.counters(),
                flagged: self.flagged_last,
                flagged_goroutines: self.flagged_goroutines_last,
                verdicts: self.verdicts.clone(),
            };
            if let Ok(mut t) = text.lock() {
                *t = metrics::render(&snap, self.scope.unit_name());
            }
        }
        if let Some(n) = &self.notifier
            && let Some(every) = n.watchdog_every
            && self.last_watchdog.elapsed() >= every
        {
            n.watchdog();
            self.last_watchdog = Instant::now();
        }
        Ok(None)
    }
}

/// `stallprobe watch`: runs until stopped (exit 0), or until a `--pid` target exits.
pub async fn run(args: WatchArgs) -> Result<i32, StallError> {
    let opts = &args.common;
    let session_opts = opts.session_options()?;
    let scope = args.scope()?;
    if let Scope::Pid(pid) = scope
        && !crate::procfs::process_exists(pid)
    {
        return Err(StallError::NoSuchProcess { pid, exited: false });
    }
    if let Scope::Cgroup(p) = &scope
        && !p.join("cgroup.procs").exists()
    {
        return Err(StallError::Usage(format!(
            "{} is not a cgroup directory (no cgroup.procs)",
            p.display()
        )));
    }
    let mut stops = StopSignals::install()?;
    // A sidecar holds a pidfd per watched process and a socket per metrics client:
    // the soft descriptor limit (often 1024) is raised to the hard one.
    raise_open_files_limit();
    let mut session = Session::attach(session_opts)?;
    // Nothing of the targets is read before the privileges are dropped.
    drop_privileges(&[])?;
    for pid in scope.pids() {
        let _ = session.add_process(pid);
    }

    let journal = journal::Journal::connect();
    if journal.is_none() && !opts.quiet {
        eprintln!(
            "stallprobe: no journal at {}: verdicts go to standard output only",
            journal::socket_path().display()
        );
    }
    let metrics = match &args.metrics_addr {
        Some(addr) => {
            let text = Arc::new(Mutex::new(String::new()));
            let bound = metrics::serve(addr, text.clone()).await.map_err(|e| {
                StallError::Usage(format!("cannot listen on {addr} for --metrics-addr: {e}"))
            })?;
            if !opts.quiet {
                eprintln!("stallprobe: metrics on http://{bound}/metrics");
            }
            Some(text)
        }
        None => None,
    };
    let mut mode = WatchMode {
        opts,
        label: scope.label(),
        scope,
        journal,
        notifier: notify::Notifier::from_env(),
        metrics,
        last_watchdog: Instant::now(),
        flagged_last: 0,
        flagged_goroutines_last: 0,
        verdicts: BTreeMap::new(),
    };
    if let Some(n) = &mode.notifier {
        n.ready(&mode.status(&session));
    }
    if !opts.quiet {
        eprintln!(
            "stallprobe: {}; grace {} after a shutdown signal; Ctrl-C to stop",
            mode.status(&session),
            humantime::format_duration(opts.grace)
        );
    }
    event_loop::run(&mut session, opts, &mut mode, &mut stops).await?;
    if let Some(n) = &mode.notifier {
        n.send("STOPPING=1");
    }
    Ok(0)
}

/// Soft RLIMIT_NOFILE up to the hard limit; a failure only leaves the default.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
