//! Reading the watched processes' language runtimes for a report: CPython threads' frames and
//! the GIL holder (from memory, at every report: no attach, nothing changes in the target),
//! and a HotSpot JVM's thread dump (through its attach mechanism, via `crate::attach_broker`:
//! only for a JVM judged stalled, or for every report with `--attach-runtime`; never with
//! `--no-runtime-attach`). `crate::assemble` merges what they say into the thread view.

use std::{collections::BTreeMap, time::Duration};

use super::Session;
use crate::{
    assemble::RuntimeView,
    attach_broker::{self, Ask},
    procfs,
    report::{Runtime, clean},
    tracker::ThreadFacts,
    verdict::EndReason,
};

/// When stallprobe may attach to a language runtime (a JVM: this starts a thread in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeAttach {
    /// `--no-runtime-attach`.
    Never,
    /// The default: a JVM judged stalled (alive at the end of the grace period).
    WhenStalled,
    /// `--attach-runtime`: at every report.
    Always,
}

/// How long a JVM has to answer one attach command.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);

impl Session {
    /// What the runtimes of the live watched processes say, and notes on how it went. Frames
    /// a JVM's fresh perf map names are named in `facts` here.
    pub(super) fn read_runtimes(
        &mut self,
        facts: &mut [ThreadFacts],
        end: EndReason,
    ) -> (BTreeMap<u32, RuntimeView>, Vec<String>) {
        let mut views = BTreeMap::new();
        let mut notes = Vec::new();
        let runtimes = self.tracker.runtimes();
        let ns_pids = self.tracker.ns_pids();
        let judged = self.tracker.judged_pids();
        let stalled_end =
            self.tracker.shutdown_signal().is_some() && end == EndReason::GraceExpired;
        for pid in self.tracker.live_pids() {
            let other_ns = ns_pids.get(&pid).is_some_and(Option::is_some);
            match runtimes.get(&pid) {
                Some(Runtime::CPython) => match self.host.python(pid, other_ns) {
                    Ok(snap) => {
                        views.insert(pid, RuntimeView::Python(snap));
                    }
                    Err(e) => notes.push(format!(
                        "pid {pid}: Python frames not read ({}): the interpreter's native frames are shown",
                        clean(&e)
                    )),
                },
                Some(Runtime::Jvm) => {
                    let stalled = stalled_end && judged.contains(&pid);
                    let wanted = match self.opts.runtime_attach {
                        RuntimeAttach::Never => {
                            if stalled {
                                notes.push(format!(
                                    "pid {pid}: no JVM thread dump (--no-runtime-attach): Java frames and monitors are not shown"
                                ));
                            }
                            false
                        }
                        RuntimeAttach::WhenStalled => stalled,
                        RuntimeAttach::Always => true,
                    };
                    if wanted && let Some(dump) = self.jvm_dump(pid, other_ns, facts, &mut notes) {
                        views.insert(pid, RuntimeView::Java(dump));
                    }
                }
                _ => {}
            }
        }
        (views, notes)
    }

    /// Ask a JVM for its thread dump and its perf map (as its user, through the broker).
    fn jvm_dump(
        &mut self,
        pid: u32,
        other_ns: bool,
        facts: &mut [ThreadFacts],
        notes: &mut Vec<String>,
    ) -> Option<probe_lang::java::ThreadDump> {
        let start = procfs::read_process_stat(pid).map(|s| s.starttime)?;
        let text = match attach_broker::ask(Ask::ThreadDump, pid, start, ATTACH_TIMEOUT) {
            Ok(t) => t,
            Err(e) => {
                notes.push(format!("pid {pid}: no JVM thread dump: {}", clean(&e)));
                return None;
            }
        };
        notes.push(format!(
            "pid {pid}: attached to the JVM for a thread dump and a perf map (as `jstack` and `jcmd` do; the JVM keeps an \"Attach Listener\" thread)"
        ));
        let mut dump = probe_lang::java::parse_thread_dump(&text);
        if other_ns {
            let map = probe_lang::ns::ns_tid_map(pid);
            for t in &mut dump.threads {
                t.nid = t.nid.and_then(|n| map.get(&n).copied());
            }
        }
        match attach_broker::ask(Ask::PerfMap, pid, start, ATTACH_TIMEOUT) {
            Ok(_) => {
                for t in facts.iter_mut().filter(|t| t.pid == pid) {
                    self.host.name_jit_frames_now(pid, &mut t.stack);
                }
            }
            Err(e) => notes.push(format!(
                "pid {pid}: the JVM did not write a perf map (JIT frames stay unnamed): {}",
                clean(&e)
            )),
        }
        Some(dump)
    }
}
