//! The real [`Host`]: /proc, process_vm_readv and the stack collector.

use std::{
    collections::HashMap,
    os::fd::{AsFd, FromRawFd, OwnedFd},
};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use probe_ebpf::UserRegs;
use probe_lang::{
    go::{GoBinary, GoReader, Limits, process_load_bias},
    mem::ProcessMemory,
    python::{PyProcess, PySnapshot},
};

use crate::{
    procfs::{self, SyscallState},
    report::{Frame, Runtime},
    runtime,
    stack::{StackCollector, Stacks},
    tracker::{GoLook, Host, ProcessInfo},
};

/// A watched process, identified beyond its pid: a pidfd (which no other process can ever
/// answer to) and its start time (for kernels without pidfd_open).
struct Identity {
    pidfd: Option<OwnedFd>,
    start: Option<u64>,
}

impl Identity {
    fn of(pid: u32) -> Identity {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) };
        Identity {
            // SAFETY: a new fd we own.
            pidfd: (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) }),
            start: procfs::read_process_stat(pid).map(|s| s.starttime),
        }
    }

    /// The process has not exited (and, without a pidfd, its pid was not reused).
    fn alive(&self, pid: u32) -> bool {
        match &self.pidfd {
            Some(fd) => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                // A pidfd polls readable once the process has exited.
                !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
            }
            None => procfs::process_alive(pid, self.start),
        }
    }
}

pub struct ProcHost {
    stacks: StackCollector,
    /// The watched processes' identities.
    identities: HashMap<u32, Identity>,
    /// Per Go process: its parsed binary and load bias (or why it cannot be read).
    go: HashMap<u32, Result<GoProcess, String>>,
    /// Per CPython process: where its interpreter is (or why it was not found).
    py: HashMap<u32, Result<PyProcess, String>>,
}

/// The most read of one module when looking for a CPython interpreter (a libpython with debug
/// symbols is ~30 MiB).
const MAX_PYTHON_MODULE: u64 = 512 << 20;

/// Find the CPython interpreter of `pid`: its modules read through /proc/PID/map_files (the
/// very file mapped), else by path inside the target's root (never outside it), capped.
fn locate_python(pid: u32) -> Result<PyProcess, String> {
    use std::io::Read;
    let text =
        std::fs::read(format!("/proc/{pid}/maps")).map_err(|e| format!("/proc/{pid}/maps: {e}"))?;
    let maps = probe_lang::python::parse_maps(&String::from_utf8_lossy(&text));
    PyProcess::locate(&maps, |path| {
        let m = maps.iter().find(|m| m.path.as_deref() == Some(path))?;
        let file = std::fs::File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end))
            .ok()
            .or_else(|| {
                crate::target_fs::open_in_root(
                    pid,
                    path,
                    MAX_PYTHON_MODULE,
                    crate::target_fs::Symlinks::Follow,
                )
                .ok()
            })?;
        if file.metadata().ok()?.len() > MAX_PYTHON_MODULE {
            return None;
        }
        let mut bytes = Vec::new();
        file.take(MAX_PYTHON_MODULE).read_to_end(&mut bytes).ok()?;
        Some(bytes)
    })
    .map_err(|e| e.to_string())
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
    /// Processes with state loaded here (unwind tables, symbols, pidfds, Go binaries).
    pub fn loaded_processes(&self) -> usize {
        self.stacks
            .loaded_processes()
            .max(self.identities.len())
            .max(self.go.len())
            .max(self.py.len())
    }

    /// Whether a perf map of `pid` was read, and why one there was not.
    pub fn perf_map_state(&self, pid: u32) -> (bool, Option<String>) {
        let (read, skipped) = self.stacks.perf_map_state(pid);
        (read, skipped.map(str::to_string))
    }

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
                lang: None,
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
            identities: HashMap::new(),
            go: HashMap::new(),
            py: HashMap::new(),
        }
    }

    /// The Python threads of a CPython process now, with tids as stallprobe sees them.
    pub fn python(&mut self, pid: u32, other_pid_ns: bool) -> Result<PySnapshot, String> {
        let p = self
            .py
            .entry(pid)
            .or_insert_with(|| locate_python(pid))
            .as_ref()
            .map_err(Clone::clone)?;
        let mut snap = p
            .threads(&ProcessMemory { pid })
            .map_err(|e| e.to_string())?;
        if other_pid_ns {
            snap.map_tids(&probe_lang::ns::ns_tid_map(pid));
        }
        Ok(snap)
    }

    /// Name JIT frames from the process's perf map, read again now (a JVM just wrote it).
    pub fn name_jit_frames_now(&mut self, pid: u32, frames: &mut [Frame]) {
        self.stacks.name_jit_frames_now(pid, frames);
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
        procfs::thread_exists(pid, tid)
    }

    fn process_alive(&self, pid: u32) -> bool {
        match self.identities.get(&pid) {
            Some(id) => id.alive(pid),
            None => procfs::process_alive(pid, None),
        }
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
        self.identities
            .entry(pid)
            .or_insert_with(|| Identity::of(pid));
        self.stacks.prepare(pid);
    }

    fn forget(&mut self, pid: u32) {
        self.stacks.forget(pid);
        self.go.remove(&pid);
        self.py.remove(&pid);
        self.identities.remove(&pid);
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

    fn copy_stack(&mut self, pid: u32, regs: UserRegs) -> Vec<u8> {
        self.stacks.copy_live(pid, regs)
    }
}
