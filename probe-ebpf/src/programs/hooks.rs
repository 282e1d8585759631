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
    ($($variant:ident = $idx:literal, $nr:literal, $name:tt, $kfn:tt, $optional:literal,
       $fentry:ident, $fexit:ident, $tp_enter:ident, $tp_exit:ident, $tpe:tt, $tpx:tt;)*) => {$(
        #[fentry(function = $kfn)]
        fn $fentry(ctx: FEntryContext) -> u32 {
            let regs: *const pt_regs = ctx.arg(0);
            enter(Call::$variant, &Regs(regs));
            0
        }

        #[fexit(function = $kfn)]
        fn $fexit(ctx: FExitContext) -> u32 {
            let regs: *const pt_regs = ctx.arg(0);
            let ret: i64 = ctx.arg(1);
            exit(Call::$variant, &Regs(regs), ret);
            0
        }
    )*};
}

probe_ebpf::for_each_probed_call!(fentry_hooks);

#[btf_tracepoint(function = "sys_enter")]
fn raw_sys_enter(ctx: BtfTracePointContext) -> i32 {
    let regs: *const pt_regs = ctx.arg(0);
    let nr: i64 = ctx.arg(1);
    if let Ok(nr) = u32::try_from(nr)
        && let Some(call) = Call::from_nr(nr)
    {
        enter(call, &Regs(regs));
    }
    0
}

#[btf_tracepoint(function = "sys_exit")]
fn raw_sys_exit(ctx: BtfTracePointContext) -> i32 {
    let regs: *const pt_regs = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let nr = unsafe { (*regs).orig_rax };
    if let Ok(nr) = u32::try_from(nr)
        && let Some(call) = Call::from_nr(nr)
    {
        exit(call, &Regs(regs), ret);
    }
    0
}

macro_rules! tracepoint_hooks {
    ($($variant:ident = $idx:literal, $nr:literal, $name:tt, $kfn:tt, $optional:literal,
       $fentry:ident, $fexit:ident, $tp_enter:ident, $tp_exit:ident, $tpe:tt, $tpx:tt;)*) => {$(
        #[tracepoint(category = "syscalls", name = $tpe)]
        fn $tp_enter(_ctx: TracePointContext) -> u32 {
            // The tracepoint record holds the same arguments as the saved user registers; taking
            // them from the registers keeps one argument decoder for every hook type.
            enter(Call::$variant, &current_user_regs());
            0
        }

        #[tracepoint(category = "syscalls", name = $tpx)]
        fn $tp_exit(ctx: TracePointContext) -> u32 {
            // sys_exit_*: `long ret` at offset 16.
            let ret: i64 = unsafe { ctx.read_at(16) }.unwrap_or(0);
            exit(Call::$variant, &current_user_regs(), ret);
            0
        }
    )*};
}

probe_ebpf::for_each_probed_call!(tracepoint_hooks);
