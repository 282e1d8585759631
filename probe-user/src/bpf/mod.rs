//! Loading and attaching the kernel programs, and the handles user space keeps on them: the
//! target set, the event ring buffer, the drop counters and the task-iterator snapshot.
//!
//! This module is the only place that knows program and map names; everything above it works
//! with [`Probes`] and the decoded types of [`crate::events`].

pub mod btf;

use std::io::Read;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FEntry, FExit, Iter, ProgramError, TracePoint},
};
use probe_ebpf::{Call, PROBED_CALLS, counter, globals, maps, programs};

use crate::{
    error::StallError,
    events::{TaskSnapshot, decode_snapshot},
    report::{Counters, Hook},
};

/// The BPF object built from probe-ebpf by build.rs.
static BPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/stallprobe-ebpf"));

/// Where the blocking-call programs should hook in (`--hook`; see
/// probe-ebpf/src/programs/hooks.rs). The one that ran is a [`Hook`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum HookChoice {
    /// fentry if this kernel allows it, else raw tracepoints (default).
    #[default]
    Auto,
    /// fentry/fexit on each probed syscall (cheapest, see docs/design.md).
    Fentry,
    /// BTF raw tracepoints sys_enter/sys_exit (every syscall on the host passes through).
    Raw,
    /// syscalls:sys_enter_*/sys_exit_* tracepoints (needs tracefs).
    Tracepoint,
}

/// What the kernel side is configured with at load time.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    pub threshold_ns: u64,
    /// Bit n set: signal n is a shutdown signal.
    pub shutdown_sigmask: u64,
    pub hook: HookChoice,
    pub follow_children: bool,
    /// Forward the kernel side's debug log to stderr.
    pub bpf_log: bool,
}

/// The loaded, attached kernel side.
pub struct Probes {
    ebpf: Ebpf,
    targets: Array<MapData, u64>,
    counters: PerCpuArray<MapData, u64>,
    shutdown: Array<MapData, u64>,
    control: Array<MapData, u32>,
    events: Option<RingBuf<MapData>>,
    /// Calls that could not be probed on this kernel.
    pub skipped_calls: Vec<Call>,
    /// The hook in use.
    pub hook: Hook,
    /// Why `Auto` did not pick fentry, when it did not.
    pub fallback_reason: Option<String>,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

fn load_err(action: impl Into<String>, e: impl std::fmt::Display) -> StallError {
    let action = action.into();
    let detail = e.to_string();
    let hint = if detail.contains("Operation not permitted") || detail.contains("EPERM") {
        Some("loading BPF programs needs root or CAP_BPF + CAP_PERFMON".to_string())
    } else {
        None
    };
    StallError::Load {
        action,
        detail: shorten_verifier_log(&detail),
        hint,
    }
}

/// Keep the error line and the end of a verifier log, which is where the reason is.
fn shorten_verifier_log(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    if lines.len() <= 24 {
        return s.to_string();
    }
    let mut out = lines[..2].join("\n");
    out.push_str("\n  ...\n");
    out.push_str(&lines[lines.len() - 20..].join("\n"));
    out
}

fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4_194_304)
}

