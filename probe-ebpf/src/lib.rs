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

/// The blocking syscalls stallprobe probes. The discriminant indexes [`TaskState::stats`].
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Call {
    Futex = 0,
    FutexWaitv = 1,
    EpollWait = 2,
    EpollPwait = 3,
    EpollPwait2 = 4,
    Read = 5,
    Readv = 6,
    Recvfrom = 7,
    Recvmsg = 8,
    Recvmmsg = 9,
}

/// Number of probed calls (length of [`Call::ALL`]).
pub const NUM_CALLS: usize = 10;

/// `InFlight::call` when the thread is not inside a probed call.
pub const CALL_NONE: u16 = 0xffff;

impl Call {
    pub const ALL: [Call; NUM_CALLS] = [
        Call::Futex,
        Call::FutexWaitv,
        Call::EpollWait,
        Call::EpollPwait,
        Call::EpollPwait2,
        Call::Read,
        Call::Readv,
        Call::Recvfrom,
        Call::Recvmsg,
        Call::Recvmmsg,
    ];

    pub fn from_u16(v: u16) -> Option<Call> {
        Call::ALL.get(v as usize).copied()
    }

    /// The syscall's name, as in `man 2`.
    pub fn name(self) -> &'static str {
        match self {
            Call::Futex => "futex",
            Call::FutexWaitv => "futex_waitv",
            Call::EpollWait => "epoll_wait",
            Call::EpollPwait => "epoll_pwait",
            Call::EpollPwait2 => "epoll_pwait2",
            Call::Read => "read",
            Call::Readv => "readv",
            Call::Recvfrom => "recvfrom",
            Call::Recvmsg => "recvmsg",
            Call::Recvmmsg => "recvmmsg",
        }
    }

    /// The kernel function the fentry/fexit programs attach to (x86_64 syscall wrappers).
    pub fn kernel_fn(self) -> &'static str {
        match self {
            Call::Futex => "__x64_sys_futex",
            Call::FutexWaitv => "__x64_sys_futex_waitv",
            Call::EpollWait => "__x64_sys_epoll_wait",
            Call::EpollPwait => "__x64_sys_epoll_pwait",
            Call::EpollPwait2 => "__x64_sys_epoll_pwait2",
            Call::Read => "__x64_sys_read",
            Call::Readv => "__x64_sys_readv",
            Call::Recvfrom => "__x64_sys_recvfrom",
            Call::Recvmsg => "__x64_sys_recvmsg",
            Call::Recvmmsg => "__x64_sys_recvmmsg",
        }
    }

    /// x86_64 syscall number.
    pub fn nr(self) -> u32 {
        match self {
            Call::Futex => 202,
            Call::FutexWaitv => 449,
            Call::EpollWait => 232,
            Call::EpollPwait => 281,
            Call::EpollPwait2 => 441,
            Call::Read => 0,
            Call::Readv => 19,
            Call::Recvfrom => 45,
            Call::Recvmsg => 47,
            Call::Recvmmsg => 299,
        }
    }

    pub fn from_nr(nr: u32) -> Option<Call> {
        Call::ALL.iter().copied().find(|c| c.nr() == nr)
    }

    /// What the call's first argument is: a futex word address or a file descriptor.
    pub fn waits_on_fd(self) -> bool {
        !matches!(self, Call::Futex | Call::FutexWaitv)
    }
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

/// A probed call that took at least the threshold, sent at syscall exit.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SlowCallEvent {
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
    assert!(core::mem::size_of::<SlowCallEvent>() == 24 + 48 + 16 + 24 + 16 + STACK_COPY_MAX);
    assert!(core::mem::size_of::<SignalEvent>() == 24 + 24 + 16);
    assert!(core::mem::size_of::<ThreadExitEvent>().is_multiple_of(8));
    assert!(core::mem::size_of::<TaskRecord>() == 88);
    assert!(core::mem::size_of::<ForkEvent>() == 32);
    assert!(core::mem::size_of::<ExecEvent>() == 32);
    assert!(STACK_COPY_MAX.is_multiple_of(STACK_CHUNK));
    assert!(Call::ALL.len() == NUM_CALLS);
    assert!(TASK_STATE_BRIEF_LEN == 80);
};
