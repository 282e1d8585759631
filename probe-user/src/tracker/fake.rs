//! A fake [`Host`] and hand-built kernel records, for the tracker's tests and the golden
//! report test.

use std::{
    cell::Cell,
    collections::{BTreeMap, BTreeSet},
};

use probe_ebpf::{CALL_NONE, Call, InFlight, TaskState, UserRegs};

use super::{Host, ProcessInfo};
use crate::{
    events::{Event, SignalInfo, TaskSnapshot},
    procfs::SyscallState,
    report::{Frame, KernelFrame, Runtime},
    stack::Stacks,
};

pub const MS: u64 = 1_000_000;
pub const PID: u32 = 100;

/// What /proc and the target's memory say, as a test sets it up.
#[derive(Default)]
pub struct FakeHost {
    pub syscalls: BTreeMap<u32, SyscallState>,
    pub dead_threads: BTreeSet<u32>,
    pub dead_processes: BTreeSet<u32>,
    pub zombie_status: BTreeMap<u32, i32>,
    pub fd_targets: BTreeMap<u64, String>,
    pub memory: BTreeMap<u64, u32>,
    /// Calls of `syscall()`: the tracker spares /proc reads for threads that did not run.
    pub syscall_reads: Cell<u32>,
    pub prepared: Vec<u32>,
    pub forgotten: Vec<u32>,
    /// Ids inside the target's pid namespace, by host id (default: the same).
    pub ns_ids: BTreeMap<u32, u32>,
    /// The looks at each Go process's goroutines, in order (the last one repeats).
    pub go_looks: BTreeMap<u32, Vec<super::host::GoLook>>,
    /// Runtimes by pid (default: native).
    pub runtimes: BTreeMap<u32, Runtime>,
    /// User stacks by tid (default: one frame `wait_in_<tid>`).
    pub user_stacks: BTreeMap<u32, Vec<Frame>>,
    /// Calls of `copy_stack()`.
    pub stack_copies: Cell<u32>,
}

pub fn frame(function: &str) -> Frame {
    Frame {
        function: Some(function.into()),
        file: Some("/src/app.c".into()),
        line: Some(42),
        module: Some("/bin/app".into()),
        ..Frame::unknown(0x1000)
    }
}

impl Host for FakeHost {
    fn syscall(&self, _pid: u32, tid: u32) -> Option<SyscallState> {
        self.syscall_reads.set(self.syscall_reads.get() + 1);
        self.syscalls.get(&tid).cloned()
    }
    fn cpu_ticks(&self, _pid: u32, _tid: u32) -> Option<u64> {
        Some(7)
    }
    fn schedstat(&self, _pid: u32, _tid: u32) -> Option<(u64, u64)> {
        None
    }
    fn thread_exists(&self, _pid: u32, tid: u32) -> bool {
        !self.dead_threads.contains(&tid)
    }
    fn process_alive(&self, pid: u32) -> bool {
        !self.dead_processes.contains(&pid)
    }
    fn zombie_status(&self, pid: u32) -> Option<i32> {
        self.zombie_status.get(&pid).copied()
    }
    fn comm(&self, _pid: u32, tid: u32) -> Option<String> {
        Some(format!("t{tid}"))
    }
    fn ns_tid(&self, _pid: u32, tid: u32) -> Option<u32> {
        self.ns_ids.get(&tid).copied()
    }
    fn process_info(&self, pid: u32) -> ProcessInfo {
        ProcessInfo {
            comm: "app".into(),
            exe: format!("/bin/app-{pid}"),
            cmdline: vec!["app".into()],
            ns_pid: self.ns_ids.get(&pid).copied(),
            runtime: self.runtimes.get(&pid).copied().unwrap_or(Runtime::Native),
        }
    }
    fn late_runtime(&self, _pid: u32) -> Option<Runtime> {
        None
    }
    fn fd_target(&self, _pid: u32, fd: u64) -> Option<String> {
        self.fd_targets.get(&fd).cloned()
    }
    fn read_u32(&self, _pid: u32, addr: u64) -> Option<u32> {
        self.memory.get(&addr).copied()
    }
    fn goroutines(&mut self, pid: u32) -> Result<super::host::GoLook, String> {
        self.go_looks
            .get_mut(&pid)
            .and_then(|v| {
                if v.len() > 1 {
                    Some(v.remove(0))
                } else {
                    v.first().cloned()
                }
            })
            .ok_or_else(|| "not a Go process".to_string())
    }
    fn prepare(&mut self, pid: u32) {
        self.prepared.push(pid);
    }
    fn forget(&mut self, pid: u32) {
        self.forgotten.push(pid);
    }
    fn stacks(&mut self, _pid: u32, tid: u32, _regs: UserRegs, _kstack: &[u64]) -> Stacks {
        Stacks {
            user: self
                .user_stacks
                .get(&tid)
                .cloned()
                .unwrap_or_else(|| vec![frame(&format!("wait_in_{tid}"))]),
            kernel: vec![KernelFrame {
                addr: 0,
                function: "futex_do_wait".into(),
                offset: Some(0x46),
            }],
        }
    }
    fn user_stack(&mut self, _pid: u32, _regs: UserRegs) -> Vec<Frame> {
        vec![frame("spin")]
    }
    fn stack_from_copy(&mut self, _pid: u32, _regs: UserRegs, stack: &[u8]) -> Vec<Frame> {
        match stack {
            // A copy user space took (see `copy_stack`): which one.
            [b'c', bp @ ..] => vec![frame(&format!(
                "copied_from_{}",
                String::from_utf8_lossy(bp)
            ))],
            _ => vec![frame("slow")],
        }
    }
    fn copy_stack(&mut self, _pid: u32, regs: UserRegs) -> Vec<u8> {
        self.stack_copies.set(self.stack_copies.get() + 1);
        format!("c{}", regs.bp).into_bytes()
    }
}

pub fn task_state(call: Option<(Call, u64, u64, u64)>) -> Box<TaskState> {
    let mut st: Box<TaskState> = Box::new(unsafe { std::mem::zeroed() });
    st.inflight = match call {
        Some((c, obj, arg, start_ns)) => InFlight {
            start_ns,
            obj,
            arg,
            call: c as u16,
            ..InFlight::default()
        },
        None => InFlight {
            call: CALL_NONE,
            ..InFlight::default()
        },
    };
    st
}

/// A sleeping thread's record; `call`: the probed call it entered (call, obj, arg, start).
pub fn asleep(tid: u32, call: Option<(Call, u64, u64, u64)>, last_arrival: u64) -> TaskSnapshot {
    TaskSnapshot {
        tid,
        tgid: PID,
        kstate: 1,
        comm: format!("t{tid}"),
        regs: UserRegs {
            ip: 0x1000,
            sp: 0x7ff0,
            bp: 0,
        },
        state: Some(task_state(call)),
        brief: false,
        last_arrival,
        reader_arrival: last_arrival + 10 * MS,
        now_ns: 0,
        kstack: vec![0xffff_ffff_8100_0000],
    }
}

pub fn running(tid: u32) -> TaskSnapshot {
    TaskSnapshot {
        kstate: 0,
        state: None,
        ..asleep(tid, None, 1)
    }
}

pub fn signal(ts_ns: u64) -> Event {
    Event::Signal(SignalInfo {
        tid: PID,
        tgid: PID,
        ts_ns,
        sig: 15,
        code: 0,
        result: 0,
        group: true,
        sender_tid: 1,
        sender_tgid: 1,
        sender_comm: "kill".into(),
    })
}