impl Probes {
    /// Check privileges and kernel, load the object, attach every program.
    pub fn load(opts: &ProbeOptions) -> Result<Probes, StallError> {
        crate::preflight::check_privileges()?;
        crate::preflight::check_kernel()?;
        if BPF_OBJECT.is_empty() {
            return Err(StallError::Load {
                action: "load the kernel programs".into(),
                detail:
                    "this stallprobe binary was built with AYA_BUILD_SKIP=1 and has no BPF object"
                        .into(),
                hint: Some("rebuild it with `cargo xtask build`".into()),
            });
        }
        let off = btf::TaskOffsets::from_kernel()?;
        // Kernel memory limits for BPF are per-cgroup memory since 5.11; raise RLIMIT_MEMLOCK
        // anyway for older kernels (harmless when it is not needed).
        let _ = nix::sys::resource::setrlimit(
            nix::sys::resource::Resource::RLIMIT_MEMLOCK,
            nix::sys::resource::RLIM_INFINITY,
            nix::sys::resource::RLIM_INFINITY,
        );

        let words = pid_max().div_ceil(64).max(1);
        let log_level: u8 = if opts.bpf_log { 0xff } else { 0 };
        let follow: u32 = opts.follow_children.into();
        let kbtf = aya::Btf::parse_file(
            crate::preflight::vmlinux_btf_path(),
            aya::Endianness::default(),
        )
        .map_err(|e| StallError::KernelFeature {
            what: "BTF type information".into(),
            detail: e.to_string(),
            hint: "stallprobe needs CONFIG_DEBUG_INFO_BTF=y".into(),
        })?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&kbtf))
            .override_global(globals::THRESHOLD_NS, &opts.threshold_ns, true)
            .override_global(globals::SHUTDOWN_SIGMASK, &opts.shutdown_sigmask, true)
            .override_global(globals::TASK_PID_OFF, &off.pid, true)
            .override_global(globals::TASK_TGID_OFF, &off.tgid, true)
            .override_global(globals::TASK_COMM_OFF, &off.comm, true)
            .override_global(globals::TASK_STATE_OFF, &off.state, true)
            .override_global(globals::TASK_FLAGS_OFF, &off.flags, true)
            .override_global(globals::TASK_LAST_ARRIVAL_OFF, &off.last_arrival, true)
            .override_global(globals::FOLLOW_CHILDREN, &follow, true)
            .override_global(aya_log::LEVEL, &log_level, false)
            .map_max_entries(maps::TARGETS, words)
            // Task storage (BPF_MAP_TYPE_TASK_STORAGE) has no aya wrapper; only the kernel side
            // touches it, so it may stay "unsupported" here.
            .allow_unsupported_maps()
            .load(BPF_OBJECT)
            .map_err(|e| load_err("load the kernel programs and maps", e))?;

        let logger = if opts.bpf_log {
            aya_log::EbpfLogger::init(&mut ebpf).ok()
        } else {
            None
        };

        let mut skipped_calls = Vec::new();
        let mut fallback_reason = None;
        let hook = match opts.hook {
            HookChoice::Auto => match attach_fentry_all(&mut ebpf, &kbtf, &mut skipped_calls) {
                Ok(()) => Hook::Fentry,
                Err(e) => {
                    // Some kernels refuse fentry (no BPF trampolines, or locked down). Raw
                    // tracepoints cost more but work wherever BTF does.
                    let why = match &e {
                        StallError::KernelFeature { detail, .. } => detail.clone(),
                        e => e.to_string(),
                    };
                    fallback_reason = Some(first_line(&why));
                    skipped_calls.clear();
                    detach_all_fentry(&mut ebpf);
                    attach_raw(&mut ebpf, &kbtf)?;
                    Hook::Raw
                }
            },
            HookChoice::Fentry => {
                attach_fentry_all(&mut ebpf, &kbtf, &mut skipped_calls)?;
                Hook::Fentry
            }
            HookChoice::Raw => {
                attach_raw(&mut ebpf, &kbtf)?;
                Hook::Raw
            }
            HookChoice::Tracepoint => {
                crate::preflight::ensure_tracefs()?;
                for call in Call::ALL {
                    match attach_tracepoint_pair(&mut ebpf, call) {
                        Ok(()) => {}
                        Err(_) if call.info().optional => skipped_calls.push(call),
                        Err(e) => return Err(e),
                    }
                }
                Hook::Tracepoint
            }
        };
        attach_tp_btf(
            &mut ebpf,
            &kbtf,
            programs::SIGNAL_GENERATE,
            "signal_generate",
        )?;
        attach_tp_btf(
            &mut ebpf,
            &kbtf,
            programs::THREAD_EXIT,
            "sched_process_exit",
        )?;
        attach_tp_btf(
            &mut ebpf,
            &kbtf,
            programs::PROCESS_FORK,
            "sched_process_fork",
        )?;
        attach_tp_btf(
            &mut ebpf,
            &kbtf,
            programs::PROCESS_FREE,
            "sched_process_free",
        )?;
        attach_tp_btf(
            &mut ebpf,
            &kbtf,
            programs::PROCESS_EXEC,
            "sched_process_exec",
        )?;
        {
            let prog: &mut Iter = program(&mut ebpf, programs::SNAPSHOT_TASKS)?;
            prog.load("task", &kbtf)
                .map_err(|e| load_err("load the task iterator (iter/task)", fmt_prog_err(&e)))?;
        }

        let targets = Array::try_from(take_map(&mut ebpf, maps::TARGETS)?)
            .map_err(|e| load_err("open the TARGETS map", e))?;
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, maps::COUNTERS)?)
            .map_err(|e| load_err("open the COUNTERS map", e))?;
        let shutdown = Array::try_from(take_map(&mut ebpf, maps::SHUTDOWN)?)
            .map_err(|e| load_err("open the SHUTDOWN map", e))?;
        let control = Array::try_from(take_map(&mut ebpf, maps::CONTROL)?)
            .map_err(|e| load_err("open the CONTROL map", e))?;
        let events = RingBuf::try_from(take_map(&mut ebpf, maps::EVENTS)?)
            .map_err(|e| load_err("open the EVENTS ring buffer", e))?;

        Ok(Probes {
            ebpf,
            targets,
            counters,
            shutdown,
            control,
            events: Some(events),
            skipped_calls,
            hook,
            fallback_reason,
            logger,
        })
    }

    /// Set or clear one process's bit, reading the word back from the map first: the kernel side
    /// sets bits (followed children) and clears them (a process's last thread exiting), so a
    /// copy kept here could bring back the bit of a dead process whose pid was reused.
    fn update_target(&mut self, tgid: u32, on: bool) -> Result<(), StallError> {
        let idx = tgid / 64;
        let bit = 1u64 << (tgid % 64);
        let w = self.targets.get(&idx, 0).unwrap_or(0);
        let w = if on { w | bit } else { w & !bit };
        self.targets.set(idx, w, 0).map_err(|e| {
            let what = if on {
                format!("add pid {tgid} to")
            } else {
                format!("remove pid {tgid} from")
            };
            load_err(format!("{what} the target set"), e)
        })
    }

    /// Add a process to the target set: from now on its threads' calls are recorded.
    pub fn add_target(&mut self, tgid: u32) -> Result<(), StallError> {
        self.update_target(tgid, true)
    }

    /// Remove a process from the target set.
    pub fn remove_target(&mut self, tgid: u32) -> Result<(), StallError> {
        self.update_target(tgid, false)
    }

    /// The event ring buffer, for the caller's event loop (taken once).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// Sum of the kernel side's per-CPU counters.
    pub fn counters(&self) -> Counters {
        let get = |i: u32| -> u64 {
            self.counters
                .get(&i, 0)
                .map(|v| v.iter().copied().sum())
                .unwrap_or(0)
        };
        Counters {
            dropped_slow_calls: get(counter::DROP_SLOW_CALL),
            dropped_signals: get(counter::DROP_SIGNAL),
            dropped_thread_exits: get(counter::DROP_THREAD_EXIT),
            dropped_lifecycle: get(counter::DROP_LIFECYCLE),
            task_storage_failures: get(counter::DROP_TASK_STORAGE),
            stack_copy_failures: get(counter::STACK_COPY_FAILED),
            slow_calls: get(counter::SLOW_CALLS),
            signals: get(counter::SIGNALS),
        }
    }

    /// Forget the shutdown signal (the next one starts a new episode).
    pub fn reset_shutdown(&mut self) {
        let _ = self.shutdown.set(0, 0u64, 0);
    }

    /// Run the task iterator: every target thread as it is right now. With `with_stats`, each
    /// thread's histograms too (a bigger dump: not needed at every look).
    pub fn snapshot(&mut self, with_stats: bool) -> Result<Vec<TaskSnapshot>, StallError> {
        let flags = if with_stats {
            probe_ebpf::control::WANT_STATS
        } else {
            0
        };
        let _ = self.control.set(0, flags, 0);
        let prog: &mut Iter = program(&mut self.ebpf, programs::SNAPSHOT_TASKS)?;
        let link_id = prog
            .attach()
            .map_err(|e| load_err("attach the task iterator", fmt_prog_err(&e)))?;
        let link = prog
            .take_link(link_id)
            .map_err(|e| load_err("attach the task iterator", fmt_prog_err(&e)))?;
        let mut file = link
            .into_file()
            .map_err(|e| load_err("open the task iterator", e))?;
        let mut buf = Vec::with_capacity(64 * 1024);
        file.read_to_end(&mut buf)
            .map_err(|e| load_err("read the task iterator", e))?;
        Ok(decode_snapshot(&buf))
    }

    /// Forward pending kernel-side log records (`--bpf-log`) to the logger.
    pub fn flush_log(&mut self) {
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
    }
}

