//! Decoding what the kernel side sends (ring-buffer events) and dumps (task-iterator records)
//! into owned Rust values. Every decoder checks lengths and never trusts a kind or size field
//! blindly, so a short or corrupt record is skipped, not a panic (property-tested below).

use probe_ebpf::{
    CALL_NONE, Call, EventHeader, ExecEvent, ForkEvent, InFlight, STACK_COPY_MAX, SignalEvent,
    SlowCallEvent, SlowCallHead, TASK_RECORD_MAGIC, TaskRecord, TaskState, ThreadExitEvent,
    UserRegs, event_kind, futex_op, inflight_flags,
};

/// Marker for the ABI types: `#[repr(C)]`, integer fields only, so every bit pattern is a valid
/// value and an unaligned copy out of a byte buffer is sound.
///
/// # Safety
/// Only implement for such types.
unsafe trait Pod: Copy {}
unsafe impl Pod for EventHeader {}
unsafe impl Pod for InFlight {}
unsafe impl Pod for TaskState {}
unsafe impl Pod for TaskRecord {}
unsafe impl Pod for SignalEvent {}
unsafe impl Pod for ForkEvent {}
unsafe impl Pod for ExecEvent {}
unsafe impl Pod for UserRegs {}
unsafe impl Pod for SlowCallHead {}
unsafe impl Pod for ThreadExitEvent {}

fn read_pod<T: Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; T is Pod (any bit pattern valid); read_unaligned needs no alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// A timeout as the call was given it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// Waits until woken.
    None,
    Relative {
        ns: u64,
    },
    Absolute {
        ns: u64,
        realtime: bool,
    },
    /// The pointer could not be read.
    Unknown,
}

/// A probed call, as recorded at entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallRecord {
    pub call: Call,
    pub start_ns: u64,
    /// futex word address, or fd.
    pub obj: u64,
    pub arg: u64,
    pub timeout: Timeout,
    /// Non-zero: interrupted by a signal at this time, to be restarted (see the ABI).
    pub interrupted_ns: u64,
}

impl CallRecord {
    pub fn from_inflight(f: &InFlight) -> Option<CallRecord> {
        // A record is only ever stored with its start time: a zeroed one (task storage made
        // for something else, e.g. a futex wake) is no call.
        if f.call == CALL_NONE || f.start_ns == 0 {
            return None;
        }
        let call = Call::from_u16(f.call)?;
        let timeout = if f.flags & inflight_flags::TIMEOUT_UNREADABLE != 0 {
            Timeout::Unknown
        } else if f.flags & inflight_flags::HAS_TIMEOUT == 0 {
            Timeout::None
        } else if f.flags & inflight_flags::TIMEOUT_ABSOLUTE != 0 {
            Timeout::Absolute {
                ns: f.timeout_ns,
                realtime: f.flags & inflight_flags::TIMEOUT_REALTIME != 0,
            }
        } else {
            Timeout::Relative { ns: f.timeout_ns }
        };
        Some(CallRecord {
            call,
            start_ns: f.start_ns,
            obj: f.obj,
            arg: f.arg,
            timeout,
            interrupted_ns: f.interrupted_ns,
        })
    }

    /// The futex op name for futex calls.
    pub fn futex_op_name(&self) -> Option<&'static str> {
        (self.call == Call::Futex).then(|| futex_op::name(self.arg as u32))
    }
}

#[derive(Clone, Debug)]
pub struct SlowCall {
    pub tid: u32,
    pub tgid: u32,
    pub end_ns: u64,
    pub call: CallRecord,
    pub dur_ns: u64,
    pub ret: i64,
    pub regs: UserRegs,
    /// User stack from `regs.sp` upwards.
    pub stack: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignalInfo {
    pub tid: u32,
    pub tgid: u32,
    pub ts_ns: u64,
    pub sig: u32,
    pub code: i32,
    pub result: i32,
    pub group: bool,
    pub sender_tid: u32,
    pub sender_tgid: u32,
    pub sender_comm: String,
}

#[derive(Clone, Debug)]
pub struct ThreadExit {
    pub tid: u32,
    pub tgid: u32,
    pub ts_ns: u64,
    pub comm: String,
    pub state: Option<Box<TaskState>>,
}

#[derive(Clone, Debug)]
pub enum Event {
    SlowCall(Box<SlowCall>),
    Signal(SignalInfo),
    ThreadExit(ThreadExit),
    Fork {
        parent_tgid: u32,
        ts_ns: u64,
        child_pid: u32,
        followed: bool,
    },
    Exec {
        tgid: u32,
        ts_ns: u64,
    },
}

/// `comm` bytes up to the first NUL.
pub fn comm_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    crate::report::target_text(&b[..end])
}

