//! CPython (3.8–3.13) frames and GIL owner, read from outside the process.
//!
//! [`PyProcess::locate`] finds the interpreter module among the target's mappings and reads
//! its symbols and version (no target memory needed); [`PyProcess::threads`] then reads the
//! interpreter's thread states and frames through a [`Memory`]. [`merge`] puts a thread's
//! Python frames in place of the native `_PyEval_EvalFrameDefault` frames that run them.
//!
//! Nothing here stops the target: the lists are read while they change, so a snapshot can be
//! torn (a frame popped between two reads); each such case ends one walk with a reason.

pub mod layout;
pub mod linetable;
pub mod locate;
pub mod merge;
mod read;

pub use locate::{MapLine, candidates, parse_maps};
pub use merge::{Merged, MergedFrame, merge};

use crate::mem::Memory;
use layout::Layout;
use std::path::{Path, PathBuf};

/// One Python frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyFrame {
    /// `co_qualname` (3.11+, e.g. `Worker.run`) or `co_name`.
    pub function: String,
    /// `co_filename`, as the interpreter has it (may be relative, or `<string>`).
    pub file: String,
    /// None when the line table has no line for the instruction (or is unreadable).
    pub line: Option<u32>,
    /// This frame is where a native `_PyEval_EvalFrameDefault` call starts: the innermost
    /// entry frame and every frame above it down to the previous entry frame run in one eval
    /// call (3.8–3.10: every frame is an entry frame).
    pub entry: bool,
}

/// One Python thread (one `PyThreadState`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyThread {
    /// The OS thread id; None if it could not be read.
    pub tid: Option<u32>,
    /// Address of the thread state in the target.
    pub tstate: u64,
    /// Innermost first.
    pub frames: Vec<PyFrame>,
    /// Why `frames` is empty.
    pub why_empty: Option<String>,
    /// Why the walk stopped before the outermost frame, when it did (frames are kept).
    pub incomplete: Option<String>,
}

/// Who holds the GIL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gil {
    /// Held by this thread state (tid when it is one of the listed threads).
    Held { tstate: u64, tid: Option<u32> },
    /// Nobody holds it.
    Free,
    /// Could not tell, and why.
    Unknown(String),
}

/// The Python threads of a process at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PySnapshot {
    pub threads: Vec<PyThread>,
    pub gil: Gil,
    /// The tid holding the GIL (same as `gil`, for convenience).
    pub gil_holder: Option<u32>,
    /// Where the GIL's state is in the target, `[start, end)`: a thread asleep on a futex in
    /// this range waits for the GIL (it works on stripped builds, where `take_gil` has no name).
    pub gil_range: Option<(u64, u64)>,
    /// Which module, version and layout were used; what was cut or skipped.
    pub notes: Vec<String>,
}

impl PySnapshot {
    pub fn thread(&self, tid: u32) -> Option<&PyThread> {
        self.threads.iter().find(|t| t.tid == Some(tid))
    }

    /// Renumber the tids with `map` (e.g. [`crate::ns::ns_tid_map`] for a target in another
    /// pid namespace: CPython records tids as its own namespace numbers them). Threads whose
    /// tid is not in the map lose it.
    pub fn map_tids(&mut self, map: &std::collections::HashMap<u32, u32>) {
        for t in &mut self.threads {
            t.tid = t.tid.and_then(|tid| map.get(&tid).copied());
        }
        self.gil_holder = self.gil_holder.and_then(|tid| map.get(&tid).copied());
        if let Gil::Held { tid, .. } = &mut self.gil {
            *tid = tid.and_then(|t| map.get(&t).copied());
        }
    }

    /// Why `tid` has no Python frames (None if it has some).
    pub fn why_no_frames(&self, tid: u32) -> Option<String> {
        match self.thread(tid) {
            None => Some(
                "not a Python thread: no interpreter thread state has this tid (a native or runtime thread, or one that never ran Python code)"
                    .into(),
            ),
            Some(t) if t.frames.is_empty() => t.why_empty.clone(),
            Some(_) => None,
        }
    }
}

/// Why no snapshot could be taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PyError {
    /// No CPython interpreter in the process (or not one this reader can find).
    NotPython(String),
    /// A CPython version this reader has no layout for.
    UnknownVersion(String),
    /// The interpreter's state could not be read.
    Unreadable(String),
    /// What was read does not fit the expected layout.
    Inconsistent(String),
}

impl std::fmt::Display for PyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PyError::NotPython(s) => write!(f, "no CPython interpreter found: {s}"),
            PyError::UnknownVersion(s) => write!(f, "unsupported CPython version: {s}"),
            PyError::Unreadable(s) => write!(f, "cannot read the interpreter state: {s}"),
            PyError::Inconsistent(s) => write!(f, "the interpreter state does not look right: {s}"),
        }
    }
}

