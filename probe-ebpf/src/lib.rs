//! The kernel/user ABI of stallprobe: every type and constant that crosses between the BPF
//! programs (`src/main.rs`, built for `bpfel-unknown-none`) and the user-space loader
//! (`probe-user`). Defined once, here.
//!
//! Rules for this module, so that both sides agree byte for byte:
//! - every struct is `#[repr(C)]`, has only integer and integer-array fields (any bit pattern is
//!   valid), explicit padding, and a size that is a multiple of 8;
//! - sizes are pinned by the `const` assertions at the bottom, so a change shows up as a
//!   compile error on both sides rather than as garbage at run time.
#![no_std]

/// The probed calls, defined once for both sides: each row is the [`Call`] variant and its
/// index (into [`TaskState::stats`]), the x86_64 syscall number, the name (as in `man 2`), the
/// kernel function fentry/fexit attach to, whether older kernels may lack it (then it is
/// skipped with a note), and the names of the kernel programs that hook it: fentry, fexit,
/// syscall-tracepoint enter and exit, and those two tracepoints' names.
///
/// `for_each_probed_call!(m)` expands to `m! { rows }`: this file derives [`Call`] and
/// [`PROBED_CALLS`] from it, the kernel side its hook programs (`programs/hooks.rs`), so the
/// table cannot disagree with either.
#[macro_export]
macro_rules! for_each_probed_call {
    ($m:ident) => {
        $m! {
            Futex = 0, 202, "futex", "__x64_sys_futex", false,
                fentry_futex, fexit_futex, tp_enter_futex, tp_exit_futex,
                "sys_enter_futex", "sys_exit_futex";
            FutexWaitv = 1, 449, "futex_waitv", "__x64_sys_futex_waitv", true,
                fentry_futex_waitv, fexit_futex_waitv, tp_enter_futex_waitv, tp_exit_futex_waitv,
                "sys_enter_futex_waitv", "sys_exit_futex_waitv";
            EpollWait = 2, 232, "epoll_wait", "__x64_sys_epoll_wait", false,
                fentry_epoll_wait, fexit_epoll_wait, tp_enter_epoll_wait, tp_exit_epoll_wait,
                "sys_enter_epoll_wait", "sys_exit_epoll_wait";
            EpollPwait = 3, 281, "epoll_pwait", "__x64_sys_epoll_pwait", false,
                fentry_epoll_pwait, fexit_epoll_pwait, tp_enter_epoll_pwait, tp_exit_epoll_pwait,
                "sys_enter_epoll_pwait", "sys_exit_epoll_pwait";
            EpollPwait2 = 4, 441, "epoll_pwait2", "__x64_sys_epoll_pwait2", true,
                fentry_epoll_pwait2, fexit_epoll_pwait2, tp_enter_epoll_pwait2, tp_exit_epoll_pwait2,
                "sys_enter_epoll_pwait2", "sys_exit_epoll_pwait2";
            Read = 5, 0, "read", "__x64_sys_read", false,
                fentry_read, fexit_read, tp_enter_read, tp_exit_read,
                "sys_enter_read", "sys_exit_read";
            Readv = 6, 19, "readv", "__x64_sys_readv", false,
                fentry_readv, fexit_readv, tp_enter_readv, tp_exit_readv,
                "sys_enter_readv", "sys_exit_readv";
            Recvfrom = 7, 45, "recvfrom", "__x64_sys_recvfrom", false,
                fentry_recvfrom, fexit_recvfrom, tp_enter_recvfrom, tp_exit_recvfrom,
                "sys_enter_recvfrom", "sys_exit_recvfrom";
            Recvmsg = 8, 47, "recvmsg", "__x64_sys_recvmsg", false,
                fentry_recvmsg, fexit_recvmsg, tp_enter_recvmsg, tp_exit_recvmsg,
                "sys_enter_recvmsg", "sys_exit_recvmsg";
            Recvmmsg = 9, 299, "recvmmsg", "__x64_sys_recvmmsg", false,
                fentry_recvmmsg, fexit_recvmmsg, tp_enter_recvmmsg, tp_exit_recvmmsg,
                "sys_enter_recvmmsg", "sys_exit_recvmmsg";
        }
    };
}

