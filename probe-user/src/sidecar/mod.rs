//! `stallprobe watch`: the long-running sidecar next to a service. It watches every process of
//! a systemd unit (its cgroup), follows restarts, and each time the service is being stopped
//! (a shutdown signal reaches it) applies the grace period and logs the verdict to the journal
//! with structured fields, then goes on watching. Readiness and watchdog keep-alives go to the
//! service manager (sd_notify); numbers go to a Prometheus endpoint.

pub mod journal;
pub mod metrics;
pub mod notify;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::{
    cli::WatchArgs,
    clock::mono_ns,
    error::StallError,
    render,
    report::{Report, Verdict},
    session::{EndReason, Session},
};

/// What the sidecar watches.
#[derive(Clone, Debug)]
pub enum Scope {
    /// A systemd unit: the processes of its cgroup, whichever they are over time.
    Unit { name: String, cgroups: Vec<PathBuf> },
    /// A cgroup directory (v2, or a v1 hierarchy): all its processes, and its sub-cgroups'.
    Cgroup(PathBuf),
    /// One process; the sidecar ends when it exits.
    Pid(u32),
}

const CGROUP_ROOTS: [&str; 3] = [
    "/sys/fs/cgroup",
    "/sys/fs/cgroup/unified",
    "/sys/fs/cgroup/systemd",
];

impl Scope {
    /// A unit's cgroup: asked from systemd when it runs, else the usual place of a system
    /// service (`/system.slice/NAME`) under each cgroup hierarchy.
    pub fn unit(name: &str) -> Scope {
        let name = if name.contains('.') {
            name.to_string()
        } else {
            format!("{name}.service")
        };
        let from_systemd = std::process::Command::new("systemctl")
            .args(["show", "-p", "ControlGroup", "--value", &name])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty());
        let rel = from_systemd.unwrap_or_else(|| format!("/system.slice/{name}"));
        let cgroups = CGROUP_ROOTS
            .iter()
            .map(|root| PathBuf::from(format!("{root}{rel}")))
            .collect();
        Scope::Unit { name, cgroups }
    }

    pub fn label(&self) -> String {
        match self {
            Scope::Unit { name, .. } => name.clone(),
            Scope::Cgroup(p) => format!("cgroup {}", p.display()),
            Scope::Pid(p) => format!("pid {p}"),
        }
    }

    /// The unit name for labels and journal fields ("" when not a unit).
    pub fn unit_name(&self) -> &str {
        match self {
            Scope::Unit { name, .. } => name,
            _ => "",
        }
    }

    /// The processes in scope right now.
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Scope::Unit { cgroups, .. } => {
                let mut all = BTreeSet::new();
                for cg in cgroups {
                    all.extend(cgroup_pids(cg));
                }
                all.into_iter().collect()
            }
            Scope::Cgroup(p) => cgroup_pids(p),
            Scope::Pid(p) => vec![*p],
        }
    }
}

/// Processes of a cgroup and its descendants (`cgroup.procs` of each directory).
pub fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(s.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    out.into_iter().collect()
}

