//! User and kernel stacks of target threads: registers + stack memory → DWARF unwind →
//! symbolized frames. Kernel stacks are the addresses the task iterator captured
//! (`bpf_get_task_stack`), symbolized from kallsyms; /proc/PID/task/TID/stack is the fallback.

pub mod elf_guard;
pub mod memory;
pub mod perfmap;
pub mod symbolize;
pub mod unwind;

use std::collections::HashMap;

use probe_ebpf::UserRegs;

use crate::{
    procfs,
    report::{Frame, KernelFrame},
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
    /// Symbolized frames by (pid, lookup address): thousands of threads blocked in the same
    /// place share their frames, and symbolization is the expensive part.
    frames: HashMap<(u32, u64), Vec<Frame>>,
    /// Per process: the unwinder's `maps_version` when blazesym last cached its mappings.
    cached_maps: HashMap<u32, u64>,
    /// Per process: its perf map (JIT code names), read at most once a second.
    perf: HashMap<u32, PerfState>,
}

#[derive(Default)]
struct PerfState {
    map: Option<perfmap::PerfMap>,
    /// Why the map there was not read.
    skipped: Option<String>,
    checked: Option<std::time::Instant>,
}

/// Entries in the frame cache before it is cleared (bounds memory on long runs).
const MAX_CACHED_FRAMES: usize = 100_000;

impl StackCollector {
    pub fn new() -> StackCollector {
        let mut c = StackCollector::default();
        c.symbols.warm_kernel();
        c
    }

    /// Load a process's unwind tables and cache its mappings for symbolization (while alive).
    pub fn prepare(&mut self, pid: u32) {
        self.refresh_perf_map(pid);
        let u = self
            .unwinders
            .entry(pid)
            .or_insert_with(|| ProcessUnwinder::new(pid));
        self.cached_maps.insert(pid, u.maps_version);
        self.symbols.prepare(pid);
    }

    /// The process's mappings changed since blazesym cached them (the dynamic loader mapped
    /// libraries after exec, dlopen, JIT): cache them again while the process is alive, and
    /// forget frames that were unknown under the old mappings.
    ///
    /// /proc/PID/maps is read again only when an address falls outside every mapping known
    /// since the last read (a long-running service's maps rarely change; reading them at each
    /// new stack would cost more than the stacks).
    fn recache_if_maps_changed(&mut self, pid: u32, addrs: &[RawFrame]) {
        let Some(u) = self.unwinders.get_mut(&pid) else {
            return;
        };
        let known = self.cached_maps.get(&pid) == Some(&u.maps_version)
            && addrs.iter().all(|f| u.mapping_of(f.addr).is_some());
        if known {
            return;
        }
        u.refresh();
        let version = u.maps_version;
        if self.cached_maps.get(&pid) == Some(&version) {
            return;
        }
        self.cached_maps.insert(pid, version);
        self.symbols.forget(pid);
        self.symbols.prepare(pid);
        self.frames
            .retain(|(p, _), f| *p != pid || f.iter().all(|fr| fr.function.is_some()));
    }

    /// What degraded while symbolizing (modules that failed the ELF check), for the report.
    pub fn notes(&self) -> Vec<String> {
        self.symbols.notes()
    }

    /// The process exec'd or went away: drop what was loaded for its old image.
    pub fn forget(&mut self, pid: u32) {
        self.perf.remove(&pid);
        self.unwinders.remove(&pid);
        self.symbols.forget(pid);
        self.frames.retain(|(p, _), _| *p != pid);
        self.cached_maps.remove(&pid);
    }

    fn unwinder(&mut self, pid: u32) -> &mut ProcessUnwinder {
        self.unwinders
            .entry(pid)
            .or_insert_with(|| ProcessUnwinder::new(pid))
    }

    /// Unwind from registers and a copy of the stack taken in the kernel (slow calls).
    pub fn unwind_copy(&mut self, pid: u32, regs: UserRegs, stack: &[u8]) -> Vec<Frame> {
        let raw = self.unwinder(pid).unwind(regs, stack);
        self.symbolize(pid, regs, &raw)
    }