/// One row of the probed-call table, as data (see [`for_each_probed_call`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbedCall {
    pub call: Call,
    /// x86_64 syscall number.
    pub nr: u32,
    /// The syscall's name, as in `man 2`.
    pub name: &'static str,
    /// The kernel function the fentry/fexit programs attach to (x86_64 syscall wrapper).
    pub kernel_fn: &'static str,
    /// Older kernels may lack this call: a failure to hook it is a note, not an error.
    pub optional: bool,
    /// Names of the kernel programs for this call, per hook type.
    pub fentry_prog: &'static str,
    pub fexit_prog: &'static str,
    pub tp_enter_prog: &'static str,
    pub tp_exit_prog: &'static str,
    /// `syscalls:<name>` tracepoints of this call.
    pub tp_enter: &'static str,
    pub tp_exit: &'static str,
}

macro_rules! define_calls {
    ($($variant:ident = $idx:literal, $nr:literal, $name:tt, $kfn:tt, $optional:literal,
       $fentry:ident, $fexit:ident, $tp_enter:ident, $tp_exit:ident, $tpe:tt, $tpx:tt;)*) => {
        /// The blocking syscalls stallprobe probes. The discriminant indexes [`TaskState::stats`].
        #[repr(u16)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Call {
            $($variant = $idx,)*
        }

        /// The table of probed calls, in [`Call`] order.
        pub const PROBED_CALLS: [ProbedCall; NUM_CALLS] = [$(ProbedCall {
            call: Call::$variant,
            nr: $nr,
            name: $name,
            kernel_fn: $kfn,
            optional: $optional,
            fentry_prog: stringify!($fentry),
            fexit_prog: stringify!($fexit),
            tp_enter_prog: stringify!($tp_enter),
            tp_exit_prog: stringify!($tp_exit),
            tp_enter: $tpe,
            tp_exit: $tpx,
        },)*];

        impl Call {
            /// The probed call with x86_64 syscall number `nr` (a `match`: cheap on the hot path).
            #[inline(always)]
            pub fn from_nr(nr: u32) -> Option<Call> {
                match nr {
                    $($nr => Some(Call::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

for_each_probed_call!(define_calls);

/// Number of probed calls.
pub const NUM_CALLS: usize = 10;

/// `InFlight::call` when the thread is not inside a probed call.
pub const CALL_NONE: u16 = 0xffff;

impl Call {
    pub const ALL: [Call; NUM_CALLS] = {
        let mut all = [Call::Futex; NUM_CALLS];
        let mut i = 0;
        while i < NUM_CALLS {
            all[i] = PROBED_CALLS[i].call;
            i += 1;
        }
        all
    };

    pub fn from_u16(v: u16) -> Option<Call> {
        Call::ALL.get(v as usize).copied()
    }

    /// This call's row of [`PROBED_CALLS`].
    #[inline(always)]
    pub const fn info(self) -> &'static ProbedCall {
        &PROBED_CALLS[self as usize]
    }

    /// The syscall's name, as in `man 2`.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The kernel function the fentry/fexit programs attach to.
    pub fn kernel_fn(self) -> &'static str {
        self.info().kernel_fn
    }

    /// x86_64 syscall number.
    pub fn nr(self) -> u32 {
        self.info().nr
    }

    /// What the call's first argument is: a futex word address or a file descriptor.
    pub fn waits_on_fd(self) -> bool {
        !matches!(self, Call::Futex | Call::FutexWaitv)
    }
}

/// Names of the kernel programs that are not per probed call (those are in [`PROBED_CALLS`]).
pub mod programs {
    /// Raw tracepoints `sys_enter` / `sys_exit` (`--hook raw`).
    pub const RAW_SYS_ENTER: &str = "raw_sys_enter";
    pub const RAW_SYS_EXIT: &str = "raw_sys_exit";
    /// BTF tracepoint `signal_generate`: shutdown signals.
    pub const SIGNAL_GENERATE: &str = "signal_generate";
    /// BTF tracepoints `sched_process_exit/fork/free/exec`.
    pub const THREAD_EXIT: &str = "thread_exit";
    pub const PROCESS_FORK: &str = "process_fork";
    /// `sched_process_free`: a target's reaped leader leaves the target set.
    pub const PROCESS_FREE: &str = "process_free";
    pub const PROCESS_EXEC: &str = "process_exec";
    /// `iter/task`: the snapshot of every target thread.
    pub const SNAPSHOT_TASKS: &str = "snapshot_tasks";
}

/// futex(2) operations (`op & FUTEX_CMD_MASK`).
pub mod futex_op {
    pub const WAIT: u32 = 0;
    pub const WAKE: u32 = 1;
    pub const REQUEUE: u32 = 3;
    pub const CMP_REQUEUE: u32 = 4;
    pub const WAKE_OP: u32 = 5;
    pub const LOCK_PI: u32 = 6;
    pub const UNLOCK_PI: u32 = 7;
    pub const TRYLOCK_PI: u32 = 8;
    pub const WAIT_BITSET: u32 = 9;
    pub const WAKE_BITSET: u32 = 10;
    pub const WAIT_REQUEUE_PI: u32 = 11;
    pub const CMP_REQUEUE_PI: u32 = 12;
    pub const LOCK_PI2: u32 = 13;
    pub const PRIVATE_FLAG: u32 = 128;
    pub const CLOCK_REALTIME: u32 = 256;
    pub const CMD_MASK: u32 = !(PRIVATE_FLAG | CLOCK_REALTIME);

    /// The operations that put the caller to sleep; wakes and requeues are not blocks.
    #[inline(always)]
    pub fn is_wait(op: u32) -> bool {
        matches!(
            op & CMD_MASK,
            WAIT | LOCK_PI | WAIT_BITSET | WAIT_REQUEUE_PI | LOCK_PI2
        )
    }

    /// The operations that wake waiters (or hand a PI lock over).
    #[inline(always)]
    pub fn is_wake(op: u32) -> bool {
        matches!(
            op & CMD_MASK,
            WAKE | WAKE_BITSET | WAKE_OP | REQUEUE | CMP_REQUEUE | UNLOCK_PI | CMP_REQUEUE_PI
        )
    }

    /// Whether the op's timeout argument is an absolute time (otherwise relative).
    #[inline(always)]
    pub fn timeout_is_absolute(op: u32) -> bool {
        matches!(
            op & CMD_MASK,
            LOCK_PI | WAIT_BITSET | WAIT_REQUEUE_PI | LOCK_PI2
        )
    }

    /// Human name of an op, with `_PRIVATE` when the private flag is set.
    pub fn name(op: u32) -> &'static str {
        let private = op & PRIVATE_FLAG != 0;
        macro_rules! n {
            ($s:literal) => {
                if private { concat!($s, "_PRIVATE") } else { $s }
            };
        }
        match op & CMD_MASK {
            WAIT => n!("FUTEX_WAIT"),
            WAKE => n!("FUTEX_WAKE"),
            REQUEUE => n!("FUTEX_REQUEUE"),
            CMP_REQUEUE => n!("FUTEX_CMP_REQUEUE"),
            WAKE_OP => n!("FUTEX_WAKE_OP"),
            LOCK_PI => n!("FUTEX_LOCK_PI"),
            UNLOCK_PI => n!("FUTEX_UNLOCK_PI"),
            TRYLOCK_PI => n!("FUTEX_TRYLOCK_PI"),
            WAIT_BITSET => n!("FUTEX_WAIT_BITSET"),
            WAKE_BITSET => n!("FUTEX_WAKE_BITSET"),
            WAIT_REQUEUE_PI => n!("FUTEX_WAIT_REQUEUE_PI"),
            CMP_REQUEUE_PI => n!("FUTEX_CMP_REQUEUE_PI"),
            LOCK_PI2 => n!("FUTEX_LOCK_PI2"),
            _ => "FUTEX_?",
        }
    }
}

/// Bits of [`InFlight::flags`].
pub mod inflight_flags {
    /// The call has a finite timeout; `InFlight::timeout_ns` holds it.
    pub const HAS_TIMEOUT: u16 = 1;
    /// `timeout_ns` is an absolute time (CLOCK_MONOTONIC or, with `TIMEOUT_REALTIME`, CLOCK_REALTIME).
    pub const TIMEOUT_ABSOLUTE: u16 = 2;
    pub const TIMEOUT_REALTIME: u16 = 4;
    /// The timeout pointer could not be read (kept as "unknown", not as "none").
    pub const TIMEOUT_UNREADABLE: u16 = 8;
}

/// A probed call in progress, recorded at syscall entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InFlight {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at entry.
    pub start_ns: u64,
    /// What the call waits on: the futex word address (first one for futex_waitv) or the fd.
    pub obj: u64,
    /// futex: the op; futex_waitv: number of futexes; epoll: maxevents; reads: 0.
    pub arg: u64,
    /// Timeout in ns, see [`inflight_flags`].
    pub timeout_ns: u64,
    /// A [`Call`] discriminant, or [`CALL_NONE`].
    pub call: u16,
    pub flags: u16,
    pub _pad: u32,
    /// Non-zero: the call was interrupted by a signal at this time and will be restarted (by the
    /// kernel, -ERESTART*) or retried by the caller. A re-entry of the same call on the same
    /// object continues the same block (same `start_ns`, not counted as a wake-up).
    pub interrupted_ns: u64,
}

/// `-ERESTARTSYS`, `-ERESTARTNOINTR`, `-ERESTARTNOHAND`, `-ERESTART_RESTARTBLOCK`: a syscall
/// interrupted by a signal, to be restarted (or turned into EINTR) after the handler.
#[inline(always)]
pub fn is_restart(ret: i64) -> bool {
    (-516..=-512).contains(&ret) && ret != -515
}

/// Number of log2 buckets: bucket `i` counts calls that took `[2^i, 2^(i+1))` ns (bucket 0 also
/// counts 0 ns); the last one everything from 2^39 ns (about 9 minutes) up.
pub const HIST_BUCKETS: usize = 40;

/// Per-thread, per-call block-time statistics, kept by the kernel side.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallStats {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub buckets: [u32; HIST_BUCKETS],
}

/// Everything the kernel side keeps per target thread (BPF task storage, freed with the task).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskState {
    pub inflight: InFlight,
    /// Probed calls that returned after the first shutdown signal (the thread woke up).
    pub wakes_after_signal: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` of the last such return.
    pub last_return_after_signal_ns: u64,
    /// The futex word this thread last woke waiters on (FUTEX_WAKE, requeue, unlock-PI), and
    /// how many wake calls it made: answers "who last woke the threads waiting on this futex".
    /// No timestamp (a clock read on every wake is measurable); user space notes when the
    /// count changes between snapshots.
    pub woke_addr: u64,
    pub woke_count: u64,
    pub stats: [CallStats; NUM_CALLS],
}

/// Kinds of ring-buffer events ([`EventHeader::kind`]).
pub mod event_kind {
    pub const SLOW_CALL: u32 = 1;
    pub const SIGNAL: u32 = 2;
    pub const THREAD_EXIT: u32 = 3;
    pub const FORK: u32 = 4;
    pub const EXEC: u32 = 5;
}

/// First bytes of every ring-buffer event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u32,
    /// The target thread the event is about.
    pub tid: u32,
    pub tgid: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` when the event happened.
    pub ts_ns: u64,
}

