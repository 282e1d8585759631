//! Walking the interpreter's own lists in the target's memory: interpreters → thread states →
//! frames → code objects → strings and line tables. Every pointer is followed at most a bounded
//! number of times, lists are checked for cycles, and a failed read ends the walk it belongs
//! to with a reason, never the whole snapshot unless the very first links are bad.

use super::layout::{
    BYTES_SVAL, DebugOffsets, FRAME_OWNED_BY_CSTACK, FrameLayout, FrameLink, GilLink, Layout,
    OB_SIZE, OB_TYPE, STR_LENGTH, STR_STATE,
};
use super::linetable::line_at;
use super::{Gil, PyError, PyFrame, PyProcess, PySnapshot, PyThread};
use crate::mem::{MemError, Memory};
use std::collections::{HashMap, HashSet};

/// More interpreters than this in one process is taken as a corrupt list.
const MAX_INTERPRETERS: usize = 64;
/// More thread states than this per interpreter is taken as a corrupt list.
const MAX_THREADS: usize = 4096;
/// Frames kept per thread; deeper stacks are cut (and say so).
pub const MAX_FRAMES: usize = 1024;
/// Characters kept of a name or file name.
const MAX_STR_CHARS: usize = 1024;
/// Largest line table read (bytes).
const MAX_LINE_TABLE: usize = 1 << 20;

fn read_ptr(mem: &dyn Memory, addr: u64) -> Result<u64, MemError> {
    mem.read_u64(addr)
}

fn read_u8(mem: &dyn Memory, addr: u64) -> Result<u8, MemError> {
    let mut b = [0u8; 1];
    mem.read(addr, &mut b)?;
    Ok(b[0])
}

fn read_i32(mem: &dyn Memory, addr: u64) -> Result<i32, MemError> {
    Ok(mem.read_u32(addr)? as i32)
}

/// The layout to use for this process, and a note saying where it came from.
fn choose_layout(p: &PyProcess, mem: &dyn Memory) -> Result<(Layout, String), PyError> {
    let table = p.layout;
    if p.minor < 13 {
        return Ok((
            table,
            format!("layout: built-in table for CPython 3.{}", p.minor),
        ));
    }
    match Layout::from_debug_offsets(mem, p.runtime) {
        Ok(DebugOffsets::Found {
            version_hex,
            layout,
        }) => Ok((
            *layout,
            format!(
                "layout: _Py_DebugOffsets of the running interpreter (version {})",
                super::version_text_from_hex(version_hex as u32)
            ),
        )),
        Ok(DebugOffsets::UnknownVersion(v)) => Err(PyError::UnknownVersion(format!(
            "_Py_DebugOffsets says CPython {} (or a free-threaded build): its layout of the offsets is not known to this reader (3.8–3.13)",
            super::version_text_from_hex(v as u32)
        ))),
        Ok(DebugOffsets::Absent) => Ok((
            table,
            "layout: built-in table for CPython 3.13 (no _Py_DebugOffsets cookie found)".into(),
        )),
        Err(e) => Err(PyError::Unreadable(format!(
            "_PyRuntime at {:#x}: {e}",
            p.runtime
        ))),
    }
}

/// Everything about one code object that frames need.
struct Code {
    function: String,
    file: String,
    first: i64,
    table: Vec<u8>,
}

struct Walker<'a> {
    p: &'a PyProcess,
    l: Layout,
    mem: &'a dyn Memory,
    codes: HashMap<u64, Result<std::rc::Rc<Code>, String>>,
}

#[cfg(test)]
pub(super) fn test_string(p: &PyProcess, mem: &dyn Memory, addr: u64) -> Result<String, String> {
    let w = Walker {
        p,
        l: p.layout,
        mem,
        codes: HashMap::new(),
    };
    w.string(addr)
}