impl std::error::Error for PyError {}

/// Largest module file read whole (an interpreter or libc is tens of MiB; a larger file named
/// like one is not read: "unreadable").
pub const MAX_MODULE_BYTES: u64 = 512 << 20;

/// A module file's bytes, unless it is larger than [`MAX_MODULE_BYTES`] or not a regular file.
fn read_module(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_MODULE_BYTES {
        return None;
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    f.take(MAX_MODULE_BYTES).read_to_end(&mut out).ok()?;
    Some(out)
}

/// glibc x86_64's offset of `tid` in `struct pthread` (used when libc's own descriptor cannot
/// be read; the same from glibc 2.17 to 2.41).
pub const DEFAULT_PTHREAD_TID_OFFSET: u64 = 0x2d0;

/// A CPython interpreter found in a process: where `_PyRuntime` is and which layout fits.
#[derive(Clone, Debug)]
pub struct PyProcess {
    module: PathBuf,
    version: String,
    minor: u32,
    /// Runtime addresses (load bias applied).
    runtime: u64,
    code_type: Option<u64>,
    unicode_type: Option<u64>,
    bytes_type: Option<u64>,
    pthread_tid_offset: u64,
    layout: Layout,
    notes: Vec<String>,
}

/// "3.11.7" (or "3.13.0rc2") from PY_VERSION_HEX.
pub fn version_text_from_hex(v: u32) -> String {
    let (major, minor, micro) = (v >> 24, (v >> 16) & 0xff, (v >> 8) & 0xff);
    let (level, serial) = ((v >> 4) & 0xf, v & 0xf);
    let suffix = match level {
        0xa => format!("a{serial}"),
        0xb => format!("b{serial}"),
        0xc => format!("rc{serial}"),
        _ => String::new(),
    };
    format!("{major}.{minor}.{micro}{suffix}")
}

impl PyProcess {
    /// Find the interpreter among `maps` (see [`candidates`]): the first candidate whose ELF
    /// (as `open_module` gives it, e.g. read from `/proc/PID/map_files/…` or
    /// `/proc/PID/root<path>`) exports `_PyRuntime`. libc's tid offset comes from libc's ELF when
    /// `open_module` gives it.
    pub fn locate(
        maps: &[MapLine],
        open_module: impl Fn(&Path) -> Option<Vec<u8>>,
    ) -> Result<PyProcess, PyError> {
        let cands = candidates(maps);
        let mut tried = Vec::new();
        for path in &cands {
            let Some(elf) = open_module(path) else {
                tried.push(format!("{}: unreadable", path.display()));
                continue;
            };
            let Some(facts) = locate::module_facts(&elf) else {
                tried.push(format!("{}: not ELF", path.display()));
                continue;
            };
            if facts.runtime.is_none() {
                tried.push(format!("{}: no _PyRuntime symbol", path.display()));
                continue;
            }
            let Some(bias) = locate::load_bias(maps, path, &elf) else {
                tried.push(format!("{}: no load address", path.display()));
                continue;
            };
            let mut p = PyProcess::from_facts(path, facts, bias)?;
            let libc = locate::libc_path(maps).and_then(|l| open_module(&l));
            match libc.as_deref().and_then(locate::pthread_tid_offset) {
                Some(off) => p.pthread_tid_offset = off,
                None if p.layout.ts_native_thread_id.is_none() => p.notes.push(format!(
                    "glibc's _thread_db_pthread_tid not readable: assuming tid at struct pthread +{DEFAULT_PTHREAD_TID_OFFSET:#x}"
                )),
                None => {}
            }
            return Ok(p);
        }
        Err(PyError::NotPython(if cands.is_empty() {
            "no file-backed mappings".into()
        } else {
            tried.join("; ")
        }))
    }

    /// [`locate`](Self::locate) for a live process: reads `/proc/PID/maps`, and each module
    /// through `/proc/PID/map_files/<range>` (the very file mapped, even if replaced or deleted
    /// on disk since), else `/proc/PID/root<path>` (works across mount namespaces).
    pub fn locate_pid(pid: u32) -> Result<PyProcess, PyError> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .map_err(|e| PyError::NotPython(format!("/proc/{pid}/maps: {e}")))?;
        let maps = parse_maps(&text);
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        PyProcess::locate(&maps, |p| {
            maps.iter()
                .find(|m| m.path.as_deref() == Some(p))
                .and_then(|m| {
                    read_module(Path::new(&format!(
                        "/proc/{pid}/map_files/{:x}-{:x}",
                        m.start, m.end
                    )))
                })
                .or_else(|| read_module(&root.join(p.strip_prefix("/").unwrap_or(p))))
        })
    }

    /// The interpreter in one module: its ELF bytes and load bias (runtime address minus ELF
    /// virtual address).
    pub fn from_module(path: &Path, elf: &[u8], bias: u64) -> Result<PyProcess, PyError> {
        let facts = locate::module_facts(elf)
            .ok_or_else(|| PyError::NotPython(format!("{}: not ELF", path.display())))?;
        PyProcess::from_facts(path, facts, bias)
    }

    fn from_facts(path: &Path, f: locate::ModuleFacts, bias: u64) -> Result<PyProcess, PyError> {
        let runtime = f.runtime.ok_or_else(|| {
            PyError::NotPython(format!("{}: no _PyRuntime symbol", path.display()))
        })?;
        let mut notes = Vec::new();
        let name_minor = locate::minor_from_name(path);
        let text_minor = |t: &str| t.split('.').nth(1).and_then(|m| m.parse::<u32>().ok());
        let (version, minor) = if let Some(hex) = f.version_hex.filter(|h| h >> 24 == 3) {
            (version_text_from_hex(hex), (hex >> 16) & 0xff)
        } else {
            match (&f.version_text, name_minor) {
                (Some(t), Some(m)) if text_minor(t) == Some(m) => (t.clone(), m),
                (_, Some(m)) => (format!("3.{m}"), m),
                (Some(t), None) => match text_minor(t) {
                    Some(m) => (t.clone(), m),
                    None => {
                        return Err(PyError::UnknownVersion(format!(
                            "{}: cannot tell the version",
                            path.display()
                        )));
                    }
                },
                (None, None) => {
                    return Err(PyError::UnknownVersion(format!(
                        "{}: no Py_Version symbol, no version string, no version in the file name",
                        path.display()
                    )));
                }
            }
        };
        let layout = layout::for_minor(minor).ok_or_else(|| {
            PyError::UnknownVersion(format!(
                "CPython {version} ({}): this reader knows 3.8–3.13",
                path.display()
            ))
        })?;
        notes.push(format!(
            "CPython {version} in {} (_PyRuntime at {:#x})",
            path.display(),
            runtime.wrapping_add(bias)
        ));
        if f.code_type.is_none() {
            notes.push("no PyCode_Type symbol: code objects are not type-checked".into());
        }
        let at = |a: Option<u64>| a.map(|a| a.wrapping_add(bias));
        Ok(PyProcess {
            module: path.to_path_buf(),
            version,
            minor,
            runtime: runtime.wrapping_add(bias),
            code_type: at(f.code_type),
            unicode_type: at(f.unicode_type),
            bytes_type: at(f.bytes_type),
            pthread_tid_offset: DEFAULT_PTHREAD_TID_OFFSET,
            layout,
            notes,
        })
    }

    /// A process description without a module: CPython 3.`minor`'s built-in layout (None
    /// for a version without one), `_PyRuntime` at `runtime`, and `(code, str, bytes)` type
    /// objects when given. For fuzzing the reader over made-up memory (stallprobe's
    /// `fuzzing` module); not for locating a real interpreter.
    #[doc(hidden)]
    pub fn for_fuzzing(
        minor: u32,
        runtime: u64,
        types: Option<(u64, u64, u64)>,
    ) -> Option<PyProcess> {
        Some(PyProcess {
            module: PathBuf::from("/fuzz/libpython3.so"),
            version: format!("3.{minor}"),
            minor,
            runtime,
            code_type: types.map(|t| t.0),
            unicode_type: types.map(|t| t.1),
            bytes_type: types.map(|t| t.2),
            pthread_tid_offset: DEFAULT_PTHREAD_TID_OFFSET,
            layout: layout::for_minor(minor)?,
            notes: Vec::new(),
        })
    }

    /// "3.11.7", or "3.10" when only the minor version is known.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn minor(&self) -> u32 {
        self.minor
    }

    /// The module holding `_PyRuntime`.
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// Address of `_PyRuntime` in the target.
    pub fn runtime_addr(&self) -> u64 {
        self.runtime
    }

    /// Use this offset of `tid` in glibc's `struct pthread` (3.8–3.10 only need it).
    pub fn set_pthread_tid_offset(&mut self, off: u64) {
        self.pthread_tid_offset = off;
    }

    /// Read every Python thread's frames and the GIL holder.
    pub fn threads(&self, mem: &dyn Memory) -> Result<PySnapshot, PyError> {
        read::snapshot(self, mem)
    }
}

#[cfg(test)]
mod tests;
