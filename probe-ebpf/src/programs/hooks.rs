//! Where the blocking-call logic is hooked in. Three interchangeable sets, chosen at load time
//! (`stallprobe --hook`, default `fentry`), so the choice can be measured (`cargo xtask bench`):
//!
//! - `fentry`: fentry/fexit on each syscall's `__x64_sys_*` function. Runs only for the probed
//!   syscalls and costs a BPF trampoline (a few ns) per call; other syscalls are untouched.
//! - `raw`: BTF raw tracepoints `sys_enter`/`sys_exit`. One program pair, but it runs on *every*
//!   syscall of every thread on the host and sets the syscall-tracing work flag on all tasks.
//! - `tracepoint`: `syscalls:sys_{enter,exit}_*` tracepoints. Only the probed syscalls, but each
//!   hit goes through the perf tracepoint machinery, and any enabled syscall tracepoint also
//!   sends every syscall of every task through the slow syscall-entry path.
//!
//! Measured on the futex ping-pong (docs/design.md has the numbers): fentry is the cheapest for
//! the target and for everyone else, so it is the default; the others stay as fallbacks for
//! kernels without BPF trampolines.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_task_btf, generated::bpf_task_pt_regs},
    macros::{btf_tracepoint, fentry, fexit, tracepoint},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, TracePointContext},
};
use probe_ebpf::Call;

use super::blocking::{Regs, enter, exit};

/// The current task's user registers (for the syscall-tracepoint variant, whose context holds
/// only the arguments).
#[inline(always)]
fn current_user_regs() -> Regs {
    let task = unsafe { bpf_get_current_task_btf() };
    Regs(unsafe { bpf_task_pt_regs(task) } as *const pt_regs)
}

macro_rules! fentry_hooks {
    ($($call:expr, $func:tt, $enter:ident, $exit:ident;)*) => {$(
        #[fentry(function = $func)]
        fn $enter(ctx: FEntryContext) -> u32 {
            let regs: *const pt_regs = ctx.arg(0);
            enter($call, &Regs(regs));
            0
        }

        #[fexit(function = $func)]
        fn $exit(ctx: FExitContext) -> u32 {
            let regs: *const pt_regs = ctx.arg(0);
            let ret: i64 = ctx.arg(1);
            exit($call, &Regs(regs), ret);
            0
        }
    )*};
}

fentry_hooks! {
    Call::Futex, "__x64_sys_futex", fentry_futex, fexit_futex;
    Call::FutexWaitv, "__x64_sys_futex_waitv", fentry_futex_waitv, fexit_futex_waitv;
    Call::EpollWait, "__x64_sys_epoll_wait", fentry_epoll_wait, fexit_epoll_wait;
    Call::EpollPwait, "__x64_sys_epoll_pwait", fentry_epoll_pwait, fexit_epoll_pwait;
    Call::EpollPwait2, "__x64_sys_epoll_pwait2", fentry_epoll_pwait2, fexit_epoll_pwait2;
    Call::Read, "__x64_sys_read", fentry_read, fexit_read;
    Call::Readv, "__x64_sys_readv", fentry_readv, fexit_readv;
    Call::Recvfrom, "__x64_sys_recvfrom", fentry_recvfrom, fexit_recvfrom;
    Call::Recvmsg, "__x64_sys_recvmsg", fentry_recvmsg, fexit_recvmsg;
    Call::Recvmmsg, "__x64_sys_recvmmsg", fentry_recvmmsg, fexit_recvmmsg;
}

/// Map a syscall number to a probed call, for the raw-tracepoint variant.
#[inline(always)]
fn call_of_nr(nr: i64) -> Option<Call> {
    Some(match nr {
        202 => Call::Futex,
        449 => Call::FutexWaitv,
        232 => Call::EpollWait,
        281 => Call::EpollPwait,
        441 => Call::EpollPwait2,
        0 => Call::Read,
        19 => Call::Readv,
        45 => Call::Recvfrom,
        47 => Call::Recvmsg,
        299 => Call::Recvmmsg,
        _ => return None,
    })
}

#[btf_tracepoint(function = "sys_enter")]
fn raw_sys_enter(ctx: BtfTracePointContext) -> i32 {
    let regs: *const pt_regs = ctx.arg(0);
    let nr: i64 = ctx.arg(1);
    if let Some(call) = call_of_nr(nr) {
        enter(call, &Regs(regs));
    }
    0
}

#[btf_tracepoint(function = "sys_exit")]
fn raw_sys_exit(ctx: BtfTracePointContext) -> i32 {
    let regs: *const pt_regs = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let nr = unsafe { (*regs).orig_rax } as i64;
    if let Some(call) = call_of_nr(nr) {
        exit(call, &Regs(regs), ret);
    }
    0
}

macro_rules! tracepoint_hooks {
    ($($call:expr, $enter_tp:tt, $exit_tp:tt, $enter:ident, $exit:ident;)*) => {$(
        #[tracepoint(category = "syscalls", name = $enter_tp)]
        fn $enter(_ctx: TracePointContext) -> u32 {
            // The tracepoint record holds the same arguments as the saved user registers; taking
            // them from the registers keeps one argument decoder for every hook type.
            enter($call, &current_user_regs());
            0
        }

        #[tracepoint(category = "syscalls", name = $exit_tp)]
        fn $exit(ctx: TracePointContext) -> u32 {
            // sys_exit_*: `long ret` at offset 16.
            let ret: i64 = unsafe { ctx.read_at(16) }.unwrap_or(0);
            exit($call, &current_user_regs(), ret);
            0
        }
    )*};
}

tracepoint_hooks! {
    Call::Futex, "sys_enter_futex", "sys_exit_futex", tp_enter_futex, tp_exit_futex;
    Call::FutexWaitv, "sys_enter_futex_waitv", "sys_exit_futex_waitv", tp_enter_futex_waitv, tp_exit_futex_waitv;
    Call::EpollWait, "sys_enter_epoll_wait", "sys_exit_epoll_wait", tp_enter_epoll_wait, tp_exit_epoll_wait;
    Call::EpollPwait, "sys_enter_epoll_pwait", "sys_exit_epoll_pwait", tp_enter_epoll_pwait, tp_exit_epoll_pwait;
    Call::EpollPwait2, "sys_enter_epoll_pwait2", "sys_exit_epoll_pwait2", tp_enter_epoll_pwait2, tp_exit_epoll_pwait2;
    Call::Read, "sys_enter_read", "sys_exit_read", tp_enter_read, tp_exit_read;
    Call::Readv, "sys_enter_readv", "sys_exit_readv", tp_enter_readv, tp_exit_readv;
    Call::Recvfrom, "sys_enter_recvfrom", "sys_exit_recvfrom", tp_enter_recvfrom, tp_exit_recvfrom;
    Call::Recvmsg, "sys_enter_recvmsg", "sys_exit_recvmsg", tp_enter_recvmsg, tp_exit_recvmsg;
    Call::Recvmmsg, "sys_enter_recvmmsg", "sys_exit_recvmmsg", tp_enter_recvmmsg, tp_exit_recvmmsg;
}
