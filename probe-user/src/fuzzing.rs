//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer): one function per
//! target, each taking arbitrary bytes and driving the same code stallprobe runs on what it
//! reads from a target — ring-buffer records, /proc text, netlink answers, ELF files, Go
//! binaries, CPython memory, JVM thread dumps. None of them may panic, hang or allocate without
//! bound, whatever the bytes.
//!
//! [`TARGETS`] lists them by name; `fuzz/fuzz_targets/<name>.rs` is a one-line wrapper around
//! each, and the test below replays the committed corpus (`fuzz/corpus/<name>/`) through
//! every one on each `cargo test`, without libFuzzer. Not part of stallprobe's API.

use std::{borrow::Cow, sync::Arc};

use framehop::{
    Unwinder,
    x86_64::{CacheX86_64, UnwinderX86_64},
};
use object::{Object, ObjectSection, ObjectSegment};
use probe_ebpf::UserRegs;

use crate::{events, procfs, stack, waits};

/// A fuzz target's code: any bytes in, nothing out; it must not panic, hang or balloon.
pub type Target = fn(&[u8]);

/// Every fuzz target: (name, function). The name is the file in `fuzz/fuzz_targets/` and the
/// directory in `fuzz/corpus/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("decode_event", decode_event),
    ("decode_snapshot", decode_snapshot),
    ("procfs", procfs),
    ("waits_parse", waits_parse),
    ("sock_diag", sock_diag),
    ("elf_unwind", elf_unwind),
    ("elf_guard", elf_guard),
    ("elf_symbolize", elf_symbolize),
    ("go_binary", go_binary),
    ("go_tables", go_tables),
    ("python_layout", python_layout),
    ("python_elf", python_elf),
    ("java_dump", java_dump),
    ("perf_map", perf_map),
    ("broker_answer", broker_answer),
];

fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// `n` little-endian u64 words from the end of `data` (zero-padded): numbers a target derives
/// from its input without disturbing what the start of the input means.
fn tail_words(data: &[u8], n: usize) -> Vec<u64> {
    let tail = &data[data.len().saturating_sub(n * 8)..];
    (0..n)
        .map(|i| {
            let mut w = [0u8; 8];
            for (j, b) in w.iter_mut().enumerate() {
                *b = tail.get(i * 8 + j).copied().unwrap_or(0);
            }
            u64::from_le_bytes(w)
        })
        .collect()
}

/// A ring-buffer record ([`events::decode_event`]).
pub fn decode_event(data: &[u8]) {
    if let Some(events::Event::SlowCall(s)) = events::decode_event(data) {
        let _ = s.call.futex_op_name();
        assert!(s.stack.len() <= probe_ebpf::STACK_COPY_MAX);
    }
}

/// The task iterator's output ([`events::decode_snapshot`]).
pub fn decode_snapshot(data: &[u8]) {
    for s in events::decode_snapshot(data) {
        let _ = s.in_flight();
        let _ = s.last_ran_mono_ns();
        assert!(s.kstack.len() <= probe_ebpf::KSTACK_MAX);
    }
}

/// Every /proc parser of [`procfs`], on the same text.
pub fn procfs(data: &[u8]) {
    let s = text(data);
    let _ = procfs::parse_stat(&s);
    let _ = procfs::parse_syscall(&s);
    let _ = procfs::parse_kernel_stack(&s);
    for m in procfs::parse_maps(&s) {
        let _ = (m.is_exec(), m.is_file(), m.contains(m.start));
    }
    let _ = procfs::parse_nspid(&s);
    let _ = procfs::parse_schedstat(&s);
    let _ = procfs::status_field(&s, "NSpid");
}

