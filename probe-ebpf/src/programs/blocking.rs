//! What happens at entry and exit of a probed blocking call. Hook-independent: the fentry/fexit,
//! raw-tracepoint and syscall-tracepoint wrappers in [`super::hooks`] all call these two.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns, bpf_probe_read_user,
        generated,
    },
};
use probe_ebpf::{
    CALL_NONE, Call, EventHeader, HIST_BUCKETS, InFlight, STACK_CHUNK, STACK_COPY_MAX,
    SlowCallEvent, TaskState, UserRegs, counter, event_kind, futex_op, inflight_flags, is_restart,
};

use crate::maps::{count, is_target, reserve, shutdown_ts, task_state, threshold_ns};

/// The syscall's arguments and the caller's user registers, from a `struct pt_regs` that holds the
/// user registers as saved at syscall entry (the fentry argument, the raw tracepoint argument, or
/// `bpf_task_pt_regs(current)`). The pointer is BTF-typed, so these are direct loads.
pub struct Regs(pub *const pt_regs);

impl Regs {
    /// Syscall argument `i` (x86_64 syscall ABI: rdi, rsi, rdx, r10, r8, r9).
    #[inline(always)]
    pub fn arg(&self, i: usize) -> u64 {
        let r = unsafe { &*self.0 };
        match i {
            0 => r.rdi,
            1 => r.rsi,
            2 => r.rdx,
            3 => r.r10,
            4 => r.r8,
            _ => r.r9,
        }
    }

    #[inline(always)]
    pub fn user_regs(&self) -> UserRegs {
        let r = unsafe { &*self.0 };
        UserRegs {
            ip: r.rip,
            sp: r.rsp,
            bp: r.rbp,
        }
    }
}

/// Read a `struct timespec` from user memory, in ns.
#[inline(always)]
fn user_timespec_ns(ptr: u64) -> Option<u64> {
    let ts = unsafe { bpf_probe_read_user(ptr as *const [i64; 2]) }.ok()?;
    Some(
        (ts[0] as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(ts[1] as u64),
    )
}

/// Fill `f.timeout_ns`/`f.flags` from a timespec pointer argument (NULL: no timeout).
#[inline(always)]
fn timeout_from_ptr(f: &mut InFlight, ptr: u64, absolute: bool, realtime: bool) {
    if ptr == 0 {
        return;
    }
    match user_timespec_ns(ptr) {
        Some(ns) => {
            f.timeout_ns = ns;
            f.flags |= inflight_flags::HAS_TIMEOUT;
            if absolute {
                f.flags |= inflight_flags::TIMEOUT_ABSOLUTE;
            }
            if realtime {
                f.flags |= inflight_flags::TIMEOUT_REALTIME;
            }
        }
        None => f.flags |= inflight_flags::TIMEOUT_UNREADABLE,
    }
}

/// Syscall entry: record the call in flight for a target thread.
#[inline(always)]
pub fn enter(call: Call, regs: &Regs) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_target(tgid) {
        return;
    }
    let mut f = InFlight {
        start_ns: 0,
        obj: regs.arg(0),
        arg: 0,
        timeout_ns: 0,
        call: call as u16,
        flags: 0,
        _pad: 0,
        interrupted_ns: 0,
    };
    match call {
        Call::Futex => {
            let op = regs.arg(1) as u32;
            if !futex_op::is_wait(op) {
                // Wakes are not blocks; remember what this thread woke, for "who woke it".
                if futex_op::is_wake(op) {
                    let task = unsafe { bpf_get_current_task_btf() };
                    if let Some(st) = task_state(task.cast(), true) {
                        if st.inflight.start_ns == 0 {
                            // Made just now, zeroed: call 0 would read as a futex wait.
                            st.inflight.call = CALL_NONE;
                        }
                        st.woke_addr = regs.arg(0);
                        st.woke_count += 1;
                    }
                }
                return;
            }
            f.arg = op as u64;
            let realtime = op & futex_op::CLOCK_REALTIME != 0;
            timeout_from_ptr(
                &mut f,
                regs.arg(3),
                futex_op::timeout_is_absolute(op),
                realtime,
            );
        }
        Call::FutexWaitv => {
            // struct futex_waitv { u64 val; u64 uaddr; u32 flags; u32 reserved; }[nr]
            let waiters = regs.arg(0);
            f.obj = unsafe { bpf_probe_read_user((waiters + 8) as *const u64) }.unwrap_or(0);
            f.arg = regs.arg(1);
            let realtime = regs.arg(4) == 0; // CLOCK_REALTIME
            timeout_from_ptr(&mut f, regs.arg(3), true, realtime);
        }
        Call::EpollWait | Call::EpollPwait => {
            f.arg = regs.arg(2);
            let ms = regs.arg(3) as i32;
            if ms >= 0 {
                f.timeout_ns = (ms as u64) * 1_000_000;
                f.flags |= inflight_flags::HAS_TIMEOUT;
            }
        }
        Call::EpollPwait2 => {
            f.arg = regs.arg(2);
            timeout_from_ptr(&mut f, regs.arg(3), false, false);
        }
        Call::Recvmmsg => {
            f.arg = regs.arg(2);
            timeout_from_ptr(&mut f, regs.arg(4), false, false);
        }
        Call::Read | Call::Readv | Call::Recvfrom | Call::Recvmsg => {}
    }
    let task = unsafe { bpf_get_current_task_btf() };
    let Some(st) = task_state(task.cast(), true) else {
        return;
    };
    let prev = st.inflight;
    let now = unsafe { bpf_ktime_get_ns() };
    if prev.call != CALL_NONE && prev.interrupted_ns != 0 {
        // Restarts follow the handler at once; a late re-entry is a new wait.
        if prev.call == f.call && prev.obj == f.obj && now - prev.interrupted_ns < RESTART_WINDOW_NS
        {
            // The same wait again right after a signal handler: one block, not a wake-up.
            st.inflight.interrupted_ns = 0;
            return;
        }
        // The interrupted call really ended when it was interrupted.
        account(
            st,
            prev.call as usize,
            prev.interrupted_ns.saturating_sub(prev.start_ns),
        );
    }
    f.start_ns = now;
    st.inflight = f;
}