/// Decode one ring-buffer record; `None` for anything malformed or unknown.
pub fn decode_event(bytes: &[u8]) -> Option<Event> {
    let hdr: EventHeader = read_pod(bytes)?;
    match hdr.kind {
        event_kind::SLOW_CALL => {
            let head: SlowCallHead = read_pod(bytes)?;
            let stack = &bytes[std::mem::offset_of!(SlowCallEvent, stack)..];
            let stack_len = (head.stack_len as usize)
                .min(STACK_COPY_MAX)
                .min(stack.len());
            // The copy starts at or below sp; hand on what starts at sp.
            let skip = (head
                .regs
                .sp
                .checked_sub(head.stack_addr)
                .unwrap_or(u64::MAX) as usize)
                .min(stack_len);
            Some(Event::SlowCall(Box::new(SlowCall {
                tid: hdr.tid,
                tgid: hdr.tgid,
                end_ns: hdr.ts_ns,
                call: CallRecord::from_inflight(&head.call)?,
                dur_ns: head.dur_ns,
                ret: head.ret,
                regs: head.regs,
                stack: stack[skip..stack_len].to_vec(),
            })))
        }
        event_kind::SIGNAL => {
            let e: SignalEvent = read_pod(bytes)?;
            Some(Event::Signal(SignalInfo {
                tid: e.hdr.tid,
                tgid: e.hdr.tgid,
                ts_ns: e.hdr.ts_ns,
                sig: e.sig,
                code: e.code,
                result: e.result,
                group: e.group != 0,
                sender_tid: e.sender_tid,
                sender_tgid: e.sender_tgid,
                sender_comm: comm_str(&e.sender_comm),
            }))
        }
        event_kind::THREAD_EXIT => {
            let e: ThreadExitEvent = read_pod(bytes)?;
            Some(Event::ThreadExit(ThreadExit {
                tid: hdr.tid,
                tgid: hdr.tgid,
                ts_ns: hdr.ts_ns,
                comm: comm_str(&e.comm),
                state: (e.has_state == 1).then(|| Box::new(e.state)),
            }))
        }
        event_kind::FORK => {
            let e: ForkEvent = read_pod(bytes)?;
            Some(Event::Fork {
                parent_tgid: e.hdr.tgid,
                ts_ns: e.hdr.ts_ns,
                child_pid: e.child_pid,
                followed: e.followed != 0,
            })
        }
        event_kind::EXEC => {
            let e: ExecEvent = read_pod(bytes)?;
            Some(Event::Exec {
                tgid: e.hdr.tgid,
                ts_ns: e.hdr.ts_ns,
            })
        }
        _ => None,
    }
}

/// A target thread as the task iterator saw it.
#[derive(Clone, Debug)]
pub struct TaskSnapshot {
    pub tid: u32,
    pub tgid: u32,
    /// `task->__state`: 0 running/runnable, 1 interruptible sleep, 2 uninterruptible, ...
    pub kstate: u32,
    pub comm: String,
    pub regs: UserRegs,
    pub state: Option<Box<TaskState>>,
    /// `state` holds only the call in flight and the counters; its histograms are not filled.
    pub brief: bool,
    pub last_arrival: u64,
    pub reader_arrival: u64,
    pub now_ns: u64,
    /// Kernel stack addresses, innermost first (sleeping threads only).
    pub kstack: Vec<u64>,
}

impl TaskSnapshot {
    /// The probed call this thread is inside, if it entered it after we attached.
    pub fn in_flight(&self) -> Option<CallRecord> {
        self.state
            .as_ref()
            .and_then(|s| CallRecord::from_inflight(&s.inflight))
    }

    /// CLOCK_MONOTONIC time (ns) when this thread last got a CPU, mapped from the scheduler clock
    /// through the reading thread's own last arrival. `None` when the kernel lacks the field.
    pub fn last_ran_mono_ns(&self) -> Option<u64> {
        if self.last_arrival == 0 || self.reader_arrival == 0 {
            return None;
        }
        let ago = self.reader_arrival.checked_sub(self.last_arrival)?;
        self.now_ns.checked_sub(ago)
    }
}