pub(super) fn snapshot(p: &PyProcess, mem: &dyn Memory) -> Result<PySnapshot, PyError> {
    let (l, layout_note) = choose_layout(p, mem)?;
    let mut notes = p.notes.clone();
    notes.push(layout_note);
    let mut w = Walker {
        p,
        l,
        mem,
        codes: HashMap::new(),
    };
    let unreadable = |what: &str, e: MemError| PyError::Unreadable(format!("{what}: {e}"));
    let mut interp = read_ptr(mem, p.runtime.wrapping_add(l.runtime_interpreters_head))
        .map_err(|e| unreadable("_PyRuntime.interpreters.head", e))?;
    if interp == 0 {
        return Err(PyError::Inconsistent(
            "_PyRuntime.interpreters.head is NULL: the interpreter is not initialized yet, or is finalizing".into(),
        ));
    }
    let mut threads = Vec::new();
    let mut tstates: Vec<(u64, Option<u32>)> = Vec::new();
    let mut gils: Vec<Gil> = Vec::new();
    let mut gil_ranges: Vec<Option<(u64, u64)>> = Vec::new();
    let mut seen_interps = HashSet::new();
    let mut first_checked = false;
    while interp != 0 {
        if !seen_interps.insert(interp) || seen_interps.len() > MAX_INTERPRETERS {
            notes.push(format!(
                "the interpreter list loops or is longer than {MAX_INTERPRETERS}: stopped there"
            ));
            break;
        }
        let head = read_ptr(mem, interp.wrapping_add(l.interp_threads_head));
        let mut ts = match head {
            Ok(ts) => ts,
            Err(e) if !first_checked => return Err(unreadable("the thread list head", e)),
            Err(e) => {
                notes.push(format!(
                    "interpreter at {interp:#x}: thread list unreadable: {e}"
                ));
                0
            }
        };
        let mut seen = HashSet::new();
        while ts != 0 {
            if !seen.insert(ts) || seen.len() > MAX_THREADS {
                notes.push(format!(
                    "a thread list loops or is longer than {MAX_THREADS}: stopped there"
                ));
                break;
            }
            let back = read_ptr(mem, ts.wrapping_add(l.ts_interp));
            if back != Ok(interp) {
                let msg = format!(
                    "thread state at {ts:#x} does not point back to its interpreter {interp:#x} ({back:x?}): the 3.{} layout does not match this build",
                    p.minor
                );
                if !first_checked {
                    return Err(PyError::Inconsistent(msg));
                }
                notes.push(msg);
                break;
            }
            first_checked = true;
            let t = w.thread(ts);
            tstates.push((ts, t.tid));
            threads.push(t);
            ts = match read_ptr(mem, ts.wrapping_add(l.ts_next)) {
                Ok(n) => n,
                Err(e) => {
                    notes.push(format!("thread state at {ts:#x}: next unreadable: {e}"));
                    0
                }
            };
        }
        gils.push(w.gil(interp));
        gil_ranges.push(w.gil_range(interp));
        interp = match read_ptr(mem, interp.wrapping_add(l.interp_next)) {
            Ok(n) => n,
            Err(e) => {
                notes.push(format!("interpreter at {interp:#x}: next unreadable: {e}"));
                0
            }
        };
    }
    if !first_checked {
        return Err(PyError::Inconsistent(format!(
            "no thread state in any interpreter: the interpreter is starting or finalizing, or the 3.{} layout does not match this build",
            p.minor
        )));
    }
    // The main interpreter is the last one in the list; its GIL is the one Python threads of
    // the main interpreter wait for (3.8–3.11 have one GIL in the runtime anyway).
    let gil = gils.pop().unwrap_or(Gil::Unknown("no interpreter".into()));
    let gil = match gil {
        Gil::Held { tstate, .. } => Gil::Held {
            tstate,
            tid: tstates.iter().find(|(a, _)| *a == tstate).and_then(|t| t.1),
        },
        other => other,
    };
    if let Gil::Held { tid: None, tstate } = gil {
        notes.push(format!(
            "the GIL is held by thread state {tstate:#x}, which is not in the thread list (a thread that is exiting?)"
        ));
    }
    let tid_note = if l.ts_native_thread_id.is_some() {
        "tids: PyThreadState.native_thread_id".to_string()
    } else {
        format!(
            "tids: glibc's struct pthread at PyThreadState.thread_id, tid at +{:#x}",
            p.pthread_tid_offset
        )
    };
    notes.push(tid_note);
    let gil_holder = match gil {
        Gil::Held { tid, .. } => tid,
        _ => None,
    };
    Ok(PySnapshot {
        threads,
        gil,
        gil_holder,
        gil_range: gil_ranges.pop().flatten(),
        notes,
    })
}

