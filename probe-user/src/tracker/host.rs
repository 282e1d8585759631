//! What the tracker learns about the target beyond the probes: /proc, its memory, its stacks.
//!
//! A trait so that the tracker runs on recorded or made-up inputs in unit tests
//! (`tests.rs`'s `FakeHost`); `crate::session::ProcHost` is the real one.

use probe_ebpf::UserRegs;

use crate::{
    procfs::SyscallState,
    report::{Frame, Runtime},
    stack::Stacks,
};

/// What is known about a process when it is first seen (or after it exec'd).
#[derive(Clone, Debug, Default)]
pub struct ProcessInfo {
    pub comm: String,
    pub exe: String,
    pub cmdline: Vec<String>,
    /// Its pid inside its own pid namespace, when that differs.
    pub ns_pid: Option<u32>,
    pub runtime: Runtime,
}

/// The goroutines of a Go process at one moment, and what reporting them needs.
#[derive(Clone, Debug)]
pub struct GoLook {
    /// `go1.23.9`.
    pub version: String,
    /// Added to the binary's addresses to get the process's (PIE load bias).
    pub bias: u64,
    /// The executable, as the report names modules.
    pub exe: String,
    pub snapshot: probe_lang::go::GoSnapshot,
    /// How the binary was understood, what degraded (for the report's notes).
    pub notes: Vec<String>,
}

pub trait Host {
    /// The syscall a thread is in (`/proc/PID/task/TID/syscall`).
    fn syscall(&self, pid: u32, tid: u32) -> Option<SyscallState>;
    /// User + system CPU time in clock ticks.
    fn cpu_ticks(&self, pid: u32, tid: u32) -> Option<u64>;
    /// (ns on a CPU, ns waiting for one) from `/proc/PID/task/TID/schedstat`.
    fn schedstat(&self, pid: u32, tid: u32) -> Option<(u64, u64)>;
    /// The thread still exists (a zombie's threads do not).
    fn thread_exists(&self, pid: u32, tid: u32) -> bool;
    /// The process exists and is not a zombie.
    fn process_alive(&self, pid: u32) -> bool;
    /// A zombie's raw wait status (exit code << 8, or the killing signal), until it is reaped.
    fn zombie_status(&self, pid: u32) -> Option<i32>;
    /// A thread's current name.
    fn comm(&self, pid: u32, tid: u32) -> Option<String>;
    /// A thread's id in its own pid namespace, when that differs from `tid`.
    fn ns_tid(&self, pid: u32, tid: u32) -> Option<u32>;
    fn process_info(&self, pid: u32) -> ProcessInfo;
    /// A runtime whose library loads after start (JVM, CPython), once it is there.
    fn late_runtime(&self, pid: u32) -> Option<Runtime>;
    /// What fd `fd` points at (`socket:[123]`, a path).
    fn fd_target(&self, pid: u32, fd: u64) -> Option<String>;
    /// A u32 of the target's memory (a futex word).
    fn read_u32(&self, pid: u32, addr: u64) -> Option<u32>;
    /// Read the goroutines of Go process `pid` (Err: why they cannot be read).
    fn goroutines(&mut self, pid: u32) -> Result<GoLook, String>;
    /// Get ready to unwind and symbolize a process's stacks (while it is alive).
    fn prepare(&mut self, pid: u32);
    /// Drop what was loaded for a process (it exec'd or is gone).
    fn forget(&mut self, pid: u32);
    /// User and kernel stack of a thread stopped in the kernel now.
    fn stacks(&mut self, pid: u32, tid: u32, regs: UserRegs, kstack: &[u64]) -> Stacks;
    /// User stack of a thread from its registers now (a running thread's sample).
    fn user_stack(&mut self, pid: u32, regs: UserRegs) -> Vec<Frame>;
    /// User stack from a copy the kernel made at the end of a slow call.
    fn stack_from_copy(&mut self, pid: u32, regs: UserRegs, stack: &[u8]) -> Vec<Frame>;
    /// The top of a blocked thread's user stack, as bytes (unwound later, if at all).
    fn copy_stack(&mut self, pid: u32, regs: UserRegs) -> Vec<u8>;
}
