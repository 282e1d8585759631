//! Thread exit (with the thread's final statistics), fork of child processes, exec.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns,
        generated::bpf_probe_read_kernel,
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use probe_ebpf::{
    EventHeader, ExecEvent, ForkEvent, TaskState, ThreadExitEvent, counter, event_kind,
};

use crate::maps::{
    add_target, follow_children, is_target, read_kernel, remove_target, reserve, task_pid_off,
    task_state, task_tgid_off,
};

#[inline(always)]
fn header(kind: u32, pid_tgid: u64, now: u64) -> EventHeader {
    EventHeader {
        kind,
        tid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        _pad: 0,
        ts_ns: now,
    }
}

/// `sched_process_exit(struct task_struct *p, ...)`: runs in the exiting thread.
#[btf_tracepoint(function = "sched_process_exit")]
fn thread_exit(_ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let task = unsafe { bpf_get_current_task_btf() };
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(mut entry) = reserve::<ThreadExitEvent>(counter::DROP_THREAD_EXIT) else {
        return 0;
    };
    let e = entry.as_mut_ptr();
    unsafe {
        (*e).hdr = header(event_kind::THREAD_EXIT, pid_tgid, now);
        (*e).comm = bpf_get_current_comm().unwrap_or([0; 16]);
        (*e)._pad = 0;
        (*e).has_state = 0;
        if let Some(st) = task_state(task.cast(), false) {
            // A call interrupted by the signal that is killing the thread ends here.
            let f = st.inflight;
            if f.call != probe_ebpf::CALL_NONE && f.interrupted_ns != 0 {
                super::blocking::account(
                    st,
                    f.call as usize,
                    f.interrupted_ns.saturating_sub(f.start_ns),
                );
                st.inflight.call = probe_ebpf::CALL_NONE;
            }
            let dst = core::ptr::addr_of_mut!((*e).state);
            if bpf_probe_read_kernel(
                dst.cast(),
                core::mem::size_of::<TaskState>() as u32,
                core::ptr::from_mut(st).cast(),
            ) == 0
            {
                (*e).has_state = 1;
            }
        }
    }
    entry.submit(0);
    0
}

/// `sched_process_free(struct task_struct *p)`: a reaped task's last reference is gone. When it
/// is a target's thread-group leader, the process is gone for good and its pid may be reused by
/// any process from now on: it leaves the target set here, not when user space notices. (Not at
/// the last thread's `sched_process_exit`: threads exiting together all see the group dead, and
/// the first would untarget the process before the others' exits are recorded.)
#[btf_tracepoint(function = "sched_process_free")]
fn process_free(ctx: BtfTracePointContext) -> i32 {
    let task: *const u8 = ctx.arg(0);
    let (Some(pid), Some(tgid)) = (
        read_kernel::<u32>(task, task_pid_off()),
        read_kernel::<u32>(task, task_tgid_off()),
    ) else {
        return 0;
    };
    if pid == tgid && is_target(tgid) {
        remove_target(tgid);
    }
    0
}

/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`: runs in the parent.
/// New threads are ignored (the target set is per process); a new process of a target is
/// reported, and with `--follow-children` added to the target set before it can run.
#[btf_tracepoint(function = "sched_process_fork")]
fn process_fork(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let child: *const u8 = ctx.arg(1);
    let (Some(pid), Some(tgid)) = (
        read_kernel::<u32>(child, task_pid_off()),
        read_kernel::<u32>(child, task_tgid_off()),
    ) else {
        return 0;
    };
    if pid != tgid {
        return 0; // a thread
    }
    let followed = follow_children();
    if followed {
        add_target(pid);
    }
    aya_log_ebpf::debug!(
        &ctx,
        "pid {} forked child {} (followed: {})",
        (pid_tgid >> 32) as u32,
        pid,
        followed as u32
    );
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(mut entry) = reserve::<ForkEvent>(counter::DROP_LIFECYCLE) else {
        return 0;
    };
    unsafe {
        *entry.as_mut_ptr() = ForkEvent {
            hdr: header(event_kind::FORK, pid_tgid, now),
            child_pid: pid,
            followed: followed as u32,
        };
    }
    entry.submit(0);
    0
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`.
#[btf_tracepoint(function = "sched_process_exec")]
fn process_exec(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return 0;
    }
    let old_pid: i32 = ctx.arg(1);
    aya_log_ebpf::debug!(
        &ctx,
        "pid {} exec'd (old tid {})",
        (pid_tgid >> 32) as u32,
        old_pid
    );
    // A new program: statistics of the old image (e.g. `stallprobe run`'s pre-exec wait) go.
    let task = unsafe { bpf_get_current_task_btf() };
    if let Some(st) = task_state(task.cast(), false) {
        *st = unsafe { core::mem::zeroed() };
        st.inflight.call = probe_ebpf::CALL_NONE;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(mut entry) = reserve::<ExecEvent>(counter::DROP_LIFECYCLE) else {
        return 0;
    };
    unsafe {
        *entry.as_mut_ptr() = ExecEvent {
            hdr: header(event_kind::EXEC, pid_tgid, now),
            old_tid: old_pid as u32,
            _pad: 0,
        };
    }
    entry.submit(0);
    0
}