/// fdinfo and /proc/PID/net parsers ([`waits::parse`]), on the same text.
pub fn waits_parse(data: &[u8]) {
    use waits::parse as p;
    let s = text(data);
    let _ = p::fdinfo_pos(&s);
    let _ = p::fdinfo_flags(&s);
    let _ = p::fdinfo_ino(&s);
    let _ = p::parse_eventfd_count(&s);
    if let Some(t) = p::parse_timerfd(&s) {
        let _ = p::clock_name(t.clockid);
    }
    let _ = p::parse_sigmask(&s);
    for e in p::parse_epoll_items(&s) {
        let _ = p::decode_epoll_events(e.events);
    }
    for e in p::parse_inet_table(&s) {
        let _ = (p::format_addr(&e.local), p::canonical(&e.remote));
        let _ = (p::is_unset(&e.remote), p::tcp_state_name(e.state));
    }
    for e in p::parse_unix_table(&s) {
        let _ = (e.state_name(), p::sock_type_name(e.kind));
    }
    let _ = p::link_inode(&s, "socket");
    let _ = p::link_inode(&s, "pipe");
}

/// A NETLINK_SOCK_DIAG answer ([`waits::diag::parse_response`]): the first four bytes are the
/// sequence number asked for, the rest the datagram.
pub fn sock_diag(data: &[u8]) {
    let (seq, buf) = match data.split_first_chunk::<4>() {
        Some((seq, rest)) => (u32::from_le_bytes(*seq), rest),
        None => (0, data),
    };
    let _ = waits::diag::parse_response(buf, seq);
    let _ = waits::diag::parse_response(buf, 1);
    let _ = waits::diag::unix_name(data);
}

/// Base address the fuzzed ELF file's executable segments are "mapped" at.
const FUZZ_BASE: u64 = 0x5555_0000_0000;

/// An ELF file as the unwinder loads it ([`stack::unwind::module_from_elf`], one module per
/// executable PT_LOAD, mapped like the dynamic loader would), then stacks unwound through it
/// from instruction pointers in its text and its FDE table, over stack memory taken from the
/// input.
pub fn elf_unwind(data: &[u8]) {
    let bytes: stack::unwind::ElfBytes = Arc::new(data.to_vec());
    let Ok(obj) = object::File::parse(data) else {
        return;
    };
    let mut unwinder = UnwinderX86_64::new();
    let mut ranges: Vec<std::ops::Range<u64>> = Vec::new();
    for seg in obj.segments().take(8) {
        let exec = matches!(seg.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0);
        if !exec {
            continue;
        }
        // Where the dynamic loader would map it for a PIE loaded at FUZZ_BASE.
        let (offset, filesz) = seg.file_range();
        let map_offset = offset & !0xfff;
        let len = filesz.saturating_add(offset - map_offset).clamp(1, 1 << 30);
        let len = (len + 0xfff) & !0xfff;
        let start = FUZZ_BASE + (seg.address() & !0xfff) % (1 << 40);
        let avma = start..start + len;
        if ranges
            .iter()
            .any(|r| r.start < avma.end && avma.start < r.end)
        {
            continue;
        }
        if let Some(m) =
            stack::unwind::module_from_elf(bytes.clone(), "fuzz".into(), avma.clone(), map_offset)
        {
            unwinder.add_module(m);
            ranges.push(avma);
        }
    }
    if ranges.is_empty() {
        return;
    }
    // Instruction pointers: the start of .text, a few from the input, into every range.
    let mut ips: Vec<u64> = Vec::new();
    let text = obj.section_by_name(".text").map(|s| s.address());
    let words = tail_words(data, 6);
    for r in &ranges {
        let len = r.end - r.start;
        ips.push(r.start + text.unwrap_or(0) % len);
        ips.extend(words.iter().take(4).map(|w| r.start + w % len));
    }
    let stack_mem: Vec<u8> = data.iter().rev().take(4096).copied().collect();
    let sp = 0x7ffd_0000_0000;
    let mut cache = CacheX86_64::new();
    for ip in ips {
        let regs = UserRegs {
            ip,
            sp,
            bp: sp + words[4] % 4096,
        };
        let frames = stack::unwind::unwind_stack(&unwinder, &mut cache, regs, &stack_mem);
        assert!(frames.len() <= stack::unwind::MAX_FRAMES);
    }
}

