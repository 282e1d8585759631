//! Reading the goroutines of a live process: the allgs array in one read, each g's prefix in
//! batched reads, every g validated (a torn read is re-read once), then threads, channel
//! waits and stacks.

use std::{collections::HashMap, sync::Arc};

use super::{
    GStatus, GoFrame, GoSnapshot, Goroutine, GoroutineKey, Limits,
    binary::GoBinary,
    chan::{self, ChanCache},
    error::GoError,
    layout::{GLayout, Layout},
    role::role_of,
    stack::{self, Walk},
};
use crate::mem::Memory;

/// Largest goroutine stack accepted (Go's default max is 1 GB).
const MAX_STACK: u64 = 1 << 30;
/// Largest thread id accepted (PID_MAX_LIMIT).
const MAX_TID: u64 = 1 << 22;
/// Goroutines whose raw `g` bytes are read (and held) at once.
const G_BATCH: usize = 4096;

/// Reads goroutines of one process running `bin`, loaded at `bias` (0 unless PIE).
pub struct GoReader<'a> {
    bin: &'a GoBinary,
    bias: u64,
}

/// The fields of one g, as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawG {
    pub addr: u64,
    pub status: u32,
    pub goid: u64,
    pub waitreason: u8,
    pub waitsince: i64,
    pub sched_sp: u64,
    pub sched_pc: u64,
    pub sched_bp: u64,
    pub syscallsp: u64,
    pub syscallpc: u64,
    pub syscallbp: Option<u64>,
    pub stack_lo: u64,
    pub stack_hi: u64,
    pub m: u64,
    pub gopc: u64,
    pub startpc: u64,
    pub parent_goid: Option<u64>,
    pub waiting: u64,
}

fn word(b: &[u8], off: u64) -> u64 {
    usize::try_from(off)
        .ok()
        .and_then(|o| b.get(o..o.checked_add(8)?))
        .map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap_or_default()))
}

/// Decode a g from its bytes.
pub(crate) fn decode_g(l: &GLayout, addr: u64, b: &[u8]) -> RawG {
    let byte = |off: u64| {
        usize::try_from(off)
            .ok()
            .and_then(|o| b.get(o))
            .copied()
            .unwrap_or(0)
    };
    RawG {
        addr,
        status: word(b, l.atomicstatus) as u32,
        goid: word(b, l.goid),
        waitreason: byte(l.waitreason),
        waitsince: word(b, l.waitsince) as i64,
        sched_sp: word(b, l.sched_sp),
        sched_pc: word(b, l.sched_pc),
        sched_bp: word(b, l.sched_bp),
        syscallsp: word(b, l.syscallsp),
        syscallpc: word(b, l.syscallpc),
        syscallbp: l.syscallbp.map(|o| word(b, o)),
        stack_lo: word(b, l.stack_lo),
        stack_hi: word(b, l.stack_hi),
        m: word(b, l.m),
        gopc: word(b, l.gopc),
        startpc: word(b, l.startpc),
        parent_goid: l.parent_goid.map(|o| word(b, o)),
        waiting: l.waiting.map_or(0, |o| word(b, o)),
    }
}

/// What a read g is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Check {
    Live(GStatus),
    Dead,
    Invalid(&'static str),
}

/// Validate a g: status in range, goid > 0, stack bounds sane, the saved sp inside them,
/// pointers aligned.
pub(crate) fn check_g(g: &RawG) -> Check {
    let base = g.status & !0x1000;
    if base > 64 || g.status & !0x103f != 0 {
        return Check::Invalid("status out of range");
    }
    let Some(status) = GStatus::decode(g.status) else {
        return Check::Dead;
    };
    if g.goid == 0 || g.goid > 1 << 56 {
        return Check::Invalid("goid");
    }
    if !g.m.is_multiple_of(8) || !g.waiting.is_multiple_of(8) {
        return Check::Invalid("misaligned pointer");
    }
    if status == GStatus::Idle {
        return Check::Live(status);
    }
    if g.stack_lo == 0 || g.stack_lo >= g.stack_hi || g.stack_hi - g.stack_lo > MAX_STACK {
        return Check::Invalid("stack bounds");
    }
    let inside = |sp: u64| sp >= g.stack_lo && sp <= g.stack_hi;
    match status {
        GStatus::Running => {}
        GStatus::Syscall => {
            if !inside(g.syscallsp) {
                return Check::Invalid("syscallsp outside the stack");
            }
        }
        _ => {
            if !inside(g.sched_sp) {
                return Check::Invalid("sched.sp outside the stack");
            }
        }
    }
    Check::Live(status)
}