/// Decode the task iterator's output: records, each optionally followed by a `TaskState`.
pub fn decode_snapshot(mut buf: &[u8]) -> Vec<TaskSnapshot> {
    let mut out = Vec::new();
    while let Some(rec) = read_pod::<TaskRecord>(buf) {
        if rec.magic != TASK_RECORD_MAGIC {
            break; // out of sync: stop rather than invent threads
        }
        buf = &buf[size_of::<TaskRecord>()..];
        let (state, brief) = match rec.has_state {
            probe_ebpf::STATE_FULL => {
                let Some(st) = read_pod::<TaskState>(buf) else {
                    break;
                };
                buf = &buf[size_of::<TaskState>()..];
                (Some(Box::new(st)), false)
            }
            probe_ebpf::STATE_BRIEF => {
                let n = probe_ebpf::TASK_STATE_BRIEF_LEN;
                if buf.len() < n {
                    break;
                }
                // The fields before the histograms; the histograms stay zero (`brief`).
                let mut full = vec![0u8; size_of::<TaskState>()];
                full[..n].copy_from_slice(&buf[..n]);
                buf = &buf[n..];
                (read_pod::<TaskState>(&full).map(Box::new), true)
            }
            _ => (None, false),
        };
        let n = (rec.kstack_len as usize).min(probe_ebpf::KSTACK_MAX);
        if buf.len() < n * 8 {
            break;
        }
        let kstack = buf[..n * 8]
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        buf = &buf[n * 8..];
        out.push(TaskSnapshot {
            brief,
            kstack,
            tid: rec.tid,
            tgid: rec.tgid,
            kstate: rec.state,
            comm: comm_str(&rec.comm),
            regs: rec.regs,
            state,
            last_arrival: rec.last_arrival,
            reader_arrival: rec.reader_arrival,
            now_ns: rec.now_ns,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes_of<T: Pod>(v: &T) -> Vec<u8> {
        // SAFETY: T is Pod, reading its bytes is fine.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn a_zeroed_in_flight_record_is_no_call() {
        // Task storage made by a futex wake is zeroed: call 0 is Futex, but it never started.
        let zeroed: InFlight = unsafe { std::mem::zeroed() };
        assert_eq!(CallRecord::from_inflight(&zeroed), None);
        let started = InFlight {
            start_ns: 5,
            ..zeroed
        };
        assert_eq!(
            CallRecord::from_inflight(&started).map(|c| c.call),
            Some(Call::from_u16(0).unwrap())
        );
    }

    #[test]
    fn signal_roundtrip() {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"bash");
        let e = SignalEvent {
            hdr: EventHeader {
                kind: event_kind::SIGNAL,
                tid: 10,
                tgid: 10,
                _pad: 0,
                ts_ns: 99,
            },
            sig: 15,
            code: 0,
            result: 0,
            group: 1,
            sender_tid: 5,
            sender_tgid: 5,
            sender_comm: comm,
        };
        match decode_event(&bytes_of(&e)).unwrap() {
            Event::Signal(s) => {
                assert_eq!(s.sig, 15);
                assert_eq!(s.sender_comm, "bash");
                assert!(s.group);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn slow_call_with_short_stack() {
        let head = SlowCallHead {
            hdr: EventHeader {
                kind: event_kind::SLOW_CALL,
                tid: 7,
                tgid: 6,
                _pad: 0,
                ts_ns: 1,
            },
            call: InFlight {
                start_ns: 5,
                obj: 0x1000,
                arg: 128,
                timeout_ns: 0,
                call: Call::Futex as u16,
                flags: 0,
                _pad: 0,
                interrupted_ns: 0,
            },
            stack_len: 1000, // claims more than present
            ..Default::default()
        };
        let mut buf = bytes_of(&head);
        buf.resize(std::mem::offset_of!(SlowCallEvent, stack) + 64, 0);
        match decode_event(&buf).unwrap() {
            Event::SlowCall(s) => {
                assert_eq!(s.call.call, Call::Futex);
                assert_eq!(s.call.futex_op_name(), Some("FUTEX_WAIT_PRIVATE"));
                assert_eq!(s.stack.len(), 64);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn snapshot_records_with_and_without_state() {
        let rec = |tid, has| TaskRecord {
            magic: TASK_RECORD_MAGIC,
            tid,
            tgid: 1,
            has_state: has,
            ..Default::default()
        };
        let mut buf = bytes_of(&rec(2, 0));
        buf.extend(bytes_of(&rec(3, probe_ebpf::STATE_FULL)));
        let mut st: TaskState = unsafe { std::mem::zeroed() };
        st.inflight.call = Call::Read as u16;
        st.inflight.obj = 4;
        st.stats[0].count = 9;
        st.inflight.start_ns = 1_000;
        buf.extend(bytes_of(&st));
        buf.extend(bytes_of(&rec(4, 0)));
        buf.extend(bytes_of(&rec(5, probe_ebpf::STATE_BRIEF)));
        buf.extend(&bytes_of(&st)[..probe_ebpf::TASK_STATE_BRIEF_LEN]);
        let s = decode_snapshot(&buf);
        assert_eq!(s.len(), 4);
        assert!(s[0].state.is_none());
        assert_eq!(s[1].in_flight().unwrap().call, Call::Read);
        assert_eq!(s[1].state.as_ref().unwrap().stats[0].count, 9);
        assert_eq!(s[2].tid, 4);
        assert!(s[3].brief);
        assert_eq!(s[3].in_flight().unwrap().obj, 4);
        assert_eq!(
            s[3].state.as_ref().unwrap().stats[0].count,
            0,
            "no histograms in a brief"
        );
    }

    #[test]
    fn last_ran_maps_clocks() {
        let s = TaskSnapshot {
            tid: 1,
            tgid: 1,
            kstate: 1,
            comm: String::new(),
            regs: UserRegs::default(),
            state: None,
            brief: false,
            last_arrival: 1_000,
            reader_arrival: 5_000,
            now_ns: 100_000,
            kstack: vec![],
        };
        assert_eq!(s.last_ran_mono_ns(), Some(96_000));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..20000), kind in 0u32..8) {
            let mut b = bytes;
            if b.len() >= 4 {
                b[..4].copy_from_slice(&kind.to_ne_bytes());
            }
            let _ = decode_event(&b);
            let _ = decode_snapshot(&b);
            if b.len() >= 4 {
                b[..4].copy_from_slice(&TASK_RECORD_MAGIC.to_ne_bytes());
            }
            let _ = decode_snapshot(&b);
        }
    }
}