/// The ELF check that runs before blazesym ([`stack::elf_guard`]): compressed sections
/// inflated and counted, link sections, and the symbol-table resolver for failing files.
pub fn elf_guard(data: &[u8]) {
    use blazesym::symbolize::{FindSymOpts, Symbolize, TranslateFileOffset};
    use stack::elf_guard as g;
    let mut budget = g::MAX_INFLATED_PER_MODULE;
    let _ = g::check_file(data, &mut budget);
    assert!(budget <= g::MAX_INFLATED_PER_MODULE);
    let links = g::links(data);
    if let Some(name) = &links.debuglink {
        let _ = g::link_candidates(
            std::path::Path::new("/nonexistent/fuzz/app"),
            name,
            links.build_id.as_deref(),
        );
    }
    let r = g::SymtabResolver::from_elf(data, "fuzz".into());
    for w in tail_words(data, 4) {
        let _ = r.find_sym(w, &FindSymOpts::Basic);
        let _ = r.file_offset_to_virt_offset(w);
    }
}

/// Most bytes of ELF handed to blazesym per input (bigger inputs are cut).
const MAX_SYMBOLIZE_INPUT: usize = 4 << 20;

/// An ELF file symbolized the way stallprobe symbolizes a module: the ELF check first; a file
/// that passes goes to blazesym (symbols, DWARF, inlined functions) at the addresses of its
/// function symbols and a few from the input; one that fails to the symbol-table resolver.
/// The bytes go through a file (blazesym reads files by path).
pub fn elf_symbolize(data: &[u8]) {
    use blazesym::symbolize::{
        Input, Symbolizer,
        source::{Elf, Source},
    };
    let data = &data[..data.len().min(MAX_SYMBOLIZE_INPUT)];
    let dir = std::env::temp_dir().join("stallprobe-fuzz");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!(
        "elf-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if stack::elf_guard::check_module(&path, &path).is_ok() {
        // Addresses as blazesym computes them from a process's: inside a loadable segment
        // (an input word into each), and inside functions.
        let mut addrs: Vec<u64> = Vec::new();
        if let Ok(obj) = object::File::parse(data) {
            use object::ObjectSymbol;
            let words = tail_words(data, 4);
            for seg in obj.segments().take(4) {
                let (_, filesz) = seg.file_range();
                addrs.extend(words.iter().map(|w| seg.address() + w % filesz.max(1)));
            }
            addrs.extend(obj.symbols().take(16).map(|s| s.address().wrapping_add(1)));
        }
        let blaze = Symbolizer::builder()
            .enable_demangling(false)
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .build();
        let src = Source::Elf(Elf::new(&path));
        let _ = blaze.symbolize(&src, Input::VirtOffset(&addrs));
    }
    let _ = std::fs::remove_file(&path);
}

/// A Go executable ([`probe_lang::go::GoBinary::parse`]), then symbolization at pcs from the
/// input, the load bias, and a goroutine snapshot over memory that is the file's own sections
/// mapped at their addresses.
pub fn go_binary(data: &[u8]) {
    use probe_lang::{
        go::{GoBinary, GoReader, Limits, load_bias},
        mem::FakeMemory,
    };
    let _ = load_bias(
        data,
        "00400000-00500000 r-xp 00000000 fe:01 1 /bin/x\n7f0000000000-7f0000100000 r-xp 00001000 fe:01 1 /bin/x\n",
        "/bin/x",
    );
    let Ok(bin) = GoBinary::parse(data) else {
        return;
    };
    let _ = (
        bin.version(),
        bin.notes(),
        bin.layout_source(),
        bin.is_pie(),
    );
    for pc in tail_words(data, 4) {
        let _ = bin.symbolize(pc);
        let _ = bin.function_at(pc);
    }
    let mut mem = FakeMemory::new();
    if let Ok(obj) = object::File::parse(data) {
        let mut end = 0u64;
        for s in obj.sections() {
            let (Some((off, len)), addr) = (s.file_range(), s.address()) else {
                continue;
            };
            // FakeMemory regions must not overlap: keep sections in address order only.
            if addr == 0 || addr < end || len > 64 << 20 {
                continue;
            }
            let Some(bytes) = usize::try_from(off)
                .ok()
                .and_then(|o| data.get(o..o.checked_add(usize::try_from(len).ok()?)?))
            else {
                continue;
            };
            mem.map(addr, bytes.to_vec());
            end = addr.saturating_add(len);
        }
    }
    let limits = Limits {
        max_goroutines: 10_000,
        max_frames: 64,
        max_waiters: 100,
        stacks: true,
    };
    let _ = GoReader::new(&bin, 0).snapshot(&mem, limits);
}

