//! The real [`Host`]: /proc, process_vm_readv and the stack collector.

use std::collections::HashMap;

use probe_ebpf::UserRegs;
use probe_lang::{
    go::{GoBinary, GoReader, Limits, process_load_bias},
    mem::ProcessMemory,
};

use crate::{
    procfs::{self, SyscallState},
    report::{Frame, Runtime},
    runtime,
    stack::{StackCollector, Stacks},
    tracker::{GoLook, Host, ProcessInfo},
};

pub struct ProcHost {
    stacks: StackCollector,
    /// Per Go process: its parsed binary and load bias (or why it cannot be read).
    go: HashMap<u32, Result<GoProcess, String>>,
}

/// A Go process's executable, parsed once.
struct GoProcess {
    bin: GoBinary,
    bias: u64,
    exe: String,
}

impl GoProcess {
    fn open(pid: u32) -> Result<GoProcess, String> {
        let file = std::fs::File::open(format!("/proc/{pid}/exe"))
            .map_err(|e| format!("cannot open its executable: {e}"))?;
        // SAFETY: a read-only private mapping; see stack::unwind for the caveat.
        let data = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| format!("cannot map its executable: {e}"))?;
        let bin = GoBinary::parse(&data).map_err(|e| e.to_string())?;
        let bias = process_load_bias(pid, &data).map_err(|e| e.to_string())?;
        Ok(GoProcess {
            bin,
            bias,
            exe: procfs::read_exe(pid).unwrap_or_default(),
        })
    }
}

impl ProcHost {
    /// Name the frames of a Go executable that the symbolizer could not (a stripped binary
    /// has no symbol table, but its pclntab names every function, inlined ones included).
    fn name_go_frames(&mut self, pid: u32, frames: Vec<Frame>) -> Vec<Frame> {
        if frames.iter().all(|f| f.function.is_some()) {
            return frames;
        }
        let Ok(p) = self.go.entry(pid).or_insert_with(|| GoProcess::open(pid)) else {
            return frames;
        };
        let mut out = Vec::with_capacity(frames.len());
        for (i, f) in frames.into_iter().enumerate() {
            if f.function.is_some() {
                out.push(f);
                continue;
            }
            // A caller's frame holds a return address: look up the call instruction. Frames
            // outside the executable's functions are not found and stay as they are.
            let pc = f.addr.wrapping_sub(p.bias).wrapping_sub((i > 0) as u64);
            let named = p.bin.symbolize(pc);
            if named.is_empty() {
                out.push(f);
                continue;
            }
            out.extend(named.iter().map(|g| Frame {
                addr: f.addr,
                function: Some(g.function.to_string()),
                file: Some(g.file.to_string()),
                line: Some(g.line),
                module: Some(p.exe.clone()),
                inlined: g.inlined,
                offset: None,
            }));
        }
        out
    }

    /// Modules that could not be symbolized in full (they failed the ELF check), and why.
    pub fn symbol_notes(&self) -> Vec<String> {
        self.stacks.notes()
    }

    pub fn new() -> ProcHost {
        ProcHost {
            stacks: StackCollector::new(),
            go: HashMap::new(),
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

    fn goroutines(&mut self, pid: u32) -> Result<GoLook, String> {
        let p = self
            .go
            .entry(pid)
            .or_insert_with(|| GoProcess::open(pid))
            .as_ref()
            .map_err(Clone::clone)?;
        let snapshot = GoReader::new(&p.bin, p.bias)
            .snapshot(&ProcessMemory { pid }, Limits::default())
            .map_err(|e| e.to_string())?;
        Ok(GoLook {
            version: p.bin.version().to_string(),
            bias: p.bias,
            exe: p.exe.clone(),
            snapshot,
            notes: p.bin.notes().to_vec(),
        })
    }

    fn prepare(&mut self, pid: u32) {
        self.stacks.prepare(pid);
    }

    fn forget(&mut self, pid: u32) {
        self.stacks.forget(pid);
        self.go.remove(&pid);
    }

    fn stacks(&mut self, pid: u32, tid: u32, regs: UserRegs, kstack: &[u64]) -> Stacks {
        let s = self.stacks.live(pid, tid, regs, kstack);
        Stacks {
            user: self.name_go_frames(pid, s.user),
            kernel: s.kernel,
        }
    }

    fn user_stack(&mut self, pid: u32, regs: UserRegs) -> Vec<Frame> {
        let s = self.stacks.live_user(pid, regs);
        self.name_go_frames(pid, s)
    }

    fn stack_from_copy(&mut self, pid: u32, regs: UserRegs, stack: &[u8]) -> Vec<Frame> {
        let s = self.stacks.unwind_copy(pid, regs, stack);
        self.name_go_frames(pid, s)
    }
}
