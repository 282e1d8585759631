//! Addresses to function, file and line (inlined frames included), with blazesym.
//!
//! blazesym's `Symbolizer` is `!Send`: it lives on the session's thread. It caches parsed
//! ELF/DWARF for its lifetime, and a process's mappings once `prepare` has run — which must
//! happen while the target is alive, since /proc/PID/maps is gone after it exits.

use std::{cell::RefCell, collections::HashSet, os::unix::ffi::OsStrExt, path::Path, rc::Rc};

use blazesym::{
    Pid,
    symbolize::{
        Input, ProcessMemberInfo, ProcessMemberType, Resolve, Symbolized, Symbolizer as Blaze,
        cache::{self, Cache},
        evict::{self, Evict},
        source::{Kernel, Process, Source},
    },
};

use super::{
    elf_guard::{GuardCache, SymtabResolver},
    unwind::RawFrame,
};
use crate::report::{Frame, KernelFrame, clean, target_text};

pub struct Symbolizer {
    blaze: Blaze,
    prepared: HashSet<u32>,
    /// Kernel symbols by address (kernel stacks repeat a lot).
    kernel: std::collections::HashMap<u64, KernelFrame>,
    /// The check every module passes before blazesym parses it (see `elf_guard`).
    guard: Rc<RefCell<Guard>>,
}

/// What the module check remembers: verdicts, and notes for the report.
#[derive(Default)]
struct Guard {
    cache: GuardCache,
    notes: Vec<String>,
}

/// Most notes about modules kept for the report.
const MAX_GUARD_NOTES: usize = 32;