/// Go's pclntab and build info on their own ([`probe_lang::go::fuzz_tables`]): many more
/// inputs a second than [`go_binary`], which parses a whole executable first.
pub fn go_tables(data: &[u8]) {
    probe_lang::go::fuzz_tables(data);
}

/// Where the made-up `_PyRuntime` is.
const PY_RUNTIME: u64 = 0x1000_0000;

/// The CPython reader ([`probe_lang::python::PyProcess::threads`]) over memory made of the
/// input: byte 0 picks the version (3.8–3.13), byte 1 whether type objects are checked, the
/// rest is mapped at `_PyRuntime` (pointers into it are pointers into the input).
pub fn python_layout(data: &[u8]) {
    use probe_lang::{mem::FakeMemory, python::PyProcess};
    let (Some(&v), Some(&t)) = (data.first(), data.get(1)) else {
        return;
    };
    let minor = 8 + u32::from(v) % 6;
    let types =
        (t & 1 != 0).then_some((PY_RUNTIME + 0x100, PY_RUNTIME + 0x200, PY_RUNTIME + 0x300));
    let Some(p) = PyProcess::for_fuzzing(minor, PY_RUNTIME, types) else {
        return;
    };
    let mut mem = FakeMemory::new();
    mem.map(PY_RUNTIME, data[2..].to_vec());
    if let Ok(mut s) = p.threads(&mem) {
        let map = s
            .threads
            .iter()
            .filter_map(|t| t.tid)
            .map(|t| (t, t.wrapping_add(1)))
            .collect();
        s.map_tids(&map);
        let _ = s.why_no_frames(1);
        // The snapshot merged into threads as the report does it, then the lock graph.
        let tids: Vec<u32> = s.threads.iter().filter_map(|t| t.tid).take(64).collect();
        merge_runtime(tids, crate::assemble::RuntimeView::Python(s));
    }
    for kind in [
        probe_lang::python::layout::LineTableKind::Lnotab,
        probe_lang::python::layout::LineTableKind::Linetable310,
        probe_lang::python::layout::LineTableKind::Locations,
    ] {
        let _ = probe_lang::python::linetable::line_at(kind, data, i64::from(v), i64::from(t) * 2);
    }
}

/// An interpreter's or libc's ELF file as the CPython locator reads it
/// ([`probe_lang::python::locate`]): symbols and version, glibc's tid offset, the load bias.
pub fn python_elf(data: &[u8]) {
    use probe_lang::python::{PyProcess, locate};
    let _ = locate::module_facts(data);
    let _ = locate::pthread_tid_offset(data);
    let path = std::path::Path::new("/usr/lib/libpython3.11.so.1.0");
    let maps = locate::parse_maps(
        "7f0000000000-7f0000100000 r--p 00000000 fe:01 1 /usr/lib/libpython3.11.so.1.0\n7f0000100000-7f0000200000 r-xp 00100000 fe:01 1 /usr/lib/libpython3.11.so.1.0\n",
    );
    let _ = locate::load_bias(&maps, path, data);
    let _ = PyProcess::from_module(path, data, 0x7f00_0000_0000);
}

/// A JVM thread dump ([`probe_lang::java::parse_thread_dump`]) and what the report asks of it.
pub fn java_dump(data: &[u8]) {
    use probe_lang::java::{self, attach, dump};
    let s = text(data);
    let d = java::parse_thread_dump(&s);
    let _ = dump::waits(&d);
    for t in d.threads.iter().take(64) {
        let _ = (t.blocked_on(), t.monitors_held(), d.wait_of(t));
        if let Some(nid) = t.nid {
            let _ = d.thread_by_nid(nid);
        }
    }
    for w in tail_words(data, 2) {
        let _ = d.owner_of(w);
    }
    let _ = attach::parse_status(1, &s);
    let _ = attach::attach_disabled(data, data);
    // The dump merged into threads named by its nids, as the report does it; the lock graph.
    let tids: Vec<u32> = d.threads.iter().filter_map(|t| t.nid).take(64).collect();
    merge_runtime(tids, crate::assemble::RuntimeView::Java(d));
}