/// One journal entry per flagged thread and one for the verdict, with structured fields.
pub fn journal_entries(report: &Report, unit: &str) -> Vec<Vec<(&'static str, String)>> {
    let label = if unit.is_empty() {
        format!("pid {}", report.target.pid)
    } else {
        unit.to_string()
    };
    let verdict = match report.verdict {
        Verdict::Clean => "clean",
        Verdict::Stalled => "stalled",
        Verdict::Observed => "observed",
    };
    let common = |v: &mut Vec<(&'static str, String)>| {
        v.push(("SYSLOG_IDENTIFIER", "stallprobe".into()));
        v.push(("STALLPROBE_VERDICT", verdict.into()));
        v.push(("STALLPROBE_PID", report.target.pid.to_string()));
        if !unit.is_empty() {
            v.push(("STALLPROBE_UNIT", unit.into()));
        }
        if let Some(s) = &report.shutdown {
            v.push(("STALLPROBE_SIGNAL", s.signal.clone()));
            v.push(("STALLPROBE_SIGNAL_SENDER_PID", s.sender_pid.to_string()));
        }
    };
    let mut entries = Vec::new();
    let flagged: Vec<_> = report.flagged().collect();
    let mut summary = vec![
        (
            "MESSAGE",
            format!(
                "stallprobe: {label}: shutdown {verdict}: {}",
                report.summary.first().cloned().unwrap_or_default()
            ),
        ),
        (
            "PRIORITY",
            if report.verdict == Verdict::Stalled {
                journal::priority::ERR
            } else {
                journal::priority::INFO
            }
            .to_string(),
        ),
        ("STALLPROBE_FLAGGED", flagged.len().to_string()),
        ("STALLPROBE_SUMMARY", report.summary.join("\n")),
    ];
    common(&mut summary);
    entries.push(summary);
    for t in flagged {
        let stack: Vec<String> = t
            .stack
            .iter()
            .map(|f| {
                let loc = match (&f.file, f.line) {
                    (Some(file), Some(line)) => {
                        format!(" ({}:{line})", crate::report::basename(file))
                    }
                    _ => String::new(),
                };
                format!(
                    "{}{}",
                    f.function
                        .clone()
                        .unwrap_or_else(|| format!("{:#x}", f.addr)),
                    loc
                )
            })
            .collect();
        let kernel: Vec<&str> = t.kernel_stack.iter().map(|k| k.function.as_str()).collect();
        let reason = t.reason.clone().unwrap_or_default();
        let mut e = vec![
            (
                "MESSAGE",
                format!("stallprobe: {label}: tid {} ({}) {reason}", t.tid, t.name),
            ),
            ("STALLPROBE_THREAD_PID", t.pid.to_string()),
            ("PRIORITY", journal::priority::ERR.to_string()),
            ("STALLPROBE_TID", t.tid.to_string()),
            ("STALLPROBE_THREAD", t.name.clone()),
            ("STALLPROBE_ROLE", format!("{:?}", t.role).to_lowercase()),
            ("STALLPROBE_STATE", t.state.as_str().into()),
            ("STALLPROBE_SYSCALL", t.syscall.clone().unwrap_or_default()),
            ("STALLPROBE_REASON", reason),
            ("STALLPROBE_STACK", stack.join("\n")),
            ("STALLPROBE_KERNEL_STACK", kernel.join("\n")),
        ];
        common(&mut e);
        entries.push(e);
    }
    entries
}