fn fmt_prog_err(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => format!("{io_error}\nverifier log:\n{verifier_log}"),
        other => {
            let mut s = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(e) = src {
                s.push_str(": ");
                s.push_str(&e.to_string());
                src = e.source();
            }
            s
        }
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, StallError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let p = ebpf.program_mut(name).ok_or_else(|| StallError::Load {
        action: format!("find program {name}"),
        detail: "not in the BPF object (stale build?)".into(),
        hint: Some("rebuild with `cargo xtask build`".into()),
    })?;
    p.try_into()
        .map_err(|e: ProgramError| load_err(format!("use program {name}"), fmt_prog_err(&e)))
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map, StallError> {
    ebpf.take_map(name).ok_or_else(|| StallError::Load {
        action: format!("find map {name}"),
        detail: "not in the BPF object (stale build?)".into(),
        hint: Some("rebuild with `cargo xtask build`".into()),
    })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

fn attach_fentry_all(
    ebpf: &mut Ebpf,
    kbtf: &aya::Btf,
    skipped: &mut Vec<Call>,
) -> Result<(), StallError> {
    for call in Call::ALL {
        match attach_fentry_pair(ebpf, kbtf, call) {
            Ok(()) => {}
            Err(_) if call.info().optional => skipped.push(call),
            Err(e) => {
                return Err(StallError::KernelFeature {
                    what: format!("fentry/fexit on {}", call.kernel_fn()),
                    detail: e.to_string(),
                    hint: "fentry needs BPF trampolines (x86_64, CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS) \
                           and a kernel that allows them; try `--hook raw`"
                        .into(),
                });
            }
        }
    }
    Ok(())
}

/// Unload whatever fentry/fexit programs got loaded before one failed (their links go too).
fn detach_all_fentry(ebpf: &mut Ebpf) {
    for c in &PROBED_CALLS {
        if let Ok(p) = program::<FEntry>(ebpf, c.fentry_prog) {
            let _ = p.unload();
        }
        if let Ok(p) = program::<FExit>(ebpf, c.fexit_prog) {
            let _ = p.unload();
        }
    }
}

fn attach_raw(ebpf: &mut Ebpf, kbtf: &aya::Btf) -> Result<(), StallError> {
    attach_tp_btf(ebpf, kbtf, programs::RAW_SYS_ENTER, "sys_enter")?;
    attach_tp_btf(ebpf, kbtf, programs::RAW_SYS_EXIT, "sys_exit")
}

fn attach_fentry_pair(ebpf: &mut Ebpf, kbtf: &aya::Btf, call: Call) -> Result<(), StallError> {
    let info = call.info();
    let func = info.kernel_fn;
    {
        let p: &mut FEntry = program(ebpf, info.fentry_prog)?;
        p.load(func, kbtf)
            .map_err(|e| load_err(format!("load fentry on {func}"), fmt_prog_err(&e)))?;
        p.attach()
            .map_err(|e| load_err(format!("attach fentry on {func}"), fmt_prog_err(&e)))?;
    }
    let p: &mut FExit = program(ebpf, info.fexit_prog)?;
    p.load(func, kbtf)
        .map_err(|e| load_err(format!("load fexit on {func}"), fmt_prog_err(&e)))?;
    p.attach()
        .map_err(|e| load_err(format!("attach fexit on {func}"), fmt_prog_err(&e)))?;
    Ok(())
}

fn attach_tracepoint_pair(ebpf: &mut Ebpf, call: Call) -> Result<(), StallError> {
    let info = call.info();
    for (prog, tp) in [
        (info.tp_enter_prog, info.tp_enter),
        (info.tp_exit_prog, info.tp_exit),
    ] {
        let p: &mut TracePoint = program(ebpf, prog)?;
        p.load()
            .map_err(|e| load_err(format!("load {prog}"), fmt_prog_err(&e)))?;
        p.attach("syscalls", tp)
            .map_err(|e| StallError::KernelFeature {
                what: format!("the tracepoint syscalls:{tp}"),
                detail: fmt_prog_err(&e),
                hint: "the kernel needs CONFIG_FTRACE_SYSCALLS=y; or use the default --hook fentry"
                    .into(),
            })?;
    }
    Ok(())
}

fn attach_tp_btf(
    ebpf: &mut Ebpf,
    kbtf: &aya::Btf,
    prog: &str,
    tracepoint: &str,
) -> Result<(), StallError> {
    let p: &mut BtfTracePoint = program(ebpf, prog)?;
    p.load(tracepoint, kbtf)
        .map_err(|e| StallError::KernelFeature {
            what: format!("the BTF tracepoint {tracepoint}"),
            detail: fmt_prog_err(&e),
            hint: "stallprobe needs BTF-enabled tracepoints (Linux 5.5+)".into(),
        })?;
    p.attach().map_err(|e| {
        load_err(
            format!("attach to tracepoint {tracepoint}"),
            fmt_prog_err(&e),
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSymbol};

    use super::*;

    /// Every program, map and global name user space uses is in the embedded BPF object: the
    /// names are shared constants (`probe_ebpf`), and this checks the object built from them.
    #[test]
    fn embedded_object_has_every_name_user_space_uses() {
        if BPF_OBJECT.is_empty() {
            assert!(
                std::env::var_os("AYA_BUILD_SKIP").is_some(),
                "no embedded BPF object although AYA_BUILD_SKIP is not set"
            );
            eprintln!("skipped: built with AYA_BUILD_SKIP=1, no BPF object to check");
            return;
        }
        let obj = object::File::parse(BPF_OBJECT).expect("the embedded BPF object is an ELF file");
        let symbols: std::collections::BTreeSet<&str> =
            obj.symbols().filter_map(|s| s.name().ok()).collect();
        let mut wanted: Vec<&str> = vec![
            programs::RAW_SYS_ENTER,
            programs::RAW_SYS_EXIT,
            programs::SIGNAL_GENERATE,
            programs::THREAD_EXIT,
            programs::PROCESS_FORK,
            programs::PROCESS_FREE,
            programs::PROCESS_EXEC,
            programs::SNAPSHOT_TASKS,
            maps::TARGETS,
            maps::EVENTS,
            maps::COUNTERS,
            maps::SHUTDOWN,
            maps::CONTROL,
            maps::TASKS,
            globals::THRESHOLD_NS,
            globals::SHUTDOWN_SIGMASK,
            globals::TASK_PID_OFF,
            globals::TASK_TGID_OFF,
            globals::TASK_COMM_OFF,
            globals::TASK_STATE_OFF,
            globals::TASK_FLAGS_OFF,
            globals::TASK_LAST_ARRIVAL_OFF,
            globals::FOLLOW_CHILDREN,
        ];
        for c in &PROBED_CALLS {
            wanted.extend([c.fentry_prog, c.fexit_prog, c.tp_enter_prog, c.tp_exit_prog]);
        }
        let missing: Vec<&str> = wanted
            .into_iter()
            .filter(|n| !symbols.contains(n))
            .collect();
        assert!(
            missing.is_empty(),
            "not in the BPF object: {missing:?} (the kernel side and probe_ebpf disagree)"
        );
        // And the fentry/fexit programs attach where the table says.
        let sections: Vec<String> = obj
            .sections()
            .filter_map(|s| object::ObjectSection::name(&s).ok().map(str::to_string))
            .collect();
        for c in &PROBED_CALLS {
            for prefix in ["fentry", "fexit"] {
                let want = format!("{prefix}/{}", c.kernel_fn);
                assert!(sections.contains(&want), "no section {want}: {sections:?}");
            }
        }
    }
}
