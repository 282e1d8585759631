//! Which language runtime a target runs on, and which of its threads are the runtime's own
//! workers idling where they are expected to wait (not application stalls).
//!
//! The rules live in one table per runtime ([`RULES`]); each has a unit test.

use crate::{
    procfs,
    report::{Frame, Runtime},
};
use object::{Object, ObjectSection};

/// Detect the runtime from the executable and the loaded libraries.
pub fn detect(pid: u32) -> Runtime {
    detect_from_maps(pid).unwrap_or_else(|| detect_from_exe(pid))
}

/// From the loaded libraries and the executable's name (cheap: /proc/PID/maps). `None` when
/// they say nothing; a JVM or Python loads its library after start, so ask again later.
pub fn detect_from_maps(pid: u32) -> Option<Runtime> {
    let maps = procfs::read_maps(pid).unwrap_or_default();
    let has_lib = |needle: &str| {
        maps.iter()
            .any(|m| crate::report::basename(&m.path).starts_with(needle))
    };
    if has_lib("libjvm.so") {
        return Some(Runtime::Jvm);
    }
    if has_lib("libcoreclr.so") {
        return Some(Runtime::Dotnet);
    }
    if has_lib("libpython3") {
        return Some(Runtime::CPython);
    }
    let exe = procfs::read_exe(pid).unwrap_or_default();
    let exe_base = crate::report::basename(exe.trim_end_matches(" (deleted)")).to_string();
    if exe_base.starts_with("node") || has_lib("libnode.so") {
        return Some(Runtime::Node);
    }
    if exe_base.starts_with("python") {
        return Some(Runtime::CPython);
    }
    None
}

/// From the executable's contents (Go sections, tokio's strings): mapped, not read, through
/// /proc so deleted files and other mount namespaces work.
pub fn detect_from_exe(pid: u32) -> Runtime {
    let Ok(file) = std::fs::File::open(format!("/proc/{pid}/exe")) else {
        return Runtime::Native;
    };
    // SAFETY: read-only private mapping of an executable; see stack::unwind for the caveat.
    let Ok(data) = (unsafe { memmap2::Mmap::map(&file) }) else {
        return Runtime::Native;
    };
    let Ok(obj) = object::File::parse(&data[..]) else {
        return Runtime::Native;
    };
    if obj.section_by_name(".go.buildinfo").is_some()
        || obj.section_by_name(".gopclntab").is_some()
        || obj.section_by_name(".note.go.buildid").is_some()
    {
        return Runtime::Go;
    }
    if obj.section_by_name(".rodata").is_some_and(|s| {
        s.data()
            .is_ok_and(|d| memfind(d, b"tokio-runtime-worker") || memfind(d, b"tokio::runtime"))
    }) {
        return Runtime::Tokio;
    }
    Runtime::Native
}

/// What to tell the user about frames stallprobe cannot name for this runtime, if anything.
pub fn symbolization_hint(
    rt: Runtime,
    pid: u32,
    has_perf_map: bool,
    has_unknown_frames: bool,
) -> Option<String> {
    if has_perf_map {
        return None;
    }
    match rt {
        Runtime::Jvm if has_unknown_frames => Some(format!(
            "JIT frames unsymbolized (no /tmp/perf-{pid}.map): run `jcmd {pid} Compiler.perfmap` (JDK 17+) \
             and run stallprobe again, or start the JVM with -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit"
        )),
        Runtime::Node if has_unknown_frames => Some(
            "JavaScript frames unnamed: start node with --perf-basic-prof --interpreted-frames-native-stack \
             (writes /tmp/perf-PID.map)"
                .into(),
        ),
        Runtime::CPython => Some(
            "Python-level function names need CPython 3.12+ started with `-X perf` (or PYTHONPERFSUPPORT=1); \
             the interpreter's native frames are shown"
                .into(),
        ),
        _ => None,
    }
}