/// blazesym's process dispatcher: called once per file-backed member of a process before
/// blazesym opens it. `None` lets blazesym handle the member; a module that fails the check
/// gets a [`SymtabResolver`] instead (names from its symbol tables, nothing decompressed).
fn dispatch(
    guard: &RefCell<Guard>,
    info: ProcessMemberInfo<'_>,
) -> blazesym::Result<Option<Box<dyn Resolve>>> {
    let ProcessMemberType::Path(p) = info.member_entry else {
        return Ok(None);
    };
    let mut g = guard.borrow_mut();
    let Err(why) = g.cache.check(&p.maps_file, &p.symbolic_path) else {
        return Ok(None);
    };
    // Both name target files: escaped like everything else the target chose.
    let note = format!(
        "{}: named from its symbol table only, without DWARF ({})",
        target_text(p.symbolic_path.as_os_str().as_bytes()),
        clean(&why)
    );
    if g.notes.len() < MAX_GUARD_NOTES && !g.notes.contains(&note) {
        g.notes.push(note);
    }
    // The kernel's own link to the mapped file (as blazesym would open it), never the path the
    // target names.
    let file = std::fs::File::open(&p.maps_file);
    // SAFETY: read-only private mapping; see stack::unwind for the caveat.
    let map = file
        .ok()
        .and_then(|f| unsafe { memmap2::Mmap::map(&f) }.ok());
    let module = p.symbolic_path.as_os_str().to_os_string();
    let resolver = SymtabResolver::from_elf(map.as_deref().unwrap_or(&[]), module);
    Ok(Some(Box::new(resolver)))
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

/// Demangle Rust (`_ZN...E`, `_R...`) and C++ (`_Z...`) names. blazesym's own demangling is
/// off because it turns short C names into C++ types (`a` → `signed char`).
pub fn demangle(name: &str) -> String {
    // Rust legacy mangling also parses as C++; rustc-demangle succeeds only for Rust.
    if (name.starts_with("_R") || name.starts_with("_ZN"))
        && let Ok(d) = rustc_demangle::try_demangle(name)
    {
        let s = format!("{d:#}");
        if !s.is_empty() {
            return s;
        }
    }
    if name.starts_with("_Z")
        && let Ok(sym) = cpp_demangle::Symbol::new(name)
        && let Ok(s) = sym.demangle()
    {
        return s;
    }
    name.to_string()
}

fn shorten_file(dir: Option<&Path>, file: &std::ffi::OsStr) -> String {
    match dir {
        Some(d) if !d.as_os_str().is_empty() => target_text(d.join(file).as_os_str().as_bytes()),
        _ => target_text(file.as_bytes()),
    }
}

impl Symbolizer {
    pub fn new() -> Symbolizer {
        let guard = Rc::new(RefCell::new(Guard::default()));
        let g = guard.clone();
        Symbolizer {
            blaze: Blaze::builder()
                .enable_demangling(false)
                .enable_code_info(true)
                .enable_inlined_fns(true)
                .set_process_dispatcher(move |info| dispatch(&g, info))
                .build(),
            prepared: HashSet::new(),
            kernel: std::collections::HashMap::new(),
            guard,
        }
    }

    /// Modules that failed the check before symbolization, and why (for the report's notes).
    pub fn notes(&self) -> Vec<String> {
        self.guard.borrow().notes.clone()
    }

    fn kernel_source() -> Source<'static> {
        Source::Kernel(Kernel {
            vmlinux: blazesym::MaybeDefault::None,
            debug_syms: false,
            ..Kernel::default()
        })
    }

    /// Load the kernel's symbols now (/proc/kallsyms), while stallprobe still has the
    /// privileges that show their addresses; blazesym keeps them for later.
    pub fn warm_kernel(&mut self) {
        let _ = self.symbolize_kernel(&[0xffff_ffff_8100_0000]);
    }

    /// Kernel addresses (innermost first) to names.
    pub fn symbolize_kernel(&mut self, addrs: &[u64]) -> Vec<KernelFrame> {
        let missing: Vec<u64> = addrs
            .iter()
            .copied()
            .filter(|a| !self.kernel.contains_key(a))
            .collect();
        if !missing.is_empty() {
            if self.kernel.len() > 50_000 {
                self.kernel.clear();
            }
            let src = Self::kernel_source();
            let syms = self
                .blaze
                .symbolize(&src, Input::AbsAddr(&missing))
                .unwrap_or_default();
            for (i, a) in missing.iter().enumerate() {
                let f = match syms.get(i) {
                    Some(Symbolized::Sym(s)) => KernelFrame {
                        addr: *a,
                        function: s.name.to_string(),
                        offset: Some(s.offset as u64),
                    },
                    _ => KernelFrame {
                        addr: *a,
                        function: format!("{a:#x}"),
                        offset: None,
                    },
                };
                self.kernel.insert(*a, f);
            }
        }
        addrs
            .iter()
            .filter_map(|a| self.kernel.get(a).cloned())
            .collect()
    }

    /// Cache the process's mappings now, while it is alive, so later symbolization works even
    /// after it exits. Cheap to call again.
    pub fn prepare(&mut self, pid: u32) {
        if self.prepared.insert(pid) {
            // The mappings only: the perf map, a file the target chooses, is read by
            // `super::perfmap` (safely), never by blazesym.
            let mut vmas_only = cache::Process::new(Pid::from(pid));
            vmas_only.cache_perf_map = false;
            let _ = self.blaze.cache(&Cache::Process(vmas_only));
        }
    }

    /// Forget a process (it exited or exec'd): its cached mappings describe an old image.
    pub fn forget(&mut self, pid: u32) {
        self.prepared.remove(&pid);
        let _ = self
            .blaze
            .evict(&Evict::Process(evict::Process::new(Pid::from(pid))));
    }

    /// Symbolize the frames of one stack of process `pid`. Each address yields one frame, or
    /// several when functions were inlined there (innermost first, `inlined: true`).
    pub fn symbolize(&mut self, pid: u32, raw: &[RawFrame]) -> Vec<Frame> {
        if raw.is_empty() {
            return Vec::new();
        }
        // Binaries through /proc/PID/map_files (the kernel's own link to the mapped file: no
        // path the target could redirect; needs CAP_CHECKPOINT_RESTORE, which stallprobe
        // keeps); never the perf map (see `prepare`).
        let process = || {
            let mut p = Process::new(Pid::from(pid));
            p.perf_map = false;
            p
        };
        let src = Source::Process(process());
        let addrs: Vec<u64> = raw.iter().map(|f| f.lookup).collect();
        let mut out = Vec::with_capacity(raw.len());
        let batch = self.blaze.symbolize(&src, Input::AbsAddr(&addrs));
        if let Ok(syms) = batch {
            for (rf, sym) in raw.iter().zip(syms) {
                push_frames(&mut out, rf, &sym);
            }
            return out;
        }
        // One bad module (corrupt DWARF, say) fails the whole batch: go address by address,
        // and for an address that still fails, use the ELF symbol table alone.
        let mut no_dwarf = process();
        no_dwarf.debug_syms = false;
        let no_dwarf = Source::Process(no_dwarf);
        for rf in raw {
            let one = self
                .blaze
                .symbolize_single(&src, Input::AbsAddr(rf.lookup))
                .or_else(|_| {
                    self.blaze
                        .symbolize_single(&no_dwarf, Input::AbsAddr(rf.lookup))
                });
            match one {
                Ok(sym) => push_frames(&mut out, rf, &sym),
                Err(_) => out.push(Frame::unknown(rf.addr)),
            }
        }
        out
    }
}

