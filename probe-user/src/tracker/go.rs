//! The goroutines of Go targets. They are read from the target's memory (through the host):
//! a first look a second after the watch of the process starts, again from time to time
//! until a shutdown signal comes (rarely enough that it costs under 1% of a CPU), once when
//! the signal arrives, and once for the report. A goroutine with the same goid, state, wait
//! reason, pc and sp in consecutive looks has not moved in between: it has been waiting at
//! least since the earliest of them. No probe runs on the Go runtime's hot paths.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use probe_lang::go::{ChanOp, GStatus, GoFrame, GoRole, GoroutineKey};

use super::{ThreadFacts, Tracker, host::GoLook, host::Host};
use crate::report::{ChanInfo, Frame, GoWait, Role, Runtime, WaitingSince};

/// The first look comes this long after the process is first seen (a `run` target has just
/// exec'd: let its `main` start its goroutines), and failed looks are retried this often.
const FIRST_LOOK_NS: u64 = 1_000_000_000;
/// Failed first looks are retried this many times.
const MAX_TRIES: u32 = 30;
/// Before a signal, the look is refreshed at most this often...
const REFRESH_NS: u64 = 30_000_000_000;
/// ...and at most once per this many times the duration of a look (under 1% of a CPU).
const REFRESH_COST_FACTOR: u64 = 100;

/// The goroutines of one look, as goid → a fingerprint of its key (16 bytes each, so that a
/// look at 100,000 goroutines costs little to keep), and when it was taken.
struct KeyedLook {
    at_ns: u64,
    keys: HashMap<u64, u64>,
}

fn fingerprint(key: &GoroutineKey) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

impl KeyedLook {
    fn of(at_ns: u64, look: &GoLook) -> KeyedLook {
        KeyedLook {
            at_ns,
            keys: look
                .snapshot
                .goroutines
                .iter()
                .map(|g| (g.goid, fingerprint(&g.key)))
                .collect(),
        }
    }

    fn same(&self, key: &GoroutineKey) -> bool {
        self.keys.get(&key.goid) == Some(&fingerprint(key))
    }
}

/// What the tracker keeps per Go process.
#[derive(Default)]
pub struct GoTrack {
    /// The first look.
    first: Option<KeyedLook>,
    /// The latest look before the shutdown signal (refreshed while none came).
    before_signal: Option<KeyedLook>,
    at_signal: Option<KeyedLook>,
    latest: Option<(u64, GoLook)>,
    /// Why the goroutines could not be read, when the last try failed.
    failure: Option<String>,
    tries: u32,
    /// When the next look before a signal is due (0: the process was not seen yet).
    next_look_ns: u64,
    /// The longest look so far, in ns.
    longest_ns: u64,
}

/// One goroutine of the latest look, with what the looks say about it.
#[derive(Clone, Debug)]
pub struct GoroutineFacts {
    pub pid: u32,
    pub goid: u64,
    pub status: GStatus,
    pub wait_reason: Option<Arc<str>>,
    pub waiting_ms: Option<u64>,
    pub waiting_since: Option<WaitingSince>,
    /// Unchanged since a look taken before the shutdown signal.
    pub since_before_signal: bool,
    /// Unchanged since the look taken at the shutdown signal.
    pub unchanged_since_signal: bool,
    /// Seen in the look at the shutdown signal at all.
    pub seen_at_signal: bool,
    /// Its OS thread, as stallprobe sees tids.
    pub thread: Option<u32>,
    /// Shared between goroutines with the same stack (thousands of leaked goroutines cost
    /// one copy).
    pub stack: Arc<[Frame]>,
    pub created_by: Option<Arc<Frame>>,
    pub wait: Option<GoWait>,
    pub role: Role,
}

fn frame(f: &GoFrame, bias: u64, exe: &str) -> Frame {
    Frame {
        addr: f.pc.wrapping_add(bias),
        function: Some(f.function.to_string()),
        file: Some(f.file.to_string()),
        line: Some(f.line),
        module: Some(exe.to_string()),
        inlined: f.inlined,
        offset: None,
        lang: None,
    }
}

impl Tracker {
    fn go_pids(&self) -> Vec<u32> {
        self.procs
            .values()
            .filter(|p| p.alive() && p.runtime == Runtime::Go)
            .map(|p| p.pid)
            .collect()
    }

    /// One look at a Go process's goroutines; `None` when they could not be read (the reason
    /// is kept for the notes).
    fn go_look(&mut self, pid: u32, now: u64, host: &mut dyn Host) -> Option<GoLook> {
        // Not two whole looks in memory at once: the previous one goes first (and comes back
        // if this one fails).
        let previous = self.go.get_mut(&pid).and_then(|t| t.latest.take());
        let started = std::time::Instant::now();
        let result = host.goroutines(pid);
        let took = started.elapsed().as_nanos() as u64;
        let track = self.go.entry(pid).or_default();
        track.tries += 1;
        track.longest_ns = track.longest_ns.max(took);
        match result {
            Ok(look) if !look.snapshot.goroutines.is_empty() => {
                track.failure = None;
                track.next_look_ns = now + REFRESH_NS.max(took * REFRESH_COST_FACTOR);
                Some(look)
            }
            Ok(_) => {
                track.failure = Some("the Go runtime has no goroutines yet".into());
                track.next_look_ns = now + FIRST_LOOK_NS;
                track.latest = previous;
                None
            }
            Err(why) => {
                track.failure = Some(why);
                track.next_look_ns = now + FIRST_LOOK_NS;
                track.latest = previous;
                None
            }
        }
    }