impl<'a> GoReader<'a> {
    pub fn new(bin: &'a GoBinary, bias: u64) -> GoReader<'a> {
        GoReader { bin, bias }
    }

    fn layout(&self) -> Result<&'a Layout, GoError> {
        self.bin.layout.as_ref().map_err(Clone::clone)
    }

    /// The g pointers: allglen first, then allgptr (the runtime publishes allgptr before
    /// allglen); the allgs slice when those are unknown or empty.
    fn g_pointers(
        &self,
        mem: &dyn Memory,
        limits: &Limits,
    ) -> Result<(Vec<u64>, &'static str), GoError> {
        let syms = self.bin.allg.as_ref().map_err(Clone::clone)?;
        let cap = limits.max_goroutines;
        let read_array = |ptr: u64, len: u64| -> Result<Vec<u64>, GoError> {
            if len as usize > cap || len > 1 << 32 {
                return Err(GoError::Inconsistent(format!(
                    "{len} goroutines listed (over the limit of {cap})"
                )));
            }
            if len == 0 {
                return Ok(Vec::new());
            }
            if !ptr_ok(ptr) {
                return Err(GoError::Inconsistent(format!("goroutine list at {ptr:#x}")));
            }
            let bytes = mem.read_vec(ptr, len as usize * 8, cap.saturating_mul(8))?;
            Ok(bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect())
        };
        if let (Some(len_at), Some(ptr_at)) = (syms.allglen, syms.allgptr) {
            let len = mem.read_u64(len_at.wrapping_add(self.bias))?;
            let ptr = mem.read_u64(ptr_at.wrapping_add(self.bias))?;
            if len > 0 || syms.allgs.is_none() {
                return Ok((read_array(ptr, len)?, "allglen/allgptr"));
            }
        }
        let at = syms
            .allgs
            .ok_or_else(|| GoError::NoAllgs("no allgs".into()))?;
        let ptr = mem.read_u64(at.wrapping_add(self.bias))?;
        let len = mem.read_u64(at.wrapping_add(self.bias).wrapping_add(8))?;
        Ok((read_array(ptr, len)?, "allgs"))
    }

