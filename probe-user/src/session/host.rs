//! The real [`Host`]: /proc, process_vm_readv and the stack collector.

use probe_ebpf::UserRegs;

use crate::{
    procfs::{self, SyscallState},
    report::{Frame, Runtime},
    runtime,
    stack::{StackCollector, Stacks},
    tracker::{Host, ProcessInfo},
};

pub struct ProcHost {
    stacks: StackCollector,
}

impl ProcHost {
    pub fn new() -> ProcHost {
        ProcHost {
            stacks: StackCollector::new(),
        }
    }
}

/// A thread's or process's id in its own pid namespace (the last NSpid entry), when it differs.
fn ns_id(pid: u32, tid: u32) -> Option<u32> {
    procfs::read_status(pid, tid)
        .map(|s| procfs::parse_nspid(&s))
        .and_then(|v| v.last().copied())
        .filter(|&inner| inner != tid)
}

impl Host for ProcHost {
    fn syscall(&self, pid: u32, tid: u32) -> Option<SyscallState> {
        procfs::read_syscall(pid, tid)
    }

    fn cpu_ticks(&self, pid: u32, tid: u32) -> Option<u64> {
        procfs::read_stat(pid, tid).map(|s| s.utime + s.stime)
    }

    fn schedstat(&self, pid: u32, tid: u32) -> Option<(u64, u64)> {
        procfs::read_schedstat(pid, tid)
    }

    fn thread_exists(&self, pid: u32, tid: u32) -> bool {
        procfs::task_path(pid, tid).exists()
    }

    fn process_alive(&self, pid: u32) -> bool {
        procfs::process_alive(pid)
    }

    fn zombie_status(&self, pid: u32) -> Option<i32> {
        procfs::read_process_stat(pid).and_then(|s| s.exit_code)
    }

    fn comm(&self, pid: u32, tid: u32) -> Option<String> {
        procfs::read_comm(pid, tid)
    }

    fn ns_tid(&self, pid: u32, tid: u32) -> Option<u32> {
        ns_id(pid, tid)
    }

    fn process_info(&self, pid: u32) -> ProcessInfo {
        ProcessInfo {
            comm: procfs::read_process_stat(pid)
                .map(|s| s.comm)
                .unwrap_or_default(),
            exe: procfs::read_exe(pid).unwrap_or_default(),
            cmdline: procfs::read_cmdline(pid).unwrap_or_default(),
            ns_pid: ns_id(pid, pid),
            runtime: runtime::detect(pid),
        }
    }

    fn late_runtime(&self, pid: u32) -> Option<Runtime> {
        runtime::detect_from_maps(pid)
    }

    fn fd_target(&self, pid: u32, fd: u64) -> Option<String> {
        procfs::read_fd_target(pid, fd)
    }

    fn read_u32(&self, pid: u32, addr: u64) -> Option<u32> {
        crate::stack::memory::read_u32(pid, addr)
    }

    fn prepare(&mut self, pid: u32) {
        self.stacks.prepare(pid);
    }

    fn forget(&mut self, pid: u32) {
        self.stacks.forget(pid);
    }

    fn stacks(&mut self, pid: u32, tid: u32, regs: UserRegs, kstack: &[u64]) -> Stacks {
        self.stacks.live(pid, tid, regs, kstack)
    }

    fn user_stack(&mut self, pid: u32, regs: UserRegs) -> Vec<Frame> {
        self.stacks.live_user(pid, regs)
    }

    fn stack_from_copy(&mut self, pid: u32, regs: UserRegs, stack: &[u8]) -> Vec<Frame> {
        self.stacks.unwind_copy(pid, regs, stack)
    }
}
