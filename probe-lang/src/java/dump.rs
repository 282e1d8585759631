//! Parsing HotSpot's thread dump (`jstack -l`, `jcmd Thread.print -l`, the attach
//! `threaddump` command): threads with their OS tid (`nid`), state, Java frames, monitors held
//! and waited for, and the JVM's own deadlock report.
//!
//! Pure and bounded: the input is text of at most the attach cap, read once line by line;
//! thread and frame counts are capped; anything not recognized is skipped.

use std::collections::HashMap;

/// Threads kept from one dump.
const MAX_THREADS: usize = 100_000;
/// Frames kept per thread.
const MAX_FRAMES: usize = 4096;

/// A thread dump.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ThreadDump {
    /// "Full thread dump OpenJDK 64-Bit Server VM (17.0.15+6 mixed mode, sharing):"
    pub vm: Option<String>,
    pub threads: Vec<JavaThread>,
    /// Each "Found one Java-level deadlock:" section.
    pub deadlocks: Vec<Deadlock>,
    /// What was cut or could not be read.
    pub notes: Vec<String>,
}

/// One thread of the dump: a Java thread (`#N`) or a VM thread (GC, compiler, "VM Thread").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JavaThread {
    pub name: String,
    /// `#N`: Java threads have it, the VM's own threads do not.
    pub number: Option<u64>,
    pub daemon: bool,
    /// `nid`: the OS thread id.
    pub nid: Option<u32>,
    /// What the VM says after `nid=` ("waiting for monitor entry", "in Object.wait()", ...).
    pub vm_state: String,
    /// `java.lang.Thread.State: ...` ("BLOCKED (on object monitor)"), for Java threads.
    pub state: Option<String>,
    /// Innermost first.
    pub frames: Vec<JavaFrame>,
    /// "Locked ownable synchronizers" (java.util.concurrent locks), with `-l`.
    pub ownable_synchronizers: Vec<Lock>,
}

/// One Java frame: `at pkg.Class.method(Source)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JavaFrame {
    /// `pkg.Class.method` (`Class$$Lambda$14/0x…​.run` for hidden classes).
    pub method: String,
    /// `java.base@17.0.15` when the frame names its module.
    pub module: Option<String>,
    pub source: Source,
    /// The `- locked`, `- waiting to lock`, ... lines under the frame.
    pub locks: Vec<LockLine>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File { file: String, line: Option<u32> },
    Native,
    Unknown,
}

/// An object the dump names: `<0x000000069ec1aa78> (a java.lang.Object)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    /// None for `<no object reference available>` or `<owner is scalar replaced>`.
    pub address: Option<u64>,
    pub class: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// `- locked <…>`: the frame holds this monitor (also printed for a monitor the thread
    /// released in `wait()`: see [`ThreadDump::owner_of`]).
    Locked,
    /// `- waiting to lock <…>`: blocked entering a `synchronized` block.
    WaitingToLock,
    /// `- waiting on <…>`: in `Object.wait()`.
    WaitingOn,
    /// `- parking to wait for <…>`: parked on a java.util.concurrent lock or condition.
    ParkingFor,
    /// `- waiting to re-lock in wait() <…>`: notified, re-entering the monitor.
    WaitingToReLock,
    /// `- eliminated <…>`: a lock the JIT removed.
    Eliminated,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockLine {
    pub kind: LockKind,
    pub lock: Lock,
}

/// One deadlock cycle as the JVM reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deadlock {
    pub links: Vec<DeadlockLink>,
}

/// `"t": waiting to lock monitor 0x… (object 0x…, a C), which is held by "u"`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeadlockLink {
    pub thread: String,
    /// "waiting to lock monitor 0x… (object 0x…, a java.lang.Object)" as printed.
    pub waiting_for: String,
    /// The object (for monitors) or the synchronizer (for java.util.concurrent locks).
    pub object: Option<u64>,
    pub class: Option<String>,
    pub held_by: Option<String>,
}