    /// Read every goroutine once (their raw bytes [`G_BATCH`] at a time).
    pub fn snapshot(&self, mem: &dyn Memory, limits: Limits) -> Result<GoSnapshot, GoError> {
        let layout = self.layout()?;
        let gl = &layout.g;
        let (ptrs, _how) = self.g_pointers(mem, &limits)?;
        let mut snap = GoSnapshot {
            total: ptrs.len(),
            notes: Vec::new(),
            ..GoSnapshot::default()
        };
        let len = gl.read_len as usize;
        let good: Vec<u64> = ptrs.iter().copied().filter(|&p| ptr_ok(p)).collect();
        snap.unreadable += ptrs.len() - good.len();
        // The raw gs are read a batch at a time (the list's length is the target's word).
        let mut buf = vec![0u8; G_BATCH.min(good.len()) * len];
        let mut ok = Vec::new();
        let mut live: Vec<(RawG, GStatus)> = Vec::new();
        let mut one = vec![0u8; len];
        for (i, &addr) in good.iter().enumerate() {
            let k = i % G_BATCH;
            if k == 0 {
                let batch = &good[i..(i + G_BATCH).min(good.len())];
                ok = mem.read_many(batch, len, &mut buf[..batch.len() * len]);
            }
            let mut g = decode_g(gl, addr, &buf[k * len..(k + 1) * len]);
            let mut check = if ok[k] {
                check_g(&g)
            } else {
                Check::Invalid("unreadable")
            };
            if let Check::Invalid(_) = check {
                // Torn (the target runs on) or unlucky: read it once more.
                if mem.read(addr, &mut one).is_ok() {
                    g = decode_g(gl, addr, &one);
                    check = check_g(&g);
                }
            }
            match check {
                Check::Live(s) => live.push((g, s)),
                Check::Dead => {}
                Check::Invalid(_) => snap.unreadable += 1,
            }
        }
        // The raw gs are decoded: their bytes (hundreds per goroutine) can go now.
        drop(buf);
        if snap.unreadable > 0 {
            snap.notes.push(format!(
                "{} of {} goroutine entries could not be read or did not validate",
                snap.unreadable, snap.total
            ));
        }
        let threads = self.threads(mem, layout, &live);
        let stacks = if limits.stacks {
            self.stacks(mem, &live, &limits)
        } else {
            vec![(Vec::new(), None); live.len()]
        };
        let mut chans = ChanCache::default();
        let mut interned: HashMap<u8, Arc<str>> = HashMap::new();
        let reasons: Vec<Option<Arc<str>>> = live
            .iter()
            .map(|(g, status)| {
                matches!(status, GStatus::Waiting | GStatus::Other(_)).then(|| {
                    interned
                        .entry(g.waitreason)
                        .or_insert_with(|| Arc::from(self.reason(g.waitreason)))
                        .clone()
                })
            })
            .collect();
        // The sudogs of channel waits, in one batch.
        let sudogs: HashMap<usize, Vec<u8>> = match &layout.chan {
            Some(cl) => {
                let idx: Vec<usize> = (0..live.len())
                    .filter(|&i| {
                        ptr_ok(live[i].0.waiting)
                            && reasons[i].as_deref().and_then(chan::chan_op).is_some()
                    })
                    .collect();
                let n = cl.sudog_len as usize;
                let addrs: Vec<u64> = idx.iter().map(|&i| live[i].0.waiting).collect();
                let mut buf = vec![0u8; addrs.len() * n];
                let ok = mem.read_many(&addrs, n, &mut buf);
                idx.iter()
                    .enumerate()
                    .filter(|(k, _)| ok[*k])
                    .map(|(k, &i)| (i, buf[k * n..(k + 1) * n].to_vec()))
                    .collect()
            }
            None => HashMap::new(),
        };
        let mut cache: HashMap<u64, Arc<[GoFrame]>> = HashMap::new();
        let mut stacks_seen: HashMap<Vec<u64>, Arc<[GoFrame]>> = HashMap::new();
        let mut names: HashMap<u64, Option<Arc<str>>> = HashMap::new();
        for (i, ((((g, status), thread), (pcs, stack_note)), wait_reason)) in live
            .into_iter()
            .zip(threads)
            .zip(stacks)
            .zip(reasons)
            .enumerate()
        {
            let wait = match (
                &layout.chan,
                wait_reason.as_deref().and_then(chan::chan_op),
                sudogs.get(&i),
            ) {
                (Some(cl), Some(op), Some(sudog)) => chan::read_wait_from(
                    mem,
                    cl,
                    g.waiting,
                    sudog,
                    op,
                    limits.max_waiters,
                    &mut chans,
                ),
                _ => None,
            };
            let stack = match stacks_seen.get(&pcs) {
                Some(s) => s.clone(),
                None => {
                    let mut stack = Vec::new();
                    for &pc in &pcs {
                        let frames = self.frames_cached(pc, &mut cache);
                        stack.extend(frames.iter().cloned());
                        if stack.len() >= limits.max_frames {
                            stack.truncate(limits.max_frames);
                            break;
                        }
                    }
                    let stack: Arc<[GoFrame]> = Arc::from(stack);
                    stacks_seen.insert(pcs, stack.clone());
                    stack
                }
            };
            let created_by = (g.gopc != 0)
                .then(|| self.frames_cached(g.gopc, &mut cache).first().cloned())
                .flatten();
            let start_fn = names
                .entry(g.startpc)
                .or_insert_with(|| {
                    self.bin
                        .function_at(g.startpc.wrapping_sub(self.bias))
                        .map(Arc::from)
                })
                .clone();
            let key = GoroutineKey {
                goid: g.goid,
                status,
                wait_reason: wait_reason.clone(),
                sched_pc: g.sched_pc,
                sched_sp: g.sched_sp,
            };
            snap.goroutines.push(Goroutine {
                goid: g.goid,
                addr: g.addr,
                status,
                wait_reason,
                waitsince_ns: g.waitsince,
                thread,
                stack,
                created_by,
                role: role_of(start_fn.as_deref()),
                start_fn,
                parent_goid: g.parent_goid.filter(|&p| p != 0),
                wait,
                key,
                stack_note,
            });
        }
        Ok(snap)
    }

    fn reason(&self, n: u8) -> String {
        match self.bin.wait_reasons.get(n as usize) {
            Some(s) if !s.is_empty() => s.clone(),
            _ => format!("wait reason {n}"),
        }
    }

    /// Inline-expanded frames for a pc found in the target (a return address, or an entry pc).
    fn frames_cached(&self, pc: u64, cache: &mut HashMap<u64, Arc<[GoFrame]>>) -> Arc<[GoFrame]> {
        cache
            .entry(pc)
            .or_insert_with(|| {
                let un = pc.wrapping_sub(self.bias);
                let at_entry = self.bin.pcln.find_func(un).is_some_and(|f| f.entry == un);
                let lookup = if at_entry { un } else { un.wrapping_sub(1) };
                let mut v = self.bin.symbolize_as(lookup, un);
                if v.is_empty() {
                    v.push(GoFrame {
                        pc: un,
                        function: Arc::from("?"),
                        file: Arc::from("?"),
                        line: 0,
                        inlined: false,
                    });
                }
                Arc::from(v)
            })
            .clone()
    }