/// Bytes of user stack copied for a slow call (from the user rsp upwards).
pub const STACK_COPY_MAX: usize = 16384;
/// The copy is made in chunks of this size; a chunk that faults ends the copy.
pub const STACK_CHUNK: usize = 1024;

/// Registers needed to start a DWARF unwind, as the thread entered the syscall.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// The fixed part of a [`SlowCallEvent`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlowCallHead {
    pub hdr: EventHeader,
    pub call: InFlight,
    pub dur_ns: u64,
    pub ret: i64,
    pub regs: UserRegs,
    /// User address of `stack[0]`: `regs.sp` rounded down to [`STACK_CHUNK`], so that every
    /// chunk copied is aligned (never straddles a page) and the copy ends exactly at the top of
    /// the mapped stack.
    pub stack_addr: u64,
    /// Valid bytes in `stack` (a multiple of [`STACK_CHUNK`]).
    pub stack_len: u32,
    pub _pad: u32,
}

/// A probed call that took at least the threshold, sent at syscall exit.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SlowCallEvent {
    pub head: SlowCallHead,
    pub stack: [u8; STACK_COPY_MAX],
}

/// A shutdown signal (one in the configured set) generated for a target process or thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignalEvent {
    /// `tid`/`tgid`: the target task the signal was sent to.
    pub hdr: EventHeader,
    pub sig: u32,
    /// `si_code` (0 = SI_USER, kill(2); -6 = SI_TKILL; 0x80 = SI_KERNEL), or 0 without siginfo.
    pub code: i32,
    /// TRACE_SIGNAL_* result: 0 delivered, 1 ignored, 2 already pending, 3 overflow, 4 lose info.
    pub result: i32,
    /// Non-zero for a process-directed signal.
    pub group: u32,
    pub sender_tid: u32,
    pub sender_tgid: u32,
    pub sender_comm: [u8; 16],
}

