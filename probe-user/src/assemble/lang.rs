//! Language-level frames and locks in the thread view: what a CPython interpreter's frame
//! chain and a HotSpot JVM's thread dump say about each thread, put where the native stack
//! runs them (py-spy `--native` semantics for Python; in place of the interpreter and JIT
//! frames for Java), and the locks they name (the GIL, Java monitors) as lock owners, so
//! the deadlock graph sees them. Pure: the session reads the runtimes, this only combines.
//!
//! Everything here came from the target (names, files, classes): it is escaped on the way in.

use std::collections::BTreeMap;

use probe_lang::{
    java::{JavaFrame, LockKind, Source, ThreadDump},
    python::{MergedFrame, PyFrame, PySnapshot, merge},
};

use crate::{
    report::{Frame, Lang, Wait, clean},
    tracker::ThreadFacts,
};

/// What one process's language runtime said, with tids already as stallprobe numbers them.
#[derive(Clone, Debug)]
pub enum RuntimeView {
    Python(PySnapshot),
    Java(ThreadDump),
}

/// Put each view's frames and locks into the threads of its process; returns notes.
pub fn apply(facts: &mut [ThreadFacts], views: &BTreeMap<u32, RuntimeView>) -> Vec<String> {
    let mut notes = Vec::new();
    let names: BTreeMap<u32, String> = facts.iter().map(|t| (t.tid, t.name.clone())).collect();
    for (&pid, view) in views {
        match view {
            RuntimeView::Python(snap) => {
                notes.extend(
                    snap.notes
                        .iter()
                        .map(|n| format!("pid {pid}: {}", clean(n))),
                );
                for t in facts.iter_mut().filter(|t| t.pid == pid) {
                    python_thread(t, snap, &names);
                }
            }
            RuntimeView::Java(dump) => {
                notes.extend(java_notes(pid, dump));
                for t in facts.iter_mut().filter(|t| t.pid == pid) {
                    java_thread(t, dump);
                }
            }
        }
    }
    notes
}

fn py_frame(f: &PyFrame) -> Frame {
    Frame {
        function: Some(clean(&f.function)),
        file: Some(clean(&f.file)),
        line: f.line,
        lang: Some(Lang::Python),
        ..Frame::default()
    }
}

fn python_thread(t: &mut ThreadFacts, snap: &PySnapshot, names: &BTreeMap<u32, String>) {
    if t.state == crate::report::ThreadState::Exited {
        return;
    }
    if let Some(why) = snap.why_no_frames(t.tid) {
        t.lang_note = Some(format!("no Python frames: {}", clean(&why)));
    } else if let Some(py) = snap.thread(t.tid) {
        // One name per physical frame: frames at one address are one call with its inlined
        // functions (an eval loop inlined into itself counts once).
        let groups = physical_frames(&t.stack);
        let native: Vec<&str> = groups
            .iter()
            .map(|g| {
                let names = t.stack[g.clone()]
                    .iter()
                    .filter_map(|f| f.function.as_deref());
                let mut names = names.peekable();
                let first = names.peek().copied().unwrap_or("");
                names
                    .find(|n| {
                        n.starts_with("_PyEval_EvalFrameDefault")
                            || n.starts_with("PyEval_EvalFrameEx")
                    })
                    .unwrap_or(first)
            })
            .collect();
        let m = merge(&native, &py.frames);
        if m.ok {
            t.stack = m
                .frames
                .iter()
                .flat_map(|mf| match *mf {
                    MergedFrame::Native(i) => t.stack[groups[i].clone()].to_vec(),
                    MergedFrame::Python(j) => vec![py_frame(&py.frames[j])],
                })
                .collect();
        } else {
            // Not guessed: the Python frames follow the native ones, and the note says why.
            t.stack.extend(py.frames.iter().map(py_frame));
            t.lang_note = Some(format!(
                "Python frames listed after the native ones (not merged: {})",
                clean(m.reason.as_deref().unwrap_or("?"))
            ));
        }
        if let Some(why) = &py.incomplete {
            t.lang_note = Some(format!("Python frames incomplete: {}", clean(why)));
        }
    }
    // A thread in take_gil waits for whoever holds the GIL.
    if snap.gil_holder == Some(t.tid) {
        t.holds.push("the GIL".into());
    }
    // A thread asleep on the GIL's futex words (or in take_gil, where that has a name) waits
    // for whoever holds the GIL.
    let on_gil_words = match (&t.wait, snap.gil_range) {
        (Some(Wait::Futex { addr, .. }), Some((start, end))) => (start..end).contains(addr),
        _ => false,
    };
    let waits_for_gil = on_gil_words
        || t.stack.iter().any(|f| {
            f.function
                .as_deref()
                .is_some_and(|n| n.starts_with("take_gil"))
        });
    if waits_for_gil && let Some(Wait::Futex { .. }) = &t.wait {
        let holder = snap.gil_holder.filter(|&h| h != t.tid);
        if let Some(Wait::Futex {
            owner,
            owner_name,
            runtime_object,
            ..
        }) = &mut t.wait
        {
            *runtime_object = Some(match holder {
                Some(_) => "waiting for the GIL".into(),
                None => "waiting for the GIL (no thread holds it now)".into(),
            });
            if let Some(h) = holder {
                *owner = Some(h);
                *owner_name = names.get(&h).cloned();
            }
        }
    }
}

