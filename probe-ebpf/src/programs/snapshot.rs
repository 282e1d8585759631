//! `iter/task`: on each read of the iterator, one [`TaskRecord`] per target thread (plus its
//! [`TaskState`] when it has one). This is how user space sees threads that have been blocked
//! since before stallprobe attached: their registers (rip, rsp *and* rbp, which
//! /proc/PID/task/TID/syscall lacks) come from `bpf_task_pt_regs`.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_task_btf, bpf_ktime_get_ns,
        generated::{bpf_get_task_stack, bpf_seq_write, bpf_task_pt_regs},
    },
};
use probe_ebpf::{
    KSTACK_MAX, STATE_BRIEF, STATE_FULL, TASK_RECORD_MAGIC, TASK_STATE_BRIEF_LEN, TaskRecord,
    TaskState, UserRegs,
};

use crate::maps::{
    is_target, read_kernel, task_comm_off, task_flags_off, task_last_arrival_off, task_pid_off,
    task_state, task_state_off, task_tgid_off, want_stats,
};

/// `task->sched_info.last_arrival`, 0 when the kernel has no such field.
#[inline(always)]
fn last_arrival(task: *const u8) -> u64 {
    let off = task_last_arrival_off();
    if off == 0 {
        return 0;
    }
    read_kernel::<u64>(task, off).unwrap_or(0)
}

/// `struct bpf_iter__task { struct bpf_iter_meta *meta; struct task_struct *task; }`;
/// `struct bpf_iter_meta { struct seq_file *seq; ... }`.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task")]
pub fn snapshot_tasks(ctx: *mut c_void) -> i32 {
    let ctx = ctx as *const *const u8;
    let meta = unsafe { *ctx };
    let task = unsafe { *ctx.add(1) };
    if task.is_null() || meta.is_null() {
        return 0;
    }
    let Some(tgid) = read_kernel::<u32>(task, task_tgid_off()) else {
        return 0;
    };
    if !is_target(tgid) {
        return 0;
    }
    // PF_EXITING: the thread is on its way out (its exit event is sent or about to be); a
    // snapshot must not bring it back.
    const PF_EXITING: u32 = 0x4;
    if read_kernel::<u32>(task, task_flags_off()).unwrap_or(0) & PF_EXITING != 0 {
        return 0;
    }
    let seq = unsafe { *(meta as *const *mut c_void) };
    let regs = unsafe { bpf_task_pt_regs(task as *mut _) } as *const pt_regs;
    let user = if regs.is_null() {
        UserRegs::default()
    } else {
        let r = unsafe { &*regs };
        UserRegs {
            ip: r.rip,
            sp: r.rsp,
            bp: r.rbp,
        }
    };
    let st = task_state(task as *mut c_void, false);
    let full = want_stats();
    let kstate = read_kernel::<u32>(task, task_state_off()).unwrap_or(0);
    // The kernel stack of a sleeping thread (a running one's would be stale at once).
    let mut kstack = [0u64; KSTACK_MAX];
    let mut kstack_len: u32 = 0;
    if kstate != 0 {
        let n = unsafe {
            bpf_get_task_stack(
                task as *mut _,
                kstack.as_mut_ptr().cast(),
                (KSTACK_MAX * 8) as u32,
                0,
            )
        };
        if n > 0 {
            kstack_len = ((n as u32) / 8).min(KSTACK_MAX as u32);
        }
    }
    let rec = TaskRecord {
        magic: TASK_RECORD_MAGIC,
        tid: read_kernel::<u32>(task, task_pid_off()).unwrap_or(0),
        tgid,
        state: kstate,
        comm: read_kernel::<[u8; 16]>(task, task_comm_off()).unwrap_or([0; 16]),
        regs: user,
        has_state: match (&st, full) {
            (None, _) => 0,
            (Some(_), true) => STATE_FULL,
            (Some(_), false) => STATE_BRIEF,
        },
        kstack_len,
        last_arrival: last_arrival(task),
        reader_arrival: last_arrival(unsafe { bpf_get_current_task_btf() } as *const u8),
        now_ns: unsafe { bpf_ktime_get_ns() },
    };
    unsafe {
        bpf_seq_write(
            seq.cast(),
            core::ptr::from_ref(&rec).cast_mut().cast(),
            core::mem::size_of::<TaskRecord>() as u32,
        );
        if let Some(st) = st {
            let len = if full {
                core::mem::size_of::<TaskState>()
            } else {
                TASK_STATE_BRIEF_LEN
            };
            bpf_seq_write(seq.cast(), core::ptr::from_mut(st).cast(), len as u32);
        }
        let bytes = (kstack_len as usize * 8) & (KSTACK_MAX * 8 * 2 - 1);
        if bytes > 0 && bytes <= KSTACK_MAX * 8 {
            bpf_seq_write(seq.cast(), kstack.as_mut_ptr().cast(), bytes as u32);
        }
    }
    0
}