/// Threads `tids` of process 1 as the tracker holds them (blocked on a futex, a native stack
/// through CPython's eval loop and a JVM's JIT code), with `view` merged into them
/// ([`crate::assemble::lang::apply`]: language frames, GIL and monitor owners), then the
/// deadlock search over the result.
fn merge_runtime(tids: Vec<u32>, view: crate::assemble::RuntimeView) {
    use crate::report::{Frame, ThreadState, Wait};
    let native = |f: Option<&str>, m: &str| Frame {
        function: f.map(str::to_string),
        module: Some(m.into()),
        ..Frame::default()
    };
    let (libc, py, jvm) = ("/lib/libc.so.6", "/lib/libpython3.11.so", "/lib/libjvm.so");
    let stack = vec![
        native(Some("__futex_abstimed_wait_common"), libc),
        native(Some("take_gil"), py),
        native(Some("_PyEval_EvalFrameDefault"), py),
        native(Some("_PyEval_EvalFrameDefault"), py),
        native(Some("ObjectMonitor::enter(JavaThread*)"), jvm),
        native(None, "?"),
        native(None, "?"),
        native(
            Some("JavaCalls::call_helper(JavaValue*, methodHandle const&)"),
            jvm,
        ),
        native(Some("start_thread"), libc),
    ];
    let mut facts: Vec<crate::tracker::ThreadFacts> = tids
        .iter()
        .enumerate()
        .map(|(i, &tid)| {
            let mut t =
                crate::tracker::ThreadFacts::new(1, tid, format!("t{i}"), ThreadState::Blocked);
            t.stack = stack.clone();
            t.wait = Some(Wait::futex(
                0x7f00_0000_1000,
                "FUTEX_WAIT".into(),
                None,
                Some(0),
            ));
            t
        })
        .collect();
    let views = std::collections::BTreeMap::from([(1, view)]);
    let _ = crate::assemble::lang::apply(&mut facts, &views);
    let _ = crate::locks::find_cycles(&facts);
}

/// A JIT runtime's perf map ([`stack::perfmap`]): the file's lines, then lookups at addresses
/// from the input.
pub fn perf_map(data: &[u8]) {
    assert!(stack::perfmap::parse(data).len() <= stack::perfmap::MAX_ENTRIES);
    let m = stack::perfmap::PerfMap::from_bytes(data);
    for w in tail_words(data, 4) {
        let _ = m.lookup(w);
    }
}