/// A target thread exiting, with its final statistics (its task storage goes away with it).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ThreadExitEvent {
    pub hdr: EventHeader,
    pub comm: [u8; 16],
    /// 1 when `state` holds the thread's statistics.
    pub has_state: u32,
    pub _pad: u32,
    pub state: TaskState,
}

/// A target process forked a child process (threads are not reported).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForkEvent {
    /// `tid`/`tgid`: the parent thread.
    pub hdr: EventHeader,
    pub child_pid: u32,
    /// 1 when the kernel side already added the child to the target set (`--follow-children`).
    pub followed: u32,
}

/// A target process called execve(2).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecEvent {
    pub hdr: EventHeader,
    pub old_tid: u32,
    pub _pad: u32,
}

/// One record of the `iter/task` snapshot: a target thread as it is right now.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskRecord {
    /// [`TASK_RECORD_MAGIC`], to resynchronise on garbage.
    pub magic: u32,
    pub tid: u32,
    pub tgid: u32,
    /// `task->__state` (0 running, 1 interruptible, 2 uninterruptible, ...).
    pub state: u32,
    pub comm: [u8; 16],
    /// The thread's user registers (saved at its last kernel entry).
    pub regs: UserRegs,
    /// What follows this record: 0 nothing, [`STATE_FULL`] a whole [`TaskState`],
    /// [`STATE_BRIEF`] its first [`TASK_STATE_BRIEF_LEN`] bytes (call in flight and wake
    /// counters, not the histograms: most snapshots do not need them).
    pub has_state: u32,
    /// Number of kernel stack addresses (u64) that follow (after the `TaskState`, if any);
    /// only for sleeping threads, at most [`KSTACK_MAX`].
    pub kstack_len: u32,
    /// `task->sched_info.last_arrival`: when the thread last got a CPU (scheduler clock, ns),
    /// 0 if unknown. For a thread asleep since before stallprobe attached, its block started
    /// shortly after this.
    pub last_arrival: u64,
    /// The same field of the reading thread (which is running right now), and
    /// `bpf_ktime_get_ns()` at the time of the record: together they map the scheduler clock to
    /// CLOCK_MONOTONIC.
    pub reader_arrival: u64,
    pub now_ns: u64,
}