    /// The top of the user stack of a thread stopped in the kernel right now, as much as the
    /// kernel copies for a slow call ([`probe_ebpf::STACK_COPY_MAX`]), for [`Self::unwind_copy`].
    pub fn copy_live(&mut self, pid: u32, regs: UserRegs) -> Vec<u8> {
        if regs.sp == 0 {
            return Vec::new();
        }
        let map_end = self.unwinder(pid).mapping_of(regs.sp).map(|m| m.end);
        memory::read_stack(pid, regs.sp, probe_ebpf::STACK_COPY_MAX, map_end)
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

    /// User and kernel stack of a thread blocked right now. `kstack` are the kernel addresses
    /// the task iterator captured; without them, /proc/PID/task/TID/stack (names only, and
    /// only with CAP_SYS_ADMIN).
    pub fn live(&mut self, pid: u32, tid: u32, regs: UserRegs, kstack: &[u64]) -> Stacks {
        let kernel = if kstack.is_empty() {
            procfs::read_kernel_stack(pid, tid)
        } else {
            self.symbols.symbolize_kernel(kstack)
        };
        Stacks {
            user: self.live_user(pid, regs),
            kernel,
        }
    }

    fn symbolize(&mut self, pid: u32, regs: UserRegs, raw: &[RawFrame]) -> Vec<Frame> {
        let only_ip;
        let raw = if raw.is_empty() {
            if regs.ip == 0 {
                return Vec::new();
            }
            // Not even the first frame unwound: report the instruction pointer alone.
            only_ip = [RawFrame {
                addr: regs.ip,
                lookup: regs.ip,
            }];
            &only_ip[..]
        } else {
            raw
        };
        let missing: Vec<RawFrame> = raw
            .iter()
            .filter(|f| !self.frames.contains_key(&(pid, f.lookup)))
            .copied()
            .collect();
        if !missing.is_empty() {
            self.recache_if_maps_changed(pid, &missing);
            if self.frames.len() > MAX_CACHED_FRAMES {
                self.frames.clear();
            }
            let symbolized = self.symbols.symbolize(pid, &missing);
            // Group the output back per address (inlined functions share one).
            for f in &missing {
                let group: Vec<Frame> = symbolized
                    .iter()
                    .filter(|s| s.addr == f.addr)
                    .cloned()
                    .collect();
                self.frames.insert((pid, f.lookup), group);
            }
        }
        let mut out: Vec<Frame> = raw
            .iter()
            .flat_map(|f| {
                let mut g = self
                    .frames
                    .get(&(pid, f.lookup))
                    .cloned()
                    .unwrap_or_default();
                // The cache is keyed by lookup address; the frame shows its own address.
                for fr in &mut g {
                    fr.addr = f.addr;
                }
                g
            })
            .collect();
        if out.iter().any(|f| f.function.is_none()) {
            self.name_jit_frames(pid, &mut out);
        }
        out
    }

    /// Name frames in JIT code from the process's perf map.
    /// [`Self::name_jit_frames`] with the perf map read again now, not up to a second late.
    pub fn name_jit_frames_now(&mut self, pid: u32, frames: &mut [Frame]) {
        if let Some(st) = self.perf.get_mut(&pid) {
            st.checked = None;
        }
        self.name_jit_frames(pid, frames);
    }

    fn name_jit_frames(&mut self, pid: u32, frames: &mut [Frame]) {
        self.refresh_perf_map(pid);
        let Some(map) = self.perf.get(&pid).and_then(|s| s.map.as_ref()) else {
            return;
        };
        for f in frames.iter_mut().filter(|f| f.function.is_none()) {
            if let Some(name) = map.lookup(f.addr) {
                f.function = Some(name.to_string());
                f.module = Some("[perf map]".into());
            }
        }
    }

    /// Look at the process's perf map again (read when it changed; at most once a second).
    fn refresh_perf_map(&mut self, pid: u32) {
        let st = self.perf.entry(pid).or_default();
        if st
            .checked
            .is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1))
        {
            st.checked = Some(std::time::Instant::now());
            match perfmap::load(pid, st.map.as_ref()) {
                perfmap::Status::Loaded(m) => {
                    st.map = Some(m);
                    st.skipped = None;
                }
                perfmap::Status::Unchanged => {}
                perfmap::Status::Missing => st.map = None,
                perfmap::Status::Skipped(why) => {
                    st.map = None;
                    st.skipped = Some(why);
                }
            }
        }
    }

    /// Processes with unwind tables or symbols loaded.
    pub fn loaded_processes(&self) -> usize {
        self.unwinders.len().max(self.perf.len())
    }

    /// Whether a perf map of `pid` was read; and why one there was skipped.
    pub fn perf_map_state(&self, pid: u32) -> (bool, Option<&str>) {
        match self.perf.get(&pid) {
            Some(s) => (s.map.is_some(), s.skipped.as_deref()),
            None => (false, None),
        }
    }
}

/// Libraries whose frames are never "where the application waits".
const SYSTEM_MODULES: &[&str] = &[
    "libc.so",
    "libc-",
    "ld-linux",
    "libpthread",
    "[vdso]",
    "libstdc++",
    "libgcc_s",
    "libjvm.so",
    "libpython3",
    "libnode",
    "libuv",
    "libcoreclr",
    "libz.so",
    "libssl",
    "libcrypto",
];

/// Function-name prefixes of standard libraries and runtimes linked into the binary itself
/// (Rust std, tokio, Go's runtime and standard packages, glibc internals).
const SYSTEM_FUNCTIONS: &[&str] = &[
    "std::",
    "<std::",
    "core::",
    "<core::",
    "alloc::",
    "<alloc::",
    "tokio::",
    "<tokio::",
    "parking_lot",
    "<parking_lot",
    "crossbeam_",
    "<crossbeam_",
    "mio::",
    "<mio::",
    "futures_",
    "<futures_",
    "__rust",
    "runtime.",
    "runtime/",
    "syscall.",
    "internal/",
    "os.",
    "os/",
    "io.",
    "net.",
    "sync.",
    "time.",
    "bufio.",
    "__libc",
    "__GI_",
    "__pthread",
    "pthread_",
    "__futex",
    "futex_",
    "__lll",
    "___pthread",
    "__clone",
    "start_thread",
    "clone3",
    "_start",
    "_Py",
    "Py",
];

