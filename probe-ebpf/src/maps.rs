//! Maps and load-time globals of the kernel side, and the small helpers every program uses.

use aya_ebpf::{
    btf_maps::{Array, PerCpuArray, RingBuf},
    macros::btf_map,
};
use probe_ebpf::{RINGBUF_BYTES, TaskState};

// ---- globals, set by the loader (`EbpfLoader::override_global`) --------------------------------
// Read them with `global()`: a plain read would let LLVM fold the initial value in.

#[unsafe(no_mangle)]
static THRESHOLD_NS: u64 = 500_000_000;
#[unsafe(no_mangle)]
static SHUTDOWN_SIGMASK: u64 = 0;
#[unsafe(no_mangle)]
static TASK_PID_OFF: u32 = 0;
#[unsafe(no_mangle)]
static TASK_TGID_OFF: u32 = 0;
#[unsafe(no_mangle)]
static TASK_COMM_OFF: u32 = 0;
#[unsafe(no_mangle)]
static TASK_STATE_OFF: u32 = 0;
#[unsafe(no_mangle)]
static TASK_FLAGS_OFF: u32 = 0;
#[unsafe(no_mangle)]
static TASK_LAST_ARRIVAL_OFF: u32 = 0;
#[unsafe(no_mangle)]
static FOLLOW_CHILDREN: u32 = 0;

#[inline(always)]
fn global<T: Copy>(g: &'static T) -> T {
    unsafe { core::ptr::read_volatile(g) }
}
#[inline(always)]
pub fn threshold_ns() -> u64 {
    global(&THRESHOLD_NS)
}
#[inline(always)]
pub fn shutdown_sigmask() -> u64 {
    global(&SHUTDOWN_SIGMASK)
}
#[inline(always)]
pub fn task_pid_off() -> u32 {
    global(&TASK_PID_OFF)
}
#[inline(always)]
pub fn task_tgid_off() -> u32 {
    global(&TASK_TGID_OFF)
}
#[inline(always)]
pub fn task_comm_off() -> u32 {
    global(&TASK_COMM_OFF)
}
#[inline(always)]
pub fn task_state_off() -> u32 {
    global(&TASK_STATE_OFF)
}
#[inline(always)]
pub fn task_flags_off() -> u32 {
    global(&TASK_FLAGS_OFF)
}
#[inline(always)]
pub fn task_last_arrival_off() -> u32 {
    global(&TASK_LAST_ARRIVAL_OFF)
}
#[inline(always)]
pub fn follow_children() -> bool {
    global(&FOLLOW_CHILDREN) != 0
}

// ---- maps ----------------------------------------------------------------------------------------

/// Bitmap of target process ids: bit `tgid % 64` of word `tgid / 64`. An array (not a hash) so
/// the check on every probed syscall of the host is one inlined load. The loader sizes it from
/// `/proc/sys/kernel/pid_max`.
#[btf_map]
static TARGETS: Array<u64, 1024> = Array::new();

/// Events to user space. Fixed size; a full buffer drops the event and counts it.
#[btf_map]
static EVENTS: RingBuf<u8, { RINGBUF_BYTES as usize }> = RingBuf::new();

/// Per-CPU counters, indexed by `probe_ebpf::counter`.
#[btf_map]
static COUNTERS: PerCpuArray<u64, { probe_ebpf::counter::NUM as usize }> = PerCpuArray::new();

/// `[0]`: what the task iterator should dump (`probe_ebpf::control`), set by user space.
#[btf_map]
static CONTROL: Array<u32, 1> = Array::new();

/// Whether the task iterator should dump whole task states (with histograms).
#[inline(always)]
pub fn want_stats() -> bool {
    match CONTROL.get(0) {
        Some(c) => *c & probe_ebpf::control::WANT_STATS != 0,
        None => true,
    }
}

