//! `--hook sched`: blocks seen by the scheduler instead of at syscall entry and exit.
//!
//! One program on the BTF tracepoint `sched_switch`, which runs at every context switch on the
//! host. For everything but a target it costs two field loads and two bit tests (the target
//! check, on the thread going out and on the one coming in); syscalls are not touched at all,
//! so unlike the raw `sys_enter`/`sys_exit` tracepoints nothing goes through the slow syscall
//! path.
//!
//! - **Switch-out** of a target thread that goes to sleep (not preempted, `__state` not
//!   running) inside a probed call (its saved user registers say so: `orig_ax` is the syscall
//!   number, `ax` still `-ENOSYS`): decode the call from the registers as the syscall hooks do
//!   at entry and start a block in task storage (or go on with one a signal interrupted).
//! - **Switch-in** of a target thread with a block open: the block ends. A signal pending for
//!   the thread means the call is being interrupted (it returns -ERESTART*/-EINTR), so the
//!   block is kept, marked interrupted, as the syscall hooks do at a restarting exit. Otherwise
//!   its duration goes into the histogram, and past the threshold a slow-call event is sent,
//!   with a stack copy when the CPU has the thread's address space loaded (the thread going out
//!   belongs to the same process); else without, and user space uses the stack it took while
//!   the call was blocked.
//!
//! Differences with the syscall hooks (docs/design.md, "Choosing the hook"): a call that
//! returns without sleeping is not a block; a call that sleeps twice is two blocks; a slow
//! call's return value is unknown. Time spent runnable after the wake-up counts, as it does
//! with the syscall hooks.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_ktime_get_ns, generated::bpf_task_pt_regs},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use probe_ebpf::{CALL_NONE, Call, inflight_flags};

use super::blocking::{Regs, begin, decode, finish, resume, send_slow_call};
use crate::maps::{
    btf_field, is_target, signal_shared_pending_off, task_blocked_off, task_mm_off,
    task_pending_off, task_pid_off, task_signal_off, task_state, task_state_off, task_tgid_off,
    threshold_ns,
};

/// `-ENOSYS`: what the x86_64 syscall entry stores in `pt_regs->ax` until the call returns.
const ENOSYS: i64 = -38;
/// `restart_syscall(2)`.
const NR_RESTART_SYSCALL: u64 = 219;

/// `sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next, ...)`. The
/// fourth argument (`prev_state`, 5.18+) is not used: `prev->__state` says the same on every
/// kernel.
#[btf_tracepoint(function = "sched_switch")]
fn sched_block(ctx: BtfTracePointContext) -> i32 {
    let prev: *const u8 = ctx.arg(1);
    let next: *const u8 = ctx.arg(2);
    let tgid_off = task_tgid_off();
    if is_target(btf_field::<u32>(prev, tgid_off)) {
        let preempt: u64 = ctx.arg(0);
        if preempt & 0xff == 0 {
            switch_out(prev);
        }
    }
    let next_tgid = btf_field::<u32>(next, tgid_off);
    if is_target(next_tgid) {
        switch_in(next, next_tgid, prev);
    }
    0
}

/// A target thread leaves the CPU (it is `current`: its user memory is readable).
#[inline(always)]
fn switch_out(prev: *const u8) {
    if btf_field::<u32>(prev, task_state_off()) == 0 {
        return; // still runnable (woken before it got to sleep, or yielding)
    }
    let regs = unsafe { bpf_task_pt_regs(prev as *mut _) } as *const pt_regs;
    if regs.is_null() {
        return;
    }
    let (ax, nr) = unsafe { ((*regs).rax as i64, (*regs).orig_rax) };
    if ax != ENOSYS {
        return; // not inside a syscall: a page fault, or signal delivery after one returned
    }
    let Some(call) = u32::try_from(nr).ok().and_then(Call::from_nr) else {
        if nr == NR_RESTART_SYSCALL
            && let Some(st) = task_state(prev as *mut c_void, false)
        {
            resume(st, unsafe { bpf_ktime_get_ns() });
        }
        return;
    };
    let Some(mut f) = decode(call, &Regs(regs)) else {
        return; // a futex wake or requeue that had to wait for something else
    };
    f.flags |= inflight_flags::SCHED;
    let Some(st) = task_state(prev as *mut c_void, true) else {
        return;
    };
    begin(st, f, unsafe { bpf_ktime_get_ns() });
}

/// A target thread gets a CPU back (`current` is still `prev`).
#[inline(always)]
fn switch_in(next: *const u8, tgid: u32, prev: *const u8) {
    let Some(st) = task_state(next as *mut c_void, false) else {
        return;
    };
    let f = st.inflight;
    if f.call == CALL_NONE || f.interrupted_ns != 0 || f.start_ns == 0 {
        // No block open (it ran a preemption ago, or never slept in a probed call), or storage
        // another program just made, zeroed (call 0 would read as a futex wait since boot).
        return;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if signal_pending(next) {
        // Woken by a signal: the call returns -ERESTART*/-EINTR and is usually re-entered
        // after the handler. Accounted when it really ends (the next block, exit, or restart).
        st.inflight.interrupted_ns = now;
        return;
    }
    let dur = finish(st, f, now);
    if dur < threshold_ns() {
        return;
    }
    let regs = unsafe { bpf_task_pt_regs(next as *mut _) } as *const pt_regs;
    if regs.is_null() {
        return;
    }
    let user = Regs(regs).user_regs();
    // The stack can be copied only from the address space the CPU has loaded, which is
    // `prev`'s: right when `prev` is a thread of the same process (not the idle task, not a
    // kernel thread, not another process).
    let mm_off = task_mm_off();
    let prev_mm = btf_field::<u64>(prev, mm_off);
    let same_mm = mm_off != 0 && prev_mm != 0 && prev_mm == btf_field::<u64>(next, mm_off);
    let tid = btf_field::<u32>(next, task_pid_off());
    send_slow_call(
        ((tgid as u64) << 32) | tid as u64,
        now,
        f,
        dur,
        0,
        user,
        same_mm,
    );
}

/// An unblocked signal pending for the thread, or for its process.
#[inline(always)]
fn signal_pending(task: *const u8) -> bool {
    let (pending_off, blocked_off) = (task_pending_off(), task_blocked_off());
    if pending_off == 0 || blocked_off == 0 {
        return false;
    }
    let mut pending = btf_field::<u64>(task, pending_off);
    let shared_off = signal_shared_pending_off();
    let signal_off = task_signal_off();
    if shared_off != 0 && signal_off != 0 {
        let signal = btf_field::<*const u8>(task, signal_off);
        if !signal.is_null() {
            pending |= btf_field::<u64>(signal, shared_off);
        }
    }
    pending & !btf_field::<u64>(task, blocked_off) != 0
}