    /// m.procid of each goroutine that has an M.
    fn threads(
        &self,
        mem: &dyn Memory,
        layout: &Layout,
        live: &[(RawG, GStatus)],
    ) -> Vec<Option<u32>> {
        let mut out = vec![None; live.len()];
        let Some(procid) = layout.m_procid else {
            return out;
        };
        let idx: Vec<usize> = (0..live.len()).filter(|&i| ptr_ok(live[i].0.m)).collect();
        let addrs: Vec<u64> = idx
            .iter()
            .map(|&i| live[i].0.m.wrapping_add(procid))
            .collect();
        let mut buf = vec![0u8; addrs.len() * 8];
        let ok = mem.read_many(&addrs, 8, &mut buf);
        for (k, &i) in idx.iter().enumerate() {
            let tid = word(&buf, 8 * k as u64);
            if ok[k] && tid > 0 && tid < MAX_TID {
                out[i] = Some(tid as u32);
            }
        }
        out
    }

    /// Where each stack walk starts, then all walks in lockstep.
    fn stacks(
        &self,
        mem: &dyn Memory,
        live: &[(RawG, GStatus)],
        limits: &Limits,
    ) -> Vec<(Vec<u64>, Option<&'static str>)> {
        let mut walks = Vec::with_capacity(live.len());
        let mut notes = vec![None; live.len()];
        for (i, (g, status)) in live.iter().enumerate() {
            let (lo, hi) = (g.stack_lo, g.stack_hi);
            let w = match status {
                GStatus::Running => {
                    notes[i] = Some("running: its registers are in its thread");
                    Walk::default()
                }
                GStatus::Idle => Walk::default(),
                GStatus::Syscall => match g.syscallbp {
                    Some(bp) if bp != 0 => Walk::new(g.syscallpc, bp, lo, hi),
                    _ => self.syscall_walk(mem, g),
                },
                _ if g.sched_pc == 0 => Walk::default(),
                _ => Walk::new(g.sched_pc, g.sched_bp, lo, hi),
            };
            walks.push(w);
        }
        let goexit = self.stop_ranges();
        let stop = |pc: u64| {
            let un = pc.wrapping_sub(self.bias);
            goexit.iter().any(|&(a, b)| un > a && un <= b)
        };
        stack::walk_all(mem, &mut walks, limits.max_frames, &stop);
        walks
            .into_iter()
            .zip(notes)
            .map(|(w, n)| (w.pcs, n.or(w.note)))
            .collect()
    }

    /// Before Go 1.23 a g in a syscall has no saved frame pointer: take the caller's return
    /// address and saved frame pointer from the frame of the function that entered the
    /// syscall, located with the pclntab's frame size at syscallpc.
    fn syscall_walk(&self, mem: &dyn Memory, g: &RawG) -> Walk {
        let (lo, hi) = (g.stack_lo, g.stack_hi);
        let mut w = Walk::new(g.syscallpc, 0, lo, hi);
        let un = g.syscallpc.wrapping_sub(self.bias);
        let Some(f) = self.bin.pcln.find_func(un) else {
            return w;
        };
        let Some(delta) = self
            .bin
            .pcln
            .spdelta(&f, un)
            .and_then(|d| u64::try_from(d).ok())
        else {
            return w;
        };
        let Some(ret_at) = g.syscallsp.checked_add(delta) else {
            return w;
        };
        let Ok(ret) = mem.read_u64(ret_at) else {
            return w;
        };
        if ret == 0 {
            return w;
        }
        w.pcs.push(ret);
        if delta >= 8
            && let Ok(bp) = mem.read_u64(ret_at - 8)
        {
            w.set_bp(bp);
        } else {
            w.note = Some("in a syscall from a frameless function: callers unknown before Go 1.23");
        }
        w
    }

    /// Code ranges where a walk ends (their pc is not a frame of its own).
    fn stop_ranges(&self) -> Vec<(u64, u64)> {
        [
            "runtime.goexit",
            "runtime.mstart",
            "runtime.mstart0",
            "runtime.rt0_go",
        ]
        .iter()
        .filter_map(|n| self.bin.stop_funcs.get(*n).copied())
        .collect()
    }
}

fn ptr_ok(p: u64) -> bool {
    p != 0 && p.is_multiple_of(8)
}