    /// After a look at the threads: a look at the goroutines of Go processes whose look before
    /// a signal is due (the first one a second after the process is first seen).
    pub(super) fn go_looks_before_signal(&mut self, now: u64, host: &mut dyn Host) {
        if self.shutdown_signal().is_some() {
            return;
        }
        for pid in self.go_pids() {
            let t = self.go.entry(pid).or_default();
            if t.next_look_ns == 0 {
                t.next_look_ns = now + FIRST_LOOK_NS;
                continue;
            }
            let given_up = t.first.is_none() && t.tries >= MAX_TRIES;
            if given_up || now < t.next_look_ns {
                continue;
            }
            if let Some(look) = self.go_look(pid, now, host) {
                let t = self.go.entry(pid).or_default();
                if t.first.is_none() {
                    t.first = Some(KeyedLook::of(now, &look));
                }
                t.before_signal = Some(KeyedLook::of(now, &look));
                t.latest = Some((now, look));
            }
        }
    }

    /// The shutdown signal reached `pid`: where its goroutines are now.
    pub(super) fn go_look_at_signal(&mut self, pid: u32, now: u64, host: &mut dyn Host) {
        let is_go = self
            .procs
            .get(&pid)
            .is_some_and(|p| p.alive() && p.runtime == Runtime::Go);
        if !is_go || self.go.get(&pid).is_some_and(|t| t.at_signal.is_some()) {
            return;
        }
        if let Some(look) = self.go_look(pid, now, host) {
            let t = self.go.entry(pid).or_default();
            t.at_signal = Some(KeyedLook::of(now, &look));
            if t.first.is_none() {
                t.first = Some(KeyedLook::of(now, &look));
            }
            t.latest = Some((now, look));
        }
    }

    /// Before a report: the latest goroutines of every live Go process.
    pub(super) fn final_go_looks(&mut self, now: u64, host: &mut dyn Host) {
        for pid in self.go_pids() {
            if let Some(look) = self.go_look(pid, now, host) {
                let t = self.go.entry(pid).or_default();
                if t.first.is_none() {
                    t.first = Some(KeyedLook::of(now, &look));
                }
                t.latest = Some((now, look));
            }
        }
    }

    /// Forget the looks of the shutdown episode just reported (the first look stays: it
    /// still tells what has not moved since attach).
    pub(super) fn reset_go_episode(&mut self) {
        self.go.retain(|pid, _| self.procs.contains_key(pid));
        for t in self.go.values_mut() {
            t.at_signal = None;
        }
    }

    /// Memory kept for goroutine looks: the number of goroutine keys held.
    #[cfg(test)]
    pub(super) fn go_keys_held(&self) -> usize {
        self.go
            .values()
            .flat_map(|t| [&t.first, &t.before_signal, &t.at_signal])
            .flatten()
            .map(|l| l.keys.len())
            .sum()
    }

    /// The longest look at goroutines so far, in ms (None: none was taken).
    pub fn go_look_ms(&self) -> Option<u64> {
        self.go
            .values()
            .filter(|t| t.tries > 0)
            .map(|t| t.longest_ns / 1_000_000)
            .max()
    }

    /// The Go version of a process whose goroutines were read.
    pub fn go_version(&self, pid: u32) -> Option<String> {
        let (_, look) = self.go.get(&pid)?.latest.as_ref()?;
        Some(look.version.clone())
    }