/// What a thread is blocked on, from its innermost frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wait {
    pub kind: LockKind,
    pub lock: Lock,
    /// The thread holding it, when the dump shows one.
    pub owner: Option<String>,
}

impl JavaThread {
    /// The first waiting lock line (waiting to lock / on / parking / re-lock), innermost first.
    pub fn blocked_on(&self) -> Option<&LockLine> {
        self.frames.iter().flat_map(|f| &f.locks).find(|l| {
            matches!(
                l.kind,
                LockKind::WaitingToLock
                    | LockKind::WaitingOn
                    | LockKind::ParkingFor
                    | LockKind::WaitingToReLock
            )
        })
    }

    /// Monitors this thread holds now (`- locked`, less one it is `wait()`ing on).
    pub fn monitors_held(&self) -> Vec<&Lock> {
        let waiting_on: Vec<Option<u64>> = self
            .frames
            .iter()
            .flat_map(|f| &f.locks)
            .filter(|l| l.kind == LockKind::WaitingOn)
            .map(|l| l.lock.address)
            .collect();
        self.frames
            .iter()
            .flat_map(|f| &f.locks)
            .filter(|l| l.kind == LockKind::Locked && !waiting_on.contains(&l.lock.address))
            .map(|l| &l.lock)
            .collect()
    }
}

impl ThreadDump {
    pub fn thread(&self, name: &str) -> Option<&JavaThread> {
        self.threads.iter().find(|t| t.name == name)
    }

    pub fn thread_by_nid(&self, nid: u32) -> Option<&JavaThread> {
        self.threads.iter().find(|t| t.nid == Some(nid))
    }

    /// Who holds the object at `addr`: a thread with it `- locked` (and not waiting on it), or
    /// with it among its locked ownable synchronizers.
    pub fn owner_of(&self, addr: u64) -> Option<&JavaThread> {
        self.threads.iter().find(|t| {
            t.monitors_held().iter().any(|l| l.address == Some(addr))
                || t.ownable_synchronizers
                    .iter()
                    .any(|l| l.address == Some(addr))
        })
    }

    /// What `thread` waits for and who holds it. For `Object.wait()` the owner is whoever holds
    /// the monitor now (usually nobody: the waiter released it).
    pub fn wait_of(&self, thread: &JavaThread) -> Option<Wait> {
        let l = thread.blocked_on()?;
        let owner = l
            .lock
            .address
            .and_then(|a| self.owner_of(a))
            .filter(|o| o.name != thread.name)
            .map(|o| o.name.clone());
        Some(Wait {
            kind: l.kind,
            lock: l.lock.clone(),
            owner,
        })
    }
}