/// Runs of consecutive frames at one address (a call and the functions inlined into it).
fn physical_frames(stack: &[Frame]) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, f) in stack.iter().enumerate() {
        match out.last_mut() {
            Some(r) if f.addr != 0 && stack[r.start].addr == f.addr => r.end = i + 1,
            _ => out.push(i..i + 1),
        }
    }
    out
}

/// A Java frame as a report frame: `pkg.Class.method`, `Class.java:line`.
fn java_frame(f: &JavaFrame) -> Frame {
    let (file, line) = match &f.source {
        Source::File { file, line } => (Some(clean(file)), *line),
        Source::Native => (Some("Native Method".into()), None),
        Source::Unknown => (None, None),
    };
    Frame {
        function: Some(clean(&f.method)),
        file,
        line,
        module: f.module.as_deref().map(clean),
        lang: Some(Lang::Java),
        ..Frame::default()
    }
}

/// Native frames that belong to the JVM's call into Java: the span of interpreter, JIT and
/// stub frames (unnamed, or named from the perf map) between the VM's own C++ frames and
/// `JavaCalls::call_helper`.
fn java_span(stack: &[Frame]) -> Option<(usize, usize)> {
    // A named native frame (the VM's C++, libc, a JNI library): not Java code.
    let is_vm = |f: &Frame| f.function.is_some() && f.module.as_deref() != Some("[perf map]");
    let end = stack.iter().position(|f| {
        f.function
            .as_deref()
            .is_some_and(|n| n.starts_with("JavaCalls::call_helper") || n == "call_stub")
    })?;
    let start = stack[..end].iter().rposition(is_vm).map_or(0, |i| i + 1);
    Some((start, end))
}

fn lock_text(kind: LockKind, addr: Option<u64>, class: Option<&str>) -> String {
    let what = match kind {
        LockKind::WaitingToLock => "waiting to lock",
        LockKind::WaitingOn => "waiting on",
        LockKind::ParkingFor => "parking to wait for",
        LockKind::WaitingToReLock => "waiting to re-lock in wait()",
        LockKind::Locked => "locked",
        LockKind::Eliminated => "eliminated",
    };
    let obj = match addr {
        Some(a) => format!("<{a:#018x}>"),
        None => "<no object reference available>".into(),
    };
    match class {
        Some(c) => format!("{what} {obj} (a {})", clean(c)),
        None => format!("{what} {obj}"),
    }
}

fn java_thread(t: &mut ThreadFacts, dump: &ThreadDump) {
    if t.state == crate::report::ThreadState::Exited {
        return;
    }
    let Some(jt) = dump.thread_by_nid(t.tid) else {
        return;
    };
    if let Some(state) = &jt.state {
        t.lang_note = Some(format!("Java thread state: {}", clean(state)));
    } else if !jt.vm_state.is_empty() {
        t.lang_note = Some(format!("JVM thread: {}", clean(&jt.vm_state)));
    }
    if !jt.frames.is_empty() {
        let java: Vec<Frame> = jt.frames.iter().map(java_frame).collect();
        match java_span(&t.stack) {
            Some((start, end)) => {
                t.stack.splice(start..end, java);
            }
            None => {
                t.stack.extend(java);
                let note = "Java frames listed after the native ones (no JavaCalls::call_helper in the native stack)";
                t.lang_note = Some(match t.lang_note.take() {
                    Some(n) => format!("{n}; {note}"),
                    None => note.into(),
                });
            }
        }
    }
    t.holds = jt
        .monitors_held()
        .iter()
        .map(|l| lock_text(LockKind::Locked, l.address, l.class.as_deref()))
        .collect();
    if let Some(w) = dump.wait_of(jt)
        && let Some(Wait::Futex {
            owner,
            owner_name,
            runtime_object,
            ..
        }) = &mut t.wait
    {
        *runtime_object = Some(lock_text(w.kind, w.lock.address, w.lock.class.as_deref()));
        if let Some(o) = w.owner.as_deref().and_then(|n| dump.thread(n)) {
            *owner = o.nid;
            *owner_name = Some(clean(&o.name));
        }
    }
}

fn java_notes(pid: u32, dump: &ThreadDump) -> Vec<String> {
    let mut notes = vec![format!(
        "pid {pid}: Java frames and monitors from the JVM's thread dump ({}, {} threads)",
        dump.vm
            .as_deref()
            .map(clean)
            .unwrap_or_else(|| "HotSpot".into()),
        dump.threads.len()
    )];
    for d in &dump.deadlocks {
        let chain: Vec<String> = d
            .links
            .iter()
            .map(|l| {
                format!(
                    "{} {} held by {}",
                    clean(&l.thread),
                    clean(&l.waiting_for),
                    l.held_by
                        .as_deref()
                        .map(clean)
                        .unwrap_or_else(|| "?".into())
                )
            })
            .collect();
        notes.push(format!(
            "pid {pid}: the JVM reports a Java-level deadlock: {}",
            chain.join("; ")
        ));
    }
    notes.extend(
        dump.notes
            .iter()
            .map(|n| format!("pid {pid}: {}", clean(n))),
    );
    notes
}

#[cfg(test)]
mod tests;