    /// What the report should say about reading goroutines: how the binaries were understood,
    /// what could not be read, and why.
    pub fn go_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for (pid, t) in &self.go {
            match (&t.latest, &t.failure) {
                (Some((_, look)), failure) => {
                    let s = &look.snapshot;
                    notes.push(format!(
                        "pid {pid}: goroutines read from memory ({} live of {} in the runtime's list, {})",
                        s.goroutines.len(),
                        s.total,
                        look.version
                    ));
                    if s.unreadable > 0 {
                        notes.push(format!(
                            "pid {pid}: {} goroutines could not be read (they changed while read, or did not validate)",
                            s.unreadable
                        ));
                    }
                    notes.extend(s.notes.iter().map(|n| format!("pid {pid}: {n}")));
                    notes.extend(look.notes.iter().map(|n| format!("pid {pid}: {n}")));
                    if let Some(f) = failure {
                        notes.push(format!("pid {pid}: the last look at the goroutines failed: {f}"));
                    }
                }
                (None, Some(f)) => notes.push(format!(
                    "pid {pid}: goroutines could not be read ({f}): the report shows OS threads only"
                )),
                (None, None) => {}
            }
        }
        notes
    }

    /// The goroutines of the latest looks, with waiting times and links to their threads.
    pub fn goroutine_facts(&self, threads: &[ThreadFacts], now: u64) -> Vec<GoroutineFacts> {
        let signal_ts = self.shutdown_signal().map(|s| s.ts_ns);
        // Goroutine threads are numbered as the target's pid namespace sees them.
        let by_ns_tid: BTreeMap<(u32, u32), &ThreadFacts> = threads
            .iter()
            .map(|t| ((t.pid, t.ns_tid.unwrap_or(t.tid)), t))
            .collect();
        let mut out = Vec::new();
        for (&pid, track) in &self.go {
            let Some((look_ns, look)) = &track.latest else {
                continue;
            };
            if !self.procs.get(&pid).is_some_and(|p| p.alive()) {
                continue;
            }
            let mut stacks: HashMap<Vec<u64>, Arc<[Frame]>> = HashMap::new();
            let mut creators: HashMap<u64, Arc<Frame>> = HashMap::new();
            for g in &look.snapshot.goroutines {
                let blocked = matches!(g.status, GStatus::Waiting | GStatus::Syscall);
                // Walk back through the looks while the goroutine is where it is now.
                let mut since: Option<(u64, WaitingSince)> = None;
                let mut since_before_signal = false;
                let mut unchanged_since_signal = false;
                if blocked {
                    since = Some((*look_ns, WaitingSince::Look));
                    let chain = [
                        (&track.at_signal, WaitingSince::Signal),
                        (&track.before_signal, WaitingSince::BeforeSignal),
                        (&track.first, WaitingSince::Attach),
                    ];
                    for (l, how) in chain {
                        let Some(l) = l.as_ref().filter(|l| l.at_ns <= *look_ns) else {
                            continue;
                        };
                        if !l.same(&g.key) {
                            break;
                        }
                        if how == WaitingSince::Signal {
                            unchanged_since_signal = true;
                        }
                        if signal_ts.is_some_and(|s| l.at_ns < s) {
                            since_before_signal = true;
                        }
                        if since.is_none_or(|(s, _)| l.at_ns <= s) {
                            since = Some((l.at_ns, how));
                        }
                    }
                    // The runtime's own wait time (set by the GC), only where the looks agree
                    // that it has not moved since the first one: it may predate the wait by a
                    // GC cycle, so alone it proves nothing.
                    if let Some((s, WaitingSince::Attach)) = since
                        && g.waitsince_ns > 0
                        && (g.waitsince_ns as u64) < s
                    {
                        since = Some((g.waitsince_ns as u64, WaitingSince::Gc));
                    }
                }
                let thread = g.thread.and_then(|ns| by_ns_tid.get(&(pid, ns)).copied());
                let wait = match (&g.wait, g.status, thread) {
                    (Some(c), _, _) => Some(GoWait::Chan(ChanInfo {
                        addr: c.addr,
                        cap: c.cap,
                        len: c.len,
                        closed: c.closed,
                        senders: c.senders,
                        receivers: c.receivers,
                        op: match c.op {
                            ChanOp::Send => "send",
                            ChanOp::Recv => "recv",
                            ChanOp::Select => "select",
                        },
                        cases: c.cases,
                    })),
                    (None, GStatus::Syscall, Some(t)) => Some(GoWait::Thread {
                        tid: t.tid,
                        syscall: t.syscall.clone(),
                        wait: t.wait.clone().map(Box::new),
                    }),
                    _ => None,
                };
                out.push(GoroutineFacts {
                    pid,
                    goid: g.goid,
                    status: g.status,
                    wait_reason: g.wait_reason.clone(),
                    waiting_ms: since.map(|(s, _)| now.saturating_sub(s) / 1_000_000),
                    waiting_since: since.map(|(_, how)| how),
                    since_before_signal,
                    unchanged_since_signal,
                    seen_at_signal: track
                        .at_signal
                        .as_ref()
                        .is_some_and(|s| s.keys.contains_key(&g.goid)),
                    thread: thread.map(|t| t.tid),
                    stack: stacks
                        .entry(g.stack.iter().map(|f| f.pc).collect())
                        .or_insert_with(|| {
                            g.stack
                                .iter()
                                .map(|f| frame(f, look.bias, &look.exe))
                                .collect()
                        })
                        .clone(),
                    // The main goroutine's creator is the runtime's autogenerated wrapper.
                    created_by: g
                        .created_by
                        .as_ref()
                        .filter(|f| &*f.file != "<autogenerated>")
                        .map(|f| {
                            creators
                                .entry(f.pc)
                                .or_insert_with(|| Arc::new(frame(f, look.bias, &look.exe)))
                                .clone()
                        }),
                    wait,
                    role: match g.role {
                        GoRole::Runtime => Role::Runtime,
                        GoRole::Application => Role::App,
                    },
                });
            }
        }
        out
    }
}