fn memfind(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A rule: a thread of `runtime` matching all given conditions is the runtime's own, idle.
pub struct Rule {
    pub runtime: Runtime,
    /// What the thread is, for the report ("Go runtime: idle M parked in the scheduler").
    pub what: &'static str,
    /// The thread's name starts with one of these (empty: any name).
    pub name_prefixes: &'static [&'static str],
    /// Some frame's function contains one of these (empty: any stack)...
    pub frames: &'static [&'static str],
    /// ...among the first this many frames (0: anywhere). For runtimes whose code also runs the
    /// application's (a tokio worker polls tasks): only a park near the top means idle.
    pub within_top: usize,
    /// The thread is in one of these syscalls (empty: any, including running).
    pub syscalls: &'static [&'static str],
}

const FUTEX: &[&str] = &["futex"];
const EPOLL: &[&str] = &["epoll_wait", "epoll_pwait", "epoll_pwait2"];

/// The rules, one block per runtime.
pub static RULES: &[Rule] = &[
    // ---- Go: goroutines are not OS threads. Idle Ms park in futex, the netpoller in epoll. ----
    Rule {
        runtime: Runtime::Go,
        what: "Go runtime: idle M parked in the scheduler",
        name_prefixes: &[],
        // Go code never waits in futex itself (goroutines park, threads do not): a futex wait
        // under `runtime.futex` is the scheduler's, even when the stack stops there (a slow call
        // whose stack was cut short).
        frames: &[
            "runtime.futex",
            "runtime.futexsleep",
            "runtime.notesleep",
            "runtime.mPark",
            "runtime.stopm",
            "runtime.notetsleep",
        ],
        syscalls: FUTEX,
        within_top: 0,
    },
    Rule {
        runtime: Runtime::Go,
        what: "Go runtime: network poller waiting for I/O",
        name_prefixes: &[],
        frames: &["runtime.netpoll"],
        syscalls: EPOLL,
        within_top: 0,
    },
    Rule {
        runtime: Runtime::Go,
        what: "Go runtime: sysmon",
        name_prefixes: &[],
        frames: &["runtime.sysmon", "runtime.usleep"],
        syscalls: &[],
        within_top: 0,
    },
    // ---- tokio: workers park in futex (condvar) or in the I/O driver's epoll_wait. Most of ----
    // tokio is inlined, and inlined frames carry short names (`park_condvar`), so these match on
    // the park machinery near the top of the stack: a worker running a task has the task there.
    Rule {
        runtime: Runtime::Tokio,
        what: "tokio worker parked with no task",
        name_prefixes: &[],
        frames: &[
            "park_condvar",
            "park_internal",
            "park_timeout",
            "Parker::park",
            "tokio::runtime::scheduler::multi_thread::park",
            "tokio::runtime::scheduler::current_thread::Context::park",
            "tokio::runtime::io::driver::Driver::turn",
            "tokio::runtime::driver::Driver::park",
        ],
        syscalls: &["futex", "epoll_wait", "epoll_pwait", "epoll_pwait2"],
        within_top: 12,
    },
    Rule {
        runtime: Runtime::Tokio,
        what: "tokio blocking-pool thread waiting for work",
        name_prefixes: &[],
        frames: &["tokio::runtime::blocking::pool"],
        syscalls: FUTEX,
        within_top: 12,
    },
    Rule {
        runtime: Runtime::Tokio,
        what: "thread waiting in tokio's Runtime::block_on for the async main",
        name_prefixes: &[],
        frames: &["CachedParkThread"],
        syscalls: FUTEX,
        within_top: 12,
    },
    // ---- JVM: HotSpot names its threads; all of these wait for work in futex. ---------------
    Rule {
        runtime: Runtime::Jvm,
        what: "JVM thread (GC, JIT compiler, VM operations, reference processing, signals)",
        name_prefixes: &[
            "GC Thread",
            "G1 ",
            "VM Thread",
            "VM Periodic",
            "C1 CompilerThre",
            "C2 CompilerThre",
            "Sweeper thread",
            "Signal Dispatch",
            "Finalizer",
            "Reference Handl",
            "Common-Cleaner",
            "Notification Th",
            "Service Thread",
            "Monitor Deflati",
            "Attach Listener",
            "JFR ",
            "Shenandoah",
            "ZDirector",
            "ZDriver",
            "ZStat",
            "ZWorker",
            "ZUnmapper",
            "Parallel GC",
            "ConcGC",
            "JVMCI",
            "Cleaner-",
        ],
        frames: &[],
        syscalls: &[],
        within_top: 0,
    },
    Rule {
        runtime: Runtime::Jvm,
        what: "JVM: the main thread after main() returned, waiting for non-daemon threads",
        name_prefixes: &["DestroyJavaVM"],
        frames: &[],
        syscalls: &[],
        within_top: 0,
    },
    Rule {
        runtime: Runtime::Jvm,
        what: "JVM: the main thread after main() returned, waiting for non-daemon threads",
        name_prefixes: &[],
        frames: &["Threads::destroy_vm", "jni_DestroyJavaVM"],
        syscalls: &[],
        within_top: 10,
    },
    Rule {
        runtime: Runtime::Jvm,
        what: "JVM: signal handler thread running the shutdown sequence (waits for the hooks)",
        name_prefixes: &[
            "SIGTERM handler",
            "SIGINT handler",
            "SIGHUP handler",
            "SIGQUIT handler",
        ],
        frames: &[],
        syscalls: &[],
        within_top: 0,
    },
    Rule {
        runtime: Runtime::Jvm,
        what: "java launcher thread waiting for the JVM's main thread",
        name_prefixes: &["java"],
        frames: &[
            "pthread_join",
            "clockjoin",
            "ContinueInNewThread",
            "CallJavaMainInNewThread",
        ],
        syscalls: FUTEX,
        within_top: 8,
    },
    // ---- Node.js: every thread is called "node"; the stacks say which is which. -------------
    Rule {
        runtime: Runtime::Node,
        what: "Node.js event loop idle in epoll (waiting for I/O or timers)",
        name_prefixes: &[],
        frames: &["uv__io_poll"],
        syscalls: EPOLL,
        within_top: 4,
    },
    Rule {
        runtime: Runtime::Node,
        what: "Node.js/V8 platform worker waiting for tasks",
        name_prefixes: &[],
        frames: &[
            "PlatformWorkerThread",
            "DelayedTaskScheduler",
            "node::inspector",
        ],
        syscalls: &[],
        within_top: 10,
    },
    Rule {
        runtime: Runtime::Node,
        what: "libuv threadpool worker waiting for work",
        name_prefixes: &["libuv-worker"],
        frames: &[],
        syscalls: FUTEX,
        within_top: 0,
    },
    // ---- .NET: CoreCLR names its threads. -----------------------------------------------------
    Rule {
        runtime: Runtime::Dotnet,
        what: ".NET runtime thread (GC, finalizer, tiered compilation, thread pool, timers)",
        name_prefixes: &[
            ".NET Finalizer",
            ".NET Tiered Com",
            ".NET BGC",
            ".NET Server GC",
            ".NET SigHandler",
            ".NET EventPipe",
            ".NET Debugger",
            ".NET Timer",
            ".NET TP Gate",
            ".NET TP Worker",
            ".NET ThreadPool",
            ".NET Long Runn",
            ".NET Sockets",
        ],
        frames: &[],
        syscalls: &[],
        within_top: 0,
    },
];