/// Frames of the C library, the dynamic loader, the vDSO, or a language's standard library and
/// runtime: not where the application itself decided to wait.
pub fn is_system_frame(f: &Frame) -> bool {
    let func = f.function.as_deref().unwrap_or("");
    match f.lang {
        // The JDK's own classes.
        Some(crate::report::Lang::Java) => {
            return ["java.", "javax.", "jdk.", "sun.", "com.sun."]
                .iter()
                .any(|p| func.starts_with(p));
        }
        // The standard library (`…/lib/python3.11/threading.py`) and frozen modules.
        Some(crate::report::Lang::Python) => {
            let file = f.file.as_deref().unwrap_or("");
            return file.starts_with("<frozen")
                || file.contains("/lib/python3")
                || file.contains("/lib64/python3");
        }
        None => {}
    }
    let module = crate::report::basename(f.module.as_deref().unwrap_or(""));
    if SYSTEM_MODULES.iter().any(|m| module.starts_with(m)) {
        return true;
    }
    SYSTEM_FUNCTIONS.iter().any(|p| func.starts_with(p))
}

/// Where the application itself is waiting: the first named frame that is not a system frame
/// (falls back to the first frame).
pub fn top_app_frame(stack: &[Frame]) -> Option<String> {
    let libc_like = |f: &Frame| {
        let m = crate::report::basename(f.module.as_deref().unwrap_or(""));
        ["libc.so", "libc-", "ld-linux", "libpthread", "[vdso]"]
            .iter()
            .any(|p| m.starts_with(p))
    };
    stack
        .iter()
        .find(|f| f.function.is_some() && !is_system_frame(f))
        // All frames are libraries or runtime (a JVM thread whose Java frames are JIT code
        // without a perf map): the first one above the C library says more than libc's.
        .or_else(|| stack.iter().find(|f| f.function.is_some() && !libc_like(f)))
        .or_else(|| stack.first())
        .map(Frame::short)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(func: &str, module: &str) -> Frame {
        Frame {
            function: Some(func.into()),
            module: Some(module.into()),
            file: Some("x.rs".into()),
            line: Some(3),
            ..Frame::unknown(1)
        }
    }

    #[test]
    fn skips_libc_std_and_runtimes() {
        let rust = [
            f("std::sys::pal::unix::futex::futex_wait", "/bin/app"),
            f("std::sync::mutex::Mutex<T>::lock", "/bin/app"),
            f("mutex_deadlock::take_second", "/bin/app"),
        ];
        assert_eq!(
            top_app_frame(&rust).unwrap(),
            "mutex_deadlock::take_second (x.rs:3)"
        );
        let go = [
            f("runtime/internal/syscall.Syscall6", "/bin/g"),
            f("syscall.read", "/bin/g"),
            f("main.readCommand", "/bin/g"),
        ];
        assert_eq!(top_app_frame(&go).unwrap(), "main.readCommand (x.rs:3)");
        let tokio = [
            f(
                "<std::sys::net::connection::socket::unix::Socket>::recv_with_flags",
                "/bin/t",
            ),
            f("tokio_select::refresh_from_peer", "/bin/t"),
        ];
        assert_eq!(
            top_app_frame(&tokio).unwrap(),
            "tokio_select::refresh_from_peer (x.rs:3)"
        );
        let c = [
            f("__GI___libc_read", "/lib/x86_64-linux-gnu/libc.so.6"),
            f("fetch", "/bin/c"),
        ];
        assert_eq!(top_app_frame(&c).unwrap(), "fetch (x.rs:3)");
    }

    #[test]
    fn language_frames_skip_their_standard_libraries_by_their_own_rules() {
        let lang = |func: &str, file: &str, lang| Frame {
            function: Some(func.into()),
            file: Some(file.into()),
            line: Some(7),
            lang: Some(lang),
            ..Frame::default()
        };
        use crate::report::Lang::{Java, Python};
        let py = [
            f(
                "__futex_abstimed_wait_common",
                "/lib/x86_64-linux-gnu/libc.so.6",
            ),
            lang("Condition.wait", "/usr/lib/python3.11/threading.py", Python),
            lang(
                "Queue.get",
                "/root/.pyenv/versions/3.11.7/lib/python3.11/queue.py",
                Python,
            ),
            lang("Consumer.next_job", "/srv/app/service.py", Python),
        ];
        assert_eq!(
            top_app_frame(&py).unwrap(),
            "Consumer.next_job (service.py:7)"
        );
        // A Java package named like a Go one (`net.`, `io.`) is the application's.
        let java = [
            lang("java.lang.Object.wait", "Object.java", Java),
            lang("io.netty.channel.Loop.run", "Loop.java", Java),
        ];
        assert_eq!(
            top_app_frame(&java).unwrap(),
            "io.netty.channel.Loop.run (Loop.java:7)"
        );
    }
}
