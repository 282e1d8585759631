//! Shutdown signals generated for a target: which one, when, and who sent it.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use probe_ebpf::{EventHeader, SignalEvent, counter, event_kind};

use crate::maps::{
    count, is_target, read_kernel, reserve, set_shutdown_ts, shutdown_sigmask, task_pid_off,
    task_tgid_off,
};

/// `signal_generate(int sig, struct kernel_siginfo *info, struct task_struct *task, int group,
/// int result)`: fires in the sender's context for every signal generated on the host, so the
/// signal-set check comes first, then the target check on the receiving task.
#[btf_tracepoint(function = "signal_generate")]
fn signal_generate(ctx: BtfTracePointContext) -> i32 {
    let sig: i32 = ctx.arg(0);
    if !(1..64).contains(&sig) || (shutdown_sigmask() >> sig) & 1 == 0 {
        return 0;
    }
    let task: *const u8 = ctx.arg(2);
    let Some(tgid) = read_kernel::<u32>(task, task_tgid_off()) else {
        return 0;
    };
    if !is_target(tgid) {
        return 0;
    }
    let tid = read_kernel::<u32>(task, task_pid_off()).unwrap_or(tgid);
    let info: *const u8 = ctx.arg(1);
    // SEND_SIG_NOINFO (0) and SEND_SIG_PRIV (1) are not pointers; si_code is at offset 8.
    let code = if (info as usize) > 1 {
        read_kernel::<i32>(info, 8).unwrap_or(0)
    } else if info as usize == 1 {
        0x80 // SI_KERNEL
    } else {
        0 // SI_USER
    };
    let group: i32 = ctx.arg(3);
    let result: i32 = ctx.arg(4);
    let now = unsafe { bpf_ktime_get_ns() };
    set_shutdown_ts(now);

    let sender = bpf_get_current_pid_tgid();
    let Some(mut entry) = reserve::<SignalEvent>(counter::DROP_SIGNAL) else {
        return 0;
    };
    let e = entry.as_mut_ptr();
    unsafe {
        *e = SignalEvent {
            hdr: EventHeader {
                kind: event_kind::SIGNAL,
                tid,
                tgid,
                _pad: 0,
                ts_ns: now,
            },
            sig: sig as u32,
            code,
            result,
            group: group as u32,
            sender_tid: sender as u32,
            sender_tgid: (sender >> 32) as u32,
            sender_comm: bpf_get_current_comm().unwrap_or([0; 16]),
        };
    }
    count(counter::SIGNALS);
    entry.submit(0);
    aya_log_ebpf::debug!(
        &ctx,
        "shutdown signal {} to tid {} (pid {}) from pid {}",
        sig,
        tid,
        tgid,
        (sender >> 32) as u32
    );
    0
}