/// Parse a thread dump. Never fails: unknown lines are skipped.
pub fn parse_thread_dump(text: &str) -> ThreadDump {
    let mut d = ThreadDump::default();
    let mut section = Section::Threads;
    let mut cur: Option<JavaThread> = None;
    let mut in_synchronizers = false;
    let mut cut_frames = 0usize;
    let mut link: Option<DeadlockLink> = None;
    for raw in text.lines() {
        let line = raw.trim_end();
        let t = line.trim_start();
        if line.starts_with("Full thread dump ") && d.vm.is_none() {
            d.vm = Some(line.to_string());
            continue;
        }
        if t.starts_with("Found one Java-level deadlock:") {
            finish(&mut d, &mut cur);
            section = Section::Deadlock;
            d.deadlocks.push(Deadlock::default());
            continue;
        }
        match section {
            Section::Threads => {
                if line.starts_with('"') {
                    if let Some(th) = parse_header(line) {
                        finish(&mut d, &mut cur);
                        in_synchronizers = false;
                        if d.threads.len() >= MAX_THREADS {
                            d.notes
                                .push(format!("more than {MAX_THREADS} threads: cut"));
                            section = Section::Skip;
                            continue;
                        }
                        cur = Some(th);
                    }
                    continue;
                }
                let Some(th) = cur.as_mut() else { continue };
                if let Some(s) = t.strip_prefix("java.lang.Thread.State: ") {
                    th.state = Some(s.to_string());
                } else if let Some(rest) = t.strip_prefix("at ") {
                    in_synchronizers = false;
                    if th.frames.len() >= MAX_FRAMES {
                        cut_frames += 1;
                        continue;
                    }
                    if let Some(f) = parse_frame(rest) {
                        th.frames.push(f);
                    }
                } else if t == "Locked ownable synchronizers:" {
                    in_synchronizers = true;
                } else if let Some(rest) = t.strip_prefix("- ") {
                    if in_synchronizers {
                        if rest != "None" {
                            th.ownable_synchronizers.push(parse_lock(rest));
                        }
                    } else if let Some(l) = parse_lock_line(rest)
                        && let Some(f) = th.frames.last_mut()
                        && f.locks.len() < 64
                    {
                        f.locks.push(l);
                    }
                } else if t.is_empty() && !in_synchronizers && th.frames.is_empty() {
                    // VM threads end at the blank line after their header.
                } else if t.starts_with("JNI global refs") {
                    finish(&mut d, &mut cur);
                }
            }
            Section::Deadlock => {
                if t.starts_with("Java stack information for the threads listed above") {
                    if let Some(l) = link.take() {
                        push_link(&mut d, l);
                    }
                    section = Section::Skip;
                } else if line.starts_with('"') && t.ends_with("\":") {
                    if let Some(l) = link.take() {
                        push_link(&mut d, l);
                    }
                    link = Some(DeadlockLink {
                        thread: t[1..t.len() - 2].to_string(),
                        ..Default::default()
                    });
                } else if let Some(l) = link.as_mut() {
                    if let Some(rest) = t.strip_prefix("which is held by ") {
                        l.held_by = Some(unquote(rest.trim_end_matches(',')).to_string());
                    } else if t.starts_with("waiting") {
                        l.waiting_for = t.trim_end_matches(',').to_string();
                        (l.object, l.class) = parse_deadlock_wait(t);
                    }
                }
            }
            Section::Skip => {}
        }
    }
    if let Some(l) = link.take() {
        push_link(&mut d, l);
    }
    finish(&mut d, &mut cur);
    if cut_frames > 0 {
        d.notes.push(format!(
            "{cut_frames} frames beyond {MAX_FRAMES} per thread: cut"
        ));
    }
    d
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Threads,
    Deadlock,
    Skip,
}

fn finish(d: &mut ThreadDump, cur: &mut Option<JavaThread>) {
    if let Some(t) = cur.take() {
        d.threads.push(t);
    }
}