/// `stallprobe watch`.
pub async fn watch(
    args: WatchArgs,
    scope: Scope,
    metrics_addr: Option<String>,
) -> Result<i32, StallError> {
    let opts = args.session_options()?;
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
    let label = scope.label();
    let unit = scope.unit_name().to_string();
    let mut stops = crate::driver::StopSignals::install()?;
    let mut session = Session::attach(opts)?;
    for pid in scope.pids() {
        let _ = session.add_process(pid);
    }
    crate::driver::drop_privileges_or_warn(args.quiet);

    let journal = journal::Journal::connect();
    if journal.is_none() && !args.quiet {
        eprintln!(
            "stallprobe: no journal at {}: verdicts go to standard output only",
            journal::socket_path().display()
        );
    }
    let metrics_text = Arc::new(Mutex::new(String::new()));
    if let Some(addr) = &metrics_addr {
        let bound = metrics::serve(addr, metrics_text.clone())
            .await
            .map_err(|e| {
                StallError::Usage(format!("cannot listen on {addr} for --metrics-addr: {e}"))
            })?;
        if !args.quiet {
            eprintln!("stallprobe: metrics on http://{bound}/metrics");
        }
    }
    let notifier = notify::Notifier::from_env();
    let status = |s: &Session| format!("watching {label}: {} process(es)", s.live_pids().len());
    if let Some(n) = &notifier {
        n.ready(&status(&session));
    }
    if !args.quiet {
        eprintln!(
            "stallprobe: {}; grace {} after a shutdown signal; Ctrl-C to stop",
            status(&session),
            humantime::format_duration(args.grace)
        );
    }

    let style = args.live_style();
    let started = Instant::now();
    let mut last_watchdog = Instant::now();
    let mut flagged_last = 0u64;
    let mut verdicts: std::collections::BTreeMap<&'static str, u64> = Default::default();
    let interval = session.options().interval;
    loop {
        let mut wake = interval;
        if let Some(g) = session.grace_deadline_ns() {
            wake = wake.min(Duration::from_nanos(g.saturating_sub(mono_ns())));
        }
        if let Some(every) = notifier.as_ref().and_then(|n| n.watchdog_every) {
            wake = wake.min(every.saturating_sub(last_watchdog.elapsed()));
        }
        let mut stop = false;
        tokio::select! {
            _ = session.wait(wake.max(Duration::from_millis(1))) => {}
            _ = stops.recv() => stop = true,
        }
        if stop {
            break;
        }
        let live = session.poll(false);
        if !args.quiet {
            for ev in &live {
                eprintln!(
                    "{}",
                    render::live_line(ev, started.elapsed().as_secs_f64(), style)
                );
            }
        }
        // Follow the scope: a restarted service has new processes.
        for pid in scope.pids() {
            if !session.watches(pid) && session.add_process(pid).is_ok() && !args.quiet {
                eprintln!("stallprobe: following pid {pid} ({label})");
            }
        }
        // A shutdown episode ends when its processes are gone or the grace period is over.
        let end = if session.shutdown_signal().is_some() {
            if session.episode_exited() {
                Some(EndReason::TargetExited)
            } else if session.grace_deadline_ns().is_some_and(|g| mono_ns() >= g) {
                Some(EndReason::GraceExpired)
            } else {
                None
            }
        } else {
            None
        };
        if let Some(end) = end {
            let report = session.report(end);
            flagged_last = report.flagged().count() as u64;
            let v = match report.verdict {
                Verdict::Clean => "clean",
                Verdict::Stalled => "stalled",
                Verdict::Observed => "observed",
            };
            *verdicts.entry(v).or_default() += 1;
            if let Some(j) = &journal {
                for e in journal_entries(&report, &unit) {
                    if let Err(err) = j.send(&e) {
                        eprintln!("stallprobe: could not write to the journal: {err}");
                        break;
                    }
                }
            }
            // The report on stdout (or -o) unless --quiet with a journal to log to.
            if !args.quiet || journal.is_none() || args.output.is_some() {
                let _ = args.emit(&report);
            }
            session.reset_episode();
            if let Some(n) = &notifier {
                n.status(&format!("{}; last shutdown: {v}", status(&session)));
            }
        }
        if matches!(scope, Scope::Pid(_))
            && session.all_exited()
            && session.shutdown_signal().is_none()
        {
            if !args.quiet {
                eprintln!("stallprobe: {label} exited; stopping");
            }
            break;
        }
        if metrics_addr.is_some() {
            let mut snap = session.metrics();
            snap.flagged = flagged_last;
            snap.verdicts = verdicts.clone();
            if let Ok(mut t) = metrics_text.lock() {
                *t = metrics::render(&snap, &unit);
            }
        }
        if let Some(n) = &notifier
            && let Some(every) = n.watchdog_every
            && last_watchdog.elapsed() >= every
        {
            n.watchdog();
            last_watchdog = Instant::now();
        }
    }
    if let Some(n) = &notifier {
        n.send("STOPPING=1");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_get_a_suffix_and_cgroup_candidates() {
        match Scope::unit("nginx") {
            Scope::Unit { name, cgroups } => {
                assert_eq!(name, "nginx.service");
                assert!(
                    cgroups
                        .iter()
                        .any(|c| c.ends_with("system.slice/nginx.service"))
                );
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn cgroup_pids_of_a_missing_dir_is_empty() {
        assert!(cgroup_pids(Path::new("/nonexistent/cg")).is_empty());
    }
}