fn push_frames(out: &mut Vec<Frame>, rf: &RawFrame, sym: &Symbolized<'_>) {
    let s = match sym {
        Symbolized::Sym(s) => s,
        Symbolized::Unknown(_) => {
            out.push(Frame::unknown(rf.addr));
            return;
        }
    };
    let module = s.module.as_ref().map(|m| target_text(m.as_bytes()));
    // blazesym reports the outer function `f` with the location of its call into the first
    // inlined function, and each inlined function with the location of its own call into the
    // next; the innermost's location is where the address really is. Print innermost first.
    let mut chain: Vec<(String, Option<(String, u32)>)> = Vec::new();
    let loc = |ci: Option<&blazesym::symbolize::CodeInfo<'_>>| {
        ci.map(|c| (shorten_file(c.dir.as_deref(), &c.file), c.line.unwrap_or(0)))
    };
    chain.push((clean(&demangle(&s.name)), loc(s.code_info.as_deref())));
    for f in s.inlined.iter() {
        chain.push((clean(&demangle(&f.name)), loc(f.code_info.as_ref())));
    }
    for (i, (name, loc)) in chain.into_iter().enumerate().rev() {
        // glibc's syscall wrappers inline a helper of the same name: one frame is enough.
        if let Some(prev) = out.last_mut()
            && prev.addr == rf.addr
            && prev.inlined
            && prev.function.as_deref() == Some(name.as_str())
        {
            prev.inlined = i > 0;
            prev.offset = (i == 0).then_some(s.offset as u64);
            continue;
        }
        out.push(Frame {
            addr: rf.addr,
            function: Some(name),
            file: loc.as_ref().map(|l| l.0.clone()),
            line: loc.as_ref().map(|l| l.1).filter(|&l| l != 0),
            module: module.clone(),
            inlined: i > 0,
            offset: (i == 0).then_some(s.offset as u64),
            lang: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::demangle;

    #[test]
    fn demangles_rust_and_cpp_but_not_c() {
        assert_eq!(demangle("a"), "a");
        assert_eq!(demangle("b"), "b");
        assert_eq!(demangle("worker_loop"), "worker_loop");
        assert_eq!(
            demangle("_ZN3std6thread5sleep17h0123456789abcdefE"),
            "std::thread::sleep"
        );
        assert_eq!(demangle("_Z3fooi"), "foo(int)");
    }
}