pub const TASK_RECORD_MAGIC: u32 = 0x5354_4b31; // "STK1"

pub const STATE_FULL: u32 = 1;
pub const STATE_BRIEF: u32 = 2;
/// Bytes of [`TaskState`] before `stats`.
pub const TASK_STATE_BRIEF_LEN: usize = core::mem::offset_of!(TaskState, stats);

/// Bits of `CONTROL[0]`, written by user space before it runs the task iterator.
pub mod control {
    /// Dump whole [`super::TaskState`]s (with histograms) instead of brief ones.
    pub const WANT_STATS: u32 = 1;
}

/// Kernel stack frames captured per sleeping thread in a snapshot (`bpf_get_task_stack`): the
/// snapshot gives kernel stacks with addresses, and needs no CAP_SYS_ADMIN at read time (unlike
/// /proc/PID/task/TID/stack).
pub const KSTACK_MAX: usize = 32;

/// Indexes into the kernel side's per-CPU counter array.
pub mod counter {
    /// A slow-call event was lost because the ring buffer was full.
    pub const DROP_SLOW_CALL: u32 = 0;
    /// A signal event was lost because the ring buffer was full.
    pub const DROP_SIGNAL: u32 = 1;
    /// A thread-exit event was lost (its final statistics with it).
    pub const DROP_THREAD_EXIT: u32 = 2;
    /// A fork or exec event was lost.
    pub const DROP_LIFECYCLE: u32 = 3;
    /// Task storage could not be allocated: the call was not recorded.
    pub const DROP_TASK_STORAGE: u32 = 4;
    /// A slow call's user stack could not be read at all (its stack will be unknown).
    pub const STACK_COPY_FAILED: u32 = 5;
    /// Slow-call events sent.
    pub const SLOW_CALLS: u32 = 6;
    /// Signal events sent.
    pub const SIGNALS: u32 = 7;
    pub const NUM: u32 = 8;
}