fn push_link(d: &mut ThreadDump, l: DeadlockLink) {
    if let Some(dl) = d.deadlocks.last_mut()
        && dl.links.len() < 1024
    {
        dl.links.push(l);
    }
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// `"name" #13 daemon prio=5 os_prio=0 cpu=0.61ms elapsed=3.29s tid=0x… nid=0x5c31 waiting for
/// monitor entry  [0x…]`. The name may contain quotes: it ends at the last quote before the
/// fields.
fn parse_header(line: &str) -> Option<JavaThread> {
    let fields_at = [" #", " daemon", " prio=", " os_prio=", " tid=", " nid="]
        .iter()
        .filter_map(|k| line.find(&format!("\"{k}")))
        .min()?;
    let name = line.get(1..fields_at)?.to_string();
    let rest = &line[fields_at + 1..];
    let mut th = JavaThread {
        name,
        ..Default::default()
    };
    let mut words = rest.split_whitespace().peekable();
    let mut after_nid = Vec::new();
    while let Some(w) = words.next() {
        if let Some(n) = w.strip_prefix('#') {
            th.number = n.parse().ok();
        } else if w == "daemon" {
            th.daemon = true;
        } else if let Some(n) = w.strip_prefix("nid=") {
            th.nid = match n.strip_prefix("0x") {
                Some(h) => u32::from_str_radix(h, 16).ok(),
                None => n.parse().ok(),
            };
            for w in words.by_ref() {
                if w.starts_with('[') {
                    break;
                }
                after_nid.push(w);
            }
        }
    }
    th.vm_state = after_nid.join(" ");
    Some(th)
}

/// `java.lang.Thread.sleep(java.base@17.0.15/Native Method)`, `A.b(A.java:12)`,
/// `A$$Lambda$2/0x…​.run(Unknown Source)`.
fn parse_frame(s: &str) -> Option<JavaFrame> {
    let open = s.find('(')?;
    let inner = s[open + 1..].strip_suffix(')')?;
    let (module, src) = match inner.rsplit_once('/') {
        Some((m, src)) => (Some(m.to_string()).filter(|m| !m.is_empty()), src),
        None => (None, inner),
    };
    let source = match src {
        "Native Method" => Source::Native,
        "Unknown Source" => Source::Unknown,
        _ => match src.rsplit_once(':') {
            Some((file, line)) if line.bytes().all(|b| b.is_ascii_digit()) && !line.is_empty() => {
                Source::File {
                    file: file.to_string(),
                    line: line.parse().ok(),
                }
            }
            _ => Source::File {
                file: src.to_string(),
                line: None,
            },
        },
    };
    Some(JavaFrame {
        method: s[..open].to_string(),
        module,
        source,
        locks: Vec::new(),
    })
}

/// The text after `- ` under a frame.
fn parse_lock_line(s: &str) -> Option<LockLine> {
    const KINDS: [(&str, LockKind); 6] = [
        ("locked ", LockKind::Locked),
        ("waiting to lock ", LockKind::WaitingToLock),
        ("waiting on ", LockKind::WaitingOn),
        ("parking to wait for ", LockKind::ParkingFor),
        ("waiting to re-lock in wait() ", LockKind::WaitingToReLock),
        ("eliminated ", LockKind::Eliminated),
    ];
    let (kind, rest) = KINDS
        .iter()
        .find_map(|(p, k)| s.strip_prefix(p).map(|r| (*k, r)))?;
    Some(LockLine {
        kind,
        lock: parse_lock(rest.trim_start()),
    })
}

/// `<0x000000069ec1aa78> (a java.lang.Object)`.
fn parse_lock(s: &str) -> Lock {
    let address = s
        .strip_prefix("<0x")
        .and_then(|r| r.split_once('>'))
        .and_then(|(h, _)| u64::from_str_radix(h, 16).ok());
    let class = s
        .find("(a ")
        .and_then(|i| s[i + 3..].split_once(')'))
        .map(|(c, _)| c.to_string());
    Lock { address, class }
}

/// `waiting to lock monitor 0x… (object 0x…, a java.lang.Object),` or
/// `waiting for ownable synchronizer 0x…, (a java.util…NonfairSync),`.
fn parse_deadlock_wait(s: &str) -> (Option<u64>, Option<String>) {
    let hex_after = |key: &str| {
        s.find(key).and_then(|i| {
            let h: String = s[i + key.len()..]
                .chars()
                .take_while(|c| c.is_ascii_hexdigit())
                .collect();
            u64::from_str_radix(&h, 16).ok()
        })
    };
    let object = hex_after("(object 0x").or_else(|| hex_after("synchronizer 0x"));
    let class = s
        .find("a ")
        .filter(|_| s.contains("(object") || s.contains("(a "))
        .and_then(|_| {
            let i = s
                .rfind(", a ")
                .map(|i| i + 4)
                .or_else(|| s.rfind("(a ").map(|i| i + 3))?;
            s[i..].split_once(')').map(|(c, _)| c.to_string())
        });
    (object, class)
}

/// Every thread's wait, with owners (for the caller's report): name → wait.
pub fn waits(d: &ThreadDump) -> HashMap<String, Wait> {
    d.threads
        .iter()
        .filter_map(|t| d.wait_of(t).map(|w| (t.name.clone(), w)))
        .collect()
}

#[cfg(test)]
#[path = "dump_tests.rs"]
mod tests;