/// `[0]`: `bpf_ktime_get_ns()` of the first shutdown signal to any target (0 = none yet).
#[btf_map]
static SHUTDOWN: Array<u64, 1> = Array::new();

/// Per-thread state, in task local storage: created on a target thread's first probed call and
/// freed by the kernel with the task, so it is bounded by the target's thread count and needs no
/// cleanup. Cheaper than a hash keyed by tid on the hot path (no hashing, no preallocated table).
#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; 29], // BPF_MAP_TYPE_TASK_STORAGE
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; 1], // BPF_F_NO_PREALLOC
}
unsafe impl<T> Sync for TaskStorage<T> {}

#[btf_map]
static TASKS: TaskStorage<TaskState> = TaskStorage {
    r#type: core::ptr::null(),
    key: core::ptr::null(),
    value: core::ptr::null(),
    max_entries: core::ptr::null(),
    map_flags: core::ptr::null(),
};

/// Is `tgid` a target process?
#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    match TARGETS.get(tgid >> 6) {
        Some(word) => (*word >> (tgid & 63)) & 1 != 0,
        None => false,
    }
}

/// Remove `tgid` from the target set (its last thread is exiting).
#[inline(always)]
pub fn remove_target(tgid: u32) {
    if let Some(word) = TARGETS.get_ptr_mut(tgid >> 6) {
        // Not atomic, like `add_target`: user space reads the word back before it writes it.
        unsafe { *word &= !(1u64 << (tgid & 63)) };
    }
}

/// Add `tgid` to the target set (used for `--follow-children`).
#[inline(always)]
pub fn add_target(tgid: u32) {
    if let Some(word) = TARGETS.get_ptr_mut(tgid >> 6) {
        // Not atomic (the BPF target has no fetch-or in stable Rust): the only other writer is
        // the loader, when it adds a target; a lost bit there is re-set by its own update.
        unsafe { *word |= 1u64 << (tgid & 63) };
    }
}

#[inline(always)]
pub fn count(idx: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(idx) {
        unsafe { *c += 1 };
    }
}

/// Time of the first shutdown signal, 0 when none was seen.
#[inline(always)]
pub fn shutdown_ts() -> u64 {
    match SHUTDOWN.get(0) {
        Some(ts) => *ts,
        None => 0,
    }
}

#[inline(always)]
pub fn set_shutdown_ts(ts: u64) {
    if let Some(p) = SHUTDOWN.get_ptr_mut(0) {
        unsafe {
            if *p == 0 {
                *p = ts;
            }
        }
    }
}

/// This thread's state; with `create`, allocate it on first use.
#[inline(always)]
pub fn task_state(task: *mut core::ffi::c_void, create: bool) -> Option<&'static mut TaskState> {
    let flags = if create { 1 } else { 0 }; // BPF_LOCAL_STORAGE_GET_F_CREATE
    let p = unsafe {
        aya_ebpf::helpers::generated::bpf_task_storage_get(
            core::ptr::from_ref(&TASKS).cast_mut().cast(),
            task.cast(),
            core::ptr::null_mut(),
            flags,
        )
    }
    .cast::<TaskState>();
    if p.is_null() {
        if create {
            count(probe_ebpf::counter::DROP_TASK_STORAGE);
        }
        None
    } else {
        Some(unsafe { &mut *p })
    }
}

/// Reserve a ring-buffer slot for a `T`; `None` (and `drop_counter` bumped) when full.
#[inline(always)]
pub fn reserve<T: 'static>(drop_counter: u32) -> Option<aya_ebpf::maps::ring_buf::RingBufEntry<T>> {
    let e = EVENTS.reserve_untyped::<T>(0);
    if e.is_none() {
        count(drop_counter);
    }
    e
}

/// Read a kernel value at `base + off` (offsets come from BTF, see the globals above).
#[inline(always)]
pub fn read_kernel<T>(base: *const u8, off: u32) -> Option<T> {
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(base.add(off as usize).cast::<T>()).ok() }
}