/// What the JVM attach broker reads: a worker's answer (the worker runs as the JVM's user) and
/// a request line.
pub fn broker_answer(data: &[u8]) {
    crate::attach_broker::parse_untrusted(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fuzz_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
    }

    /// Every committed corpus input (and every saved crash reproducer) through its target's code,
    /// without libFuzzer: what the fuzzers found once stays fixed.
    #[test]
    fn corpus_replays_without_panic() {
        let mut total = 0;
        for (name, f) in TARGETS {
            for sub in ["corpus", "regressions"] {
                let dir = fuzz_dir().join(sub).join(name);
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    assert!(sub != "corpus", "no corpus for {name} in {}", dir.display());
                    continue;
                };
                let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
                files.sort();
                for p in files {
                    let data = std::fs::read(&p).unwrap();
                    let r = std::panic::catch_unwind(|| f(&data));
                    assert!(r.is_ok(), "{name}: {} panics", p.display());
                    total += 1;
                }
            }
        }
        assert!(total >= TARGETS.len(), "{total} inputs");
    }

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: the ABI types are `#[repr(C)]` with integer fields only.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    /// Seed inputs for the record decoders, made from the ABI types the kernel side sends (a
    /// slow futex call with its stack copy, a signal, a thread exit with statistics, a fork, an
    /// exec; task records with and without state). Run with `STALLPROBE_WRITE_CORPUS=1
    /// cargo test -p probe-user --lib write_record_seeds -- --ignored` after an ABI change.
    #[test]
    #[ignore]
    fn write_record_seeds() {
        use probe_ebpf::*;
        if std::env::var_os("STALLPROBE_WRITE_CORPUS").is_none() {
            return;
        }
        let hdr = |kind| EventHeader {
            kind,
            tid: 4243,
            tgid: 4242,
            _pad: 0,
            ts_ns: 1_000_000_000,
        };
        let call = InFlight {
            start_ns: 900_000_000,
            obj: 0x5555_5555_8040,
            arg: 128,
            timeout_ns: 0,
            call: Call::Futex as u16,
            flags: 0,
            _pad: 0,
            interrupted_ns: 0,
        };
        let regs = UserRegs {
            ip: 0x7f00_0009_1a2b,
            sp: 0x7ffd_0000_1f10,
            bp: 0x7ffd_0000_1f60,
        };
        let head = SlowCallHead {
            hdr: hdr(event_kind::SLOW_CALL),
            call,
            dur_ns: 100_000_000,
            ret: 0,
            regs,
            stack_addr: 0x7ffd_0000_1f00,
            stack_len: 256,
            _pad: 0,
        };
        let mut slow = bytes_of(&head);
        slow.extend(
            (0..256u32)
                .flat_map(|i| (0x7f00_0009_0000u64 + u64::from(i) * 0x40).to_le_bytes())
                .take(256),
        );
        let sig = SignalEvent {
            hdr: hdr(event_kind::SIGNAL),
            sig: 15,
            group: 1,
            sender_tid: 1,
            sender_tgid: 1,
            sender_comm: *b"systemd\0\0\0\0\0\0\0\0\0",
            ..SignalEvent::default()
        };
        // SAFETY: TaskState is integers only.
        let mut state: TaskState = unsafe { std::mem::zeroed() };
        state.inflight = call;
        state.stats[0].count = 3;
        let exit = ThreadExitEvent {
            hdr: hdr(event_kind::THREAD_EXIT),
            comm: *b"worker-1\0\0\0\0\0\0\0\0",
            has_state: 1,
            _pad: 0,
            state,
        };
        let fork = ForkEvent {
            hdr: hdr(event_kind::FORK),
            child_pid: 4300,
            followed: 1,
        };
        let exec = ExecEvent {
            hdr: hdr(event_kind::EXEC),
            old_tid: 4243,
            _pad: 0,
        };
        let rec = |tid, has_state, kstack_len| TaskRecord {
            magic: TASK_RECORD_MAGIC,
            tid,
            tgid: 4242,
            state: 1,
            comm: *b"locker-a\0\0\0\0\0\0\0\0",
            regs,
            has_state,
            kstack_len,
            last_arrival: 5_000,
            reader_arrival: 9_000,
            now_ns: 1_000_000,
        };
        let mut snap = bytes_of(&rec(4242, 0, 0));
        snap.extend(bytes_of(&rec(4243, STATE_FULL, 3)));
        snap.extend(bytes_of(&state));
        snap.extend(
            [
                0xffff_ffff_8100_1000u64,
                0xffff_ffff_8100_2000,
                0xffff_ffff_8100_3000,
            ]
            .iter()
            .flat_map(|a| a.to_ne_bytes()),
        );
        snap.extend(bytes_of(&rec(4244, STATE_BRIEF, 1)));
        snap.extend(&bytes_of(&state)[..TASK_STATE_BRIEF_LEN]);
        snap.extend(0xffff_ffff_8100_4000u64.to_ne_bytes());
        let write = |target: &str, name: &str, data: &[u8]| {
            let dir = fuzz_dir().join("corpus").join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), data).unwrap();
        };
        write("decode_event", "slow-futex", &slow);
        write("decode_event", "signal-term", &bytes_of(&sig));
        write("decode_event", "thread-exit", &bytes_of(&exit));
        write("decode_event", "fork", &bytes_of(&fork));
        write("decode_event", "exec", &bytes_of(&exec));
        write("decode_snapshot", "three-threads", &snap);
    }

    /// Each fuzz target file is one of [`TARGETS`], and each target has a file.
    #[test]
    fn targets_match_the_fuzz_crate() {
        let mut files: Vec<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
            .unwrap()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".rs")
                    .map(str::to_string)
            })
            .collect();
        files.sort();
        let mut names: Vec<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
        names.sort();
        assert_eq!(files, names);
        let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        for n in &names {
            assert!(
                manifest.contains(&format!("name = \"{n}\"")),
                "fuzz/Cargo.toml has no [[bin]] {n}"
            );
        }
    }
}
