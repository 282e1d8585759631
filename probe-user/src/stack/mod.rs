//! User and kernel stacks of target threads: registers + stack memory → DWARF unwind →
//! symbolized frames. Kernel stacks come from /proc/PID/task/TID/stack.

pub mod memory;
pub mod symbolize;
pub mod unwind;

use std::collections::HashMap;

use probe_ebpf::UserRegs;

use crate::{
    procfs::{self, KernelFrame},
    report::Frame,
};
use symbolize::Symbolizer;
use unwind::{ProcessUnwinder, RawFrame};

/// How much of a live thread's stack is read for unwinding (from its sp upwards).
pub const LIVE_STACK_BYTES: usize = 64 * 1024;

/// Stacks of one thread at one moment.
#[derive(Clone, Debug, Default)]
pub struct Stacks {
    pub user: Vec<Frame>,
    pub kernel: Vec<KernelFrame>,
}

/// Unwinders (one per process) and the symbolizer, kept for the session.
#[derive(Default)]
pub struct StackCollector {
    unwinders: HashMap<u32, ProcessUnwinder>,
    symbols: Symbolizer,
}

impl StackCollector {
    pub fn new() -> StackCollector {
        StackCollector::default()
    }

    /// Load a process's unwind tables and cache its mappings for symbolization (while alive).
    pub fn prepare(&mut self, pid: u32) {
        self.unwinders
            .entry(pid)
            .or_insert_with(|| ProcessUnwinder::new(pid));
        self.symbols.prepare(pid);
    }

    /// The process exec'd or went away: drop what was loaded for its old image.
    pub fn forget(&mut self, pid: u32) {
        self.unwinders.remove(&pid);
        self.symbols.forget(pid);
    }

    fn unwinder(&mut self, pid: u32) -> &mut ProcessUnwinder {
        self.unwinders
            .entry(pid)
            .or_insert_with(|| ProcessUnwinder::new(pid))
    }

    /// Unwind from registers and a copy of the stack taken in the kernel (slow calls).
    pub fn from_copy(&mut self, pid: u32, regs: UserRegs, stack: &[u8]) -> Vec<Frame> {
        let raw = self.unwinder(pid).unwind(regs, stack);
        self.symbolize(pid, regs, &raw)
    }

    /// Unwind a thread that is stopped in the kernel right now: read its stack memory from sp.
    pub fn live_user(&mut self, pid: u32, regs: UserRegs) -> Vec<Frame> {
        if regs.ip == 0 || regs.sp == 0 {
            return Vec::new();
        }
        let u = self.unwinder(pid);
        let map_end = u.mapping_of(regs.sp).map(|m| m.end);
        let stack = memory::read_stack(pid, regs.sp, LIVE_STACK_BYTES, map_end);
        let raw = u.unwind(regs, &stack);
        self.symbolize(pid, regs, &raw)
    }

    /// User and kernel stack of a thread blocked right now.
    pub fn live(&mut self, pid: u32, tid: u32, regs: UserRegs) -> Stacks {
        Stacks {
            user: self.live_user(pid, regs),
            kernel: procfs::read_kernel_stack(pid, tid),
        }
    }

    fn symbolize(&mut self, pid: u32, regs: UserRegs, raw: &[RawFrame]) -> Vec<Frame> {
        if raw.is_empty() {
            // Not even the first frame: report the instruction pointer alone.
            return if regs.ip != 0 {
                self.symbols.symbolize(
                    pid,
                    &[RawFrame {
                        addr: regs.ip,
                        lookup: regs.ip,
                    }],
                )
            } else {
                Vec::new()
            };
        }
        self.symbols.symbolize(pid, raw)
    }
}