/// Rules of `rule_rt` apply to a target detected as `rt`. Tokio is a library inside a native
/// binary, and its frames are unambiguous, so its rules also apply to "native" targets.
fn applies(rule_rt: Runtime, rt: Runtime) -> bool {
    rule_rt == rt || (rule_rt == Runtime::Tokio && rt == Runtime::Native)
}

/// The rule that makes this thread a runtime thread, if any.
pub fn classify(
    runtime: Runtime,
    name: &str,
    syscall: Option<&str>,
    stack: &[Frame],
) -> Option<&'static Rule> {
    RULES.iter().find(|r| {
        applies(r.runtime, runtime)
            && (r.name_prefixes.is_empty() || r.name_prefixes.iter().any(|p| name.starts_with(p)))
            && (r.syscalls.is_empty() || syscall.is_some_and(|s| r.syscalls.contains(&s)))
            && (r.frames.is_empty()
                || stack
                    .iter()
                    .take(if r.within_top == 0 {
                        usize::MAX
                    } else {
                        r.within_top
                    })
                    .any(|f| {
                        f.function
                            .as_deref()
                            .is_some_and(|func| r.frames.iter().any(|p| func.contains(p)))
                    }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(funcs: &[&str]) -> Vec<Frame> {
        funcs
            .iter()
            .map(|f| Frame {
                function: Some(f.to_string()),
                ..Frame::unknown(0)
            })
            .collect()
    }

    #[test]
    fn go_idle_m_in_futex() {
        let s = stack(&[
            "runtime.futex",
            "runtime.futexsleep",
            "runtime.notesleep",
            "runtime.stopm",
        ]);
        let r = classify(Runtime::Go, "w", Some("futex"), &s).unwrap();
        assert!(r.what.contains("idle M"));
    }

    #[test]
    fn go_futex_with_a_stack_cut_short_is_still_the_runtimes() {
        let s = stack(&["runtime.futex"]);
        assert!(classify(Runtime::Go, "w", Some("futex"), &s).is_some());
        // cgo code waiting on a pthread mutex is the program's.
        let s = stack(&["__lll_lock_wait", "pthread_mutex_lock", "C.lock_it"]);
        assert!(classify(Runtime::Go, "w", Some("futex"), &s).is_none());
    }

    #[test]
    fn go_netpoller_in_epoll() {
        let s = stack(&[
            "runtime.epollwait",
            "runtime.netpoll",
            "runtime.findrunnable",
        ]);
        assert!(classify(Runtime::Go, "w", Some("epoll_pwait"), &s).is_some());
    }

    #[test]
    fn go_sysmon() {
        let s = stack(&["runtime.usleep", "runtime.sysmon"]);
        assert!(classify(Runtime::Go, "w", Some("nanosleep"), &s).is_some());
    }

    #[test]
    fn go_goroutine_blocked_in_a_read_syscall_is_app() {
        let s = stack(&[
            "syscall.Syscall",
            "syscall.read",
            "os.(*File).Read",
            "main.worker",
        ]);
        assert!(classify(Runtime::Go, "w", Some("read"), &s).is_none());
    }

    #[test]
    fn tokio_idle_worker_and_block_on() {
        let idle = stack(&[
            "std::sys::pal::unix::futex::futex_wait",
            "tokio::runtime::scheduler::multi_thread::park::Inner::park_condvar",
            "tokio::runtime::scheduler::multi_thread::park::Parker::park",
        ]);
        assert!(classify(Runtime::Tokio, "tokio-runtime-w", Some("futex"), &idle).is_some());
        // Also when the binary was not recognised as tokio.
        assert!(classify(Runtime::Native, "tokio-runtime-w", Some("futex"), &idle).is_some());
        let main = stack(&[
            "tokio::runtime::park::CachedParkThread::park",
            "tokio::runtime::park::CachedParkThread::block_on",
        ]);
        assert!(classify(Runtime::Tokio, "app", Some("futex"), &main).is_some());
    }

    #[test]
    fn tokio_idle_worker_with_inlined_short_names() {
        // What blazesym gives for tokio's inlined park path.
        let idle = stack(&[
            "syscall",
            "std::sys::pal::unix::futex::futex_wait",
            "<std::sys::sync::condvar::futex::Condvar>::wait",
            "wait<()>",
            "park_condvar",
            "park_internal",
            "park",
            "run",
        ]);
        assert!(classify(Runtime::Tokio, "tokio-runtime-w", Some("futex"), &idle).is_some());
    }

    #[test]
    fn tokio_worker_blocked_in_a_sync_read_is_app() {
        let busy = stack(&[
            "<std::sys::net::connection::socket::unix::Socket>::recv_with_flags",
            "tokio_select::refresh_from_peer",
            "tokio::runtime::task::core::Core<T,S>::poll",
        ]);
        assert!(classify(Runtime::Tokio, "tokio-runtime-w", Some("recvfrom"), &busy).is_none());
    }

    #[test]
    fn jvm_internal_threads_by_name() {
        for name in [
            "GC Thread#0",
            "C2 CompilerThre",
            "VM Thread",
            "Signal Dispatch",
            "Finalizer",
            "Reference Handl",
            "G1 Conc#0",
            "DestroyJavaVM",
            "SIGTERM handler",
        ] {
            assert!(
                classify(Runtime::Jvm, name, Some("futex"), &[]).is_some(),
                "{name}"
            );
        }
        // Application threads (Java names) are not.
        assert!(classify(Runtime::Jvm, "locker-a", Some("futex"), &[]).is_none());
        assert!(classify(Runtime::Jvm, "shutdown-hook", Some("futex"), &[]).is_none());
    }

    #[test]
    fn jvm_launcher_only_when_joining() {
        let launcher = stack(&[
            "__futex_abstimed_wait_common",
            "__pthread_clockjoin_ex",
            "CallJavaMainInNewThread",
        ]);
        assert!(classify(Runtime::Jvm, "java", Some("futex"), &launcher).is_some());
        // The Java main thread is also called "java": blocked in app code, it is an app thread.
        let main = stack(&[
            "__futex_abstimed_wait_common",
            "___pthread_cond_wait",
            "os::PlatformEvent::park",
        ]);
        assert!(classify(Runtime::Jvm, "java", Some("futex"), &main).is_none());
    }

    #[test]
    fn node_threads_by_stack() {
        let lp = stack(&[
            "__GI_epoll_pwait",
            "uv__io_poll",
            "uv_run",
            "node::SpinEventLoopInternal",
        ]);
        assert!(classify(Runtime::Node, "node", Some("epoll_pwait"), &lp).is_some());
        let plat = stack(&[
            "___pthread_cond_wait",
            "uv_cond_wait",
            "node::(anonymous namespace)::PlatformWorkerThread(void*)",
        ]);
        assert!(classify(Runtime::Node, "node", Some("futex"), &plat).is_some());
        // A worker parked in Atomics.wait is the application's.
        let atomics = stack(&[
            "___pthread_cond_wait",
            "v8::internal::FutexEmulation::WaitSync",
            "v8::internal::Builtin_AtomicsWait",
        ]);
        assert!(classify(Runtime::Node, "node", Some("futex"), &atomics).is_none());
    }

    #[test]
    fn dotnet_threads_by_name() {
        assert!(classify(Runtime::Dotnet, ".NET Finalizer", Some("futex"), &[]).is_some());
        assert!(classify(Runtime::Dotnet, "MyWorker", Some("futex"), &[]).is_none());
    }

    #[test]
    fn cpython_gil_waiters_are_app() {
        let gil = stack(&[
            "__futex_abstimed_wait_common",
            "take_gil",
            "PyEval_RestoreThread",
        ]);
        assert!(classify(Runtime::CPython, "worker", Some("futex"), &gil).is_none());
    }

    #[test]
    fn rules_only_apply_to_their_runtime() {
        let s = stack(&["runtime.futexsleep"]);
        assert!(classify(Runtime::Native, "w", Some("futex"), &s).is_none());
    }
}