/// How soon after an interruption a re-entry of the same wait still counts as a restart.
const RESTART_WINDOW_NS: u64 = 50_000_000;

/// Add one call's duration to the thread's histogram for `call`.
#[inline(always)]
pub fn account(st: &mut TaskState, call: usize, dur: u64) {
    let Some(s) = st.stats.get_mut(call) else {
        return;
    };
    s.count += 1;
    s.total_ns += dur;
    if dur > s.max_ns {
        s.max_ns = dur;
    }
    if let Some(b) = s.buckets.get_mut(bucket(dur)) {
        *b += 1;
    }
}

/// log2 bucket of a duration in ns.
#[inline(always)]
fn bucket(ns: u64) -> usize {
    let b = 63 - (ns | 1).leading_zeros() as usize;
    if b >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        b
    }
}

/// Syscall exit: account the call's duration; send it with its stack when it was slow.
#[inline(always)]
pub fn exit(call: Call, regs: &Regs, ret: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid) {
        return;
    }
    if call == Call::Futex && !futex_op::is_wait(regs.arg(1) as u32) {
        return; // nothing was recorded at entry: skip the storage lookup
    }
    let task = unsafe { bpf_get_current_task_btf() };
    let Some(st) = task_state(task.cast(), false) else {
        return;
    };
    let f = st.inflight;
    if f.call != call as u16 || f.start_ns == 0 {
        return; // entered before we attached, or storage was unavailable at entry
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if is_restart(ret) {
        // Interrupted by a signal; the kernel restarts it after the handler (or the caller
        // retries): keep the record so the block continues. Accounted when it really ends.
        st.inflight.interrupted_ns = now;
        return;
    }
    st.inflight.call = CALL_NONE;
    st.inflight.interrupted_ns = 0;
    let dur = now.saturating_sub(f.start_ns);
    account(st, call as usize, dur);

    let sd = shutdown_ts();
    if sd != 0 && now >= sd {
        st.wakes_after_signal += 1;
        st.last_return_after_signal_ns = now;
    }

    if dur >= threshold_ns() {
        send_slow_call(pid_tgid, now, f, dur, ret, regs.user_regs());
    }
}

/// Send a slow call with a copy of the top of the user stack, enough for a DWARF unwind.
#[inline(always)]
fn send_slow_call(pid_tgid: u64, now: u64, f: InFlight, dur: u64, ret: i64, regs: UserRegs) {
    let Some(mut entry) = reserve::<SlowCallEvent>(counter::DROP_SLOW_CALL) else {
        return;
    };
    let e = entry.as_mut_ptr();
    unsafe {
        let head = &mut (*e).head;
        head.hdr = EventHeader {
            kind: event_kind::SLOW_CALL,
            tid: pid_tgid as u32,
            tgid: (pid_tgid >> 32) as u32,
            _pad: 0,
            ts_ns: now,
        };
        head.call = f;
        head.dur_ns = dur;
        head.ret = ret;
        head.regs = regs;
        head._pad = 0;
        let dst = (*e).stack.as_mut_ptr();
        // Whole chunks from sp rounded down: constant offsets (easy for the verifier), and an
        // aligned chunk never straddles a page, so the copy ends exactly at the stack's top.
        let base = regs.sp & !(STACK_CHUNK as u64 - 1);
        let mut copied: u32 = 0;
        for i in 0..STACK_COPY_MAX / STACK_CHUNK {
            let r = generated::bpf_probe_read_user(
                dst.add(i * STACK_CHUNK).cast(),
                STACK_CHUNK as u32,
                (base + (i * STACK_CHUNK) as u64) as *const _,
            );
            if r != 0 {
                break;
            }
            copied += STACK_CHUNK as u32;
        }
        if copied == 0 {
            count(counter::STACK_COPY_FAILED);
        }
        (*e).head.stack_addr = base;
        (*e).head.stack_len = copied;
    }
    count(counter::SLOW_CALLS);
    entry.submit(0);
}