/// Names of the globals the loader sets before load (`EbpfLoader::override_global`).
pub mod globals {
    /// u64: calls at least this long produce a [`super::SlowCallEvent`].
    pub const THRESHOLD_NS: &str = "THRESHOLD_NS";
    /// u64: bit `n` set when signal `n` is a shutdown signal.
    pub const SHUTDOWN_SIGMASK: &str = "SHUTDOWN_SIGMASK";
    /// u32: byte offsets in `struct task_struct`, taken from the running kernel's BTF.
    pub const TASK_PID_OFF: &str = "TASK_PID_OFF";
    pub const TASK_TGID_OFF: &str = "TASK_TGID_OFF";
    pub const TASK_COMM_OFF: &str = "TASK_COMM_OFF";
    pub const TASK_STATE_OFF: &str = "TASK_STATE_OFF";
    /// u32: offset of `task_struct.flags` (PF_EXITING threads are left out of snapshots).
    pub const TASK_FLAGS_OFF: &str = "TASK_FLAGS_OFF";
    /// u32: offset of `task_struct.sched_info.last_arrival` (0: not available).
    pub const TASK_LAST_ARRIVAL_OFF: &str = "TASK_LAST_ARRIVAL_OFF";
    /// u32: 1 to add forked child processes of targets to the target set in the kernel.
    pub const FOLLOW_CHILDREN: &str = "FOLLOW_CHILDREN";
}

/// Names of the maps the loader touches.
pub mod maps {
    /// Array of u64 words: bit `tgid` set for every target process.
    pub const TARGETS: &str = "TARGETS";
    /// Ring buffer of events.
    pub const EVENTS: &str = "EVENTS";
    /// Per-CPU u64 counters, see [`super::counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// Array of one u64: `bpf_ktime_get_ns()` of the first shutdown signal (0: none yet).
    pub const SHUTDOWN: &str = "SHUTDOWN";
    /// Array of one u32: [`super::control`] bits for the task iterator.
    pub const CONTROL: &str = "CONTROL";
    /// Task storage of [`super::TaskState`].
    pub const TASKS: &str = "TASKS";
}

/// Default ring-buffer size in bytes (a power of two, multiple of the page size).
pub const RINGBUF_BYTES: u32 = 4 << 20;

const _: () = {
    assert!(core::mem::size_of::<InFlight>() == 48);
    assert!(core::mem::size_of::<CallStats>() == 184);
    assert!(core::mem::size_of::<TaskState>() == 48 + 32 + 184 * NUM_CALLS);
    assert!(core::mem::size_of::<EventHeader>() == 24);
    assert!(core::mem::size_of::<UserRegs>() == 24);
    assert!(core::mem::size_of::<SlowCallHead>() == 24 + 48 + 16 + 24 + 16);
    assert!(core::mem::size_of::<SlowCallEvent>() == 128 + STACK_COPY_MAX);
    assert!(core::mem::size_of::<SignalEvent>() == 24 + 24 + 16);
    assert!(core::mem::size_of::<ThreadExitEvent>().is_multiple_of(8));
    assert!(core::mem::size_of::<TaskRecord>() == 88);
    assert!(core::mem::size_of::<ForkEvent>() == 32);
    assert!(core::mem::size_of::<ExecEvent>() == 32);
    assert!(STACK_COPY_MAX.is_multiple_of(STACK_CHUNK));
    assert!(Call::ALL.len() == NUM_CALLS);
    let mut i = 0;
    while i < NUM_CALLS {
        assert!(PROBED_CALLS[i].call as usize == i);
        i += 1;
    }
    assert!(TASK_STATE_BRIEF_LEN == 80);
};