/// `struct _gil_runtime_state` (3.8–3.13, with FORCE_SWITCHING): interval, last_holder,
/// locked, switch_number, cond, mutex, switch_cond, switch_mutex.
const GIL_STATE_SIZE: u64 = 208;
/// Offset of `last_holder` in it.
const GIL_LAST_HOLDER: u64 = 8;

impl Walker<'_> {
    /// Where the GIL's state (its condition variables and mutexes: the futex words a thread
    /// waiting for the GIL sleeps on) is in the target.
    fn gil_range(&self, interp: u64) -> Option<(u64, u64)> {
        let start = match self.l.gil {
            GilLink::Runtime { last_holder, .. } => self.p.runtime.checked_add(last_holder)?,
            GilLink::Interp {
                gil_ptr,
                last_holder,
                ..
            } => read_ptr(self.mem, interp.wrapping_add(gil_ptr))
                .ok()
                .filter(|&g| g != 0)?
                .checked_add(last_holder)?,
        }
        .checked_sub(GIL_LAST_HOLDER)?;
        Some((start, start.checked_add(GIL_STATE_SIZE)?))
    }

    fn gil(&self, interp: u64) -> Gil {
        let (base, last_holder, locked) = match self.l.gil {
            GilLink::Runtime {
                last_holder,
                locked,
            } => (self.p.runtime, last_holder, locked),
            GilLink::Interp {
                gil_ptr,
                last_holder,
                locked,
            } => match read_ptr(self.mem, interp.wrapping_add(gil_ptr)) {
                Ok(0) => return Gil::Unknown("interp->ceval.gil is NULL".into()),
                Ok(g) => (g, last_holder, locked),
                Err(e) => return Gil::Unknown(format!("interp->ceval.gil unreadable: {e}")),
            },
        };
        let locked = match self.mem.read_u32(base.wrapping_add(locked)) {
            Ok(v) => v != 0,
            Err(e) => return Gil::Unknown(format!("gil.locked unreadable: {e}")),
        };
        if !locked {
            return Gil::Free;
        }
        match read_ptr(self.mem, base.wrapping_add(last_holder)) {
            Ok(0) => Gil::Unknown("the GIL is locked but gil.last_holder is NULL".into()),
            Ok(tstate) => Gil::Held { tstate, tid: None },
            Err(e) => Gil::Unknown(format!("gil.last_holder unreadable: {e}")),
        }
    }

    fn tid(&self, ts: u64) -> Option<u32> {
        let tid = match self.l.ts_native_thread_id {
            Some(off) => read_ptr(self.mem, ts.wrapping_add(off)).ok()?,
            None => {
                let pthread = read_ptr(self.mem, ts.wrapping_add(self.l.ts_thread_id)).ok()?;
                if pthread == 0 {
                    return None;
                }
                u64::from(
                    self.mem
                        .read_u32(pthread.checked_add(self.p.pthread_tid_offset)?)
                        .ok()?,
                )
            }
        };
        u32::try_from(tid).ok().filter(|&t| t > 0 && t < 1 << 22)
    }

    fn thread(&mut self, ts: u64) -> PyThread {
        let tid = self.tid(ts);
        let mut t = PyThread {
            tid,
            tstate: ts,
            frames: Vec::new(),
            why_empty: None,
            incomplete: None,
        };
        let first = match self.l.ts_frame {
            FrameLink::Direct(off) => read_ptr(self.mem, ts.wrapping_add(off)),
            FrameLink::ViaCFrame {
                cframe,
                current_frame,
            } => match read_ptr(self.mem, ts.wrapping_add(cframe)) {
                Ok(0) => Ok(0),
                Ok(c) => read_ptr(self.mem, c.wrapping_add(current_frame)),
                Err(e) => Err(e),
            },
        };
        let first = match first {
            Ok(f) => f,
            Err(e) => {
                t.why_empty = Some(format!("its current frame is unreadable: {e}"));
                return t;
            }
        };
        if let Err(why) = self.frames(first, &mut t.frames) {
            t.incomplete = Some(why);
        }
        if t.frames.is_empty() {
            t.why_empty = Some(match t.incomplete.take() {
                Some(why) => why,
                None => {
                    "the thread is not running Python code (its thread state holds no frame)".into()
                }
            });
        }
        t
    }

    /// Fill `out` innermost first; Err says why the walk stopped early.
    fn frames(&mut self, mut f: u64, out: &mut Vec<PyFrame>) -> Result<(), String> {
        let mut seen = HashSet::new();
        while f != 0 {
            if !seen.insert(f) {
                return Err(format!("the frame list loops at {f:#x}"));
            }
            if out.len() >= MAX_FRAMES {
                return Err(format!("deeper than {MAX_FRAMES} frames: cut"));
            }
            let err = |what: &str, e: MemError| format!("frame at {f:#x}: {what}: {e}");
            match self.l.frame {
                FrameLayout::Object {
                    back,
                    code,
                    lasti,
                    lasti_in_units,
                } => {
                    let code =
                        read_ptr(self.mem, f.wrapping_add(code)).map_err(|e| err("f_code", e))?;
                    let lasti =
                        read_i32(self.mem, f.wrapping_add(lasti)).map_err(|e| err("f_lasti", e))?;
                    let offset = i64::from(lasti) * if lasti_in_units { 2 } else { 1 };
                    out.push(self.frame(code, offset, true)?);
                    f = read_ptr(self.mem, f.wrapping_add(back)).map_err(|e| err("f_back", e))?;
                }
                FrameLayout::Interpreter {
                    previous,
                    code,
                    instr,
                    is_entry,
                    owner,
                } => {
                    let next = read_ptr(self.mem, f.wrapping_add(previous))
                        .map_err(|e| err("previous", e))?;
                    if let Some(owner) = owner {
                        let o = read_u8(self.mem, f.wrapping_add(owner))
                            .map_err(|e| err("owner", e))?;
                        if o == FRAME_OWNED_BY_CSTACK {
                            // The shim an eval loop pushes: the frame above it is where that
                            // native _PyEval_EvalFrameDefault started.
                            if let Some(last) = out.last_mut() {
                                last.entry = true;
                            }
                            f = next;
                            continue;
                        }
                    }
                    let code =
                        read_ptr(self.mem, f.wrapping_add(code)).map_err(|e| err("f_code", e))?;
                    let instr =
                        read_ptr(self.mem, f.wrapping_add(instr)).map_err(|e| err("instr", e))?;
                    let entry = match is_entry {
                        Some(off) => {
                            read_u8(self.mem, f.wrapping_add(off))
                                .map_err(|e| err("is_entry", e))?
                                != 0
                        }
                        None => false,
                    };
                    let start = code.wrapping_add(self.l.co_code_adaptive.unwrap_or(0));
                    let offset = instr.wrapping_sub(start) as i64;
                    // An instruction pointer outside any sane code size: no line, not garbage.
                    let offset = if offset.unsigned_abs() > 1 << 28 {
                        i64::MAX
                    } else {
                        offset
                    };
                    out.push(self.frame(code, offset, entry)?);
                    f = next;
                }
            }
        }
        // The outermost frame was entered from C, whatever the version.
        if let Some(last) = out.last_mut() {
            last.entry = true;
        }
        Ok(())
    }

    fn frame(&mut self, code: u64, offset: i64, entry: bool) -> Result<PyFrame, String> {
        let c = self.code(code)?;
        let line = if offset == i64::MAX {
            None
        } else {
            line_at(self.l.line_table, &c.table, c.first, offset)
        };
        Ok(PyFrame {
            function: c.function.clone(),
            file: c.file.clone(),
            line,
            entry,
        })
    }

    fn code(&mut self, addr: u64) -> Result<std::rc::Rc<Code>, String> {
        if let Some(c) = self.codes.get(&addr) {
            return c.clone();
        }
        let c = self.read_code(addr).map(std::rc::Rc::new);
        self.codes.insert(addr, c.clone());
        c
    }

    fn read_code(&self, addr: u64) -> Result<Code, String> {
        let l = &self.l;
        let m = self.mem;
        let err = |what: &str, e: MemError| format!("code object at {addr:#x}: {what}: {e}");
        if let Some(want) = self.p.code_type {
            let ty = read_ptr(m, addr.wrapping_add(OB_TYPE)).map_err(|e| err("ob_type", e))?;
            if ty != want {
                return Err(format!(
                    "{addr:#x} is not a code object (type {ty:#x}, PyCode_Type is {want:#x})"
                ));
            }
        }
        let name_ptr = l
            .co_qualname
            .map(|off| read_ptr(m, addr.wrapping_add(off)))
            .filter(|r| r.as_ref().is_ok_and(|&p| p != 0))
            .unwrap_or_else(|| read_ptr(m, addr.wrapping_add(l.co_name)))
            .map_err(|e| err("co_name", e))?;
        let function = self
            .string(name_ptr)
            .map_err(|e| format!("function name: {e}"))?;
        let file_ptr =
            read_ptr(m, addr.wrapping_add(l.co_filename)).map_err(|e| err("co_filename", e))?;
        let file = self
            .string(file_ptr)
            .map_err(|e| format!("file name: {e}"))?;
        let first = i64::from(
            read_i32(m, addr.wrapping_add(l.co_firstlineno))
                .map_err(|e| err("co_firstlineno", e))?,
        );
        // A missing line table costs the line, not the frame.
        let table = read_ptr(m, addr.wrapping_add(l.co_linetable))
            .ok()
            .and_then(|t| self.bytes(t).ok())
            .unwrap_or_default();
        Ok(Code {
            function,
            file,
            first,
            table,
        })
    }

    fn bytes(&self, addr: u64) -> Result<Vec<u8>, String> {
        if let Some(want) = self.p.bytes_type {
            let ty = read_ptr(self.mem, addr.wrapping_add(OB_TYPE)).map_err(|e| e.to_string())?;
            if ty != want {
                return Err(format!("{addr:#x} is not a bytes object"));
            }
        }
        let len = read_ptr(self.mem, addr.wrapping_add(OB_SIZE)).map_err(|e| e.to_string())?;
        let len = usize::try_from(len).map_err(|_| "bad length".to_string())?;
        self.mem
            .read_vec(addr.wrapping_add(BYTES_SVAL), len, MAX_LINE_TABLE)
            .map_err(|e| e.to_string())
    }

    /// A `str` object's text (at most MAX_STR_CHARS characters, then "…").
    fn string(&self, addr: u64) -> Result<String, String> {
        let m = self.mem;
        let e = |e: MemError| format!("str at {addr:#x}: {e}");
        if addr == 0 {
            return Err("NULL str".into());
        }
        if let Some(want) = self.p.unicode_type {
            let ty = read_ptr(m, addr.wrapping_add(OB_TYPE)).map_err(e)?;
            if ty != want {
                return Err(format!("{addr:#x} is not a str"));
            }
        }
        let len = read_ptr(m, addr.wrapping_add(STR_LENGTH)).map_err(e)?;
        let state = m.read_u32(addr.wrapping_add(STR_STATE)).map_err(e)?;
        let (kind, compact, ascii) = ((state >> 2) & 7, state >> 5 & 1 != 0, state >> 6 & 1 != 0);
        let width = match kind {
            1 | 2 | 4 => kind as usize,
            _ => {
                return Err(format!(
                    "str at {addr:#x}: kind {kind} (not a ready string)"
                ));
            }
        };
        if ascii && width != 1 {
            return Err(format!("str at {addr:#x}: inconsistent state {state:#x}"));
        }
        let data = match (compact, ascii) {
            (true, true) => addr.wrapping_add(self.l.ascii_size),
            (true, false) => addr.wrapping_add(self.l.compact_size),
            // A legacy string: the characters are elsewhere (PyUnicodeObject.data.any).
            (false, _) => read_ptr(m, addr.wrapping_add(self.l.compact_size)).map_err(e)?,
        };
        let len = usize::try_from(len).map_err(|_| format!("str at {addr:#x}: bad length"))?;
        let take = len.min(MAX_STR_CHARS);
        let raw = m
            .read_vec(data, take * width, MAX_STR_CHARS * 4)
            .map_err(e)?;
        let mut s: String = match width {
            1 => raw.iter().map(|&b| char::from(b)).collect(),
            2 => raw
                .chunks_exact(2)
                .map(|c| {
                    char::from_u32(u32::from(u16::from_le_bytes([c[0], c[1]])))
                        .unwrap_or('\u{fffd}')
                })
                .collect(),
            _ => raw
                .chunks_exact(4)
                .map(|c| {
                    char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .unwrap_or('\u{fffd}')
                })
                .collect(),
        };
        if take < len {
            s.push('…');
        }
        Ok(s)
    }
}
