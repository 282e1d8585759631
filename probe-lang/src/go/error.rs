//! Why goroutines could not be read: human reasons for the report's notes.

use crate::mem::MemError;

/// Why a Go binary or a Go process could not be read. Every variant says why in words, so the
/// caller can put it in the report and fall back to the thread view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GoError {
    /// The bytes are not an ELF file we can read.
    NotElf(String),
    /// No `.go.buildinfo` (and no Go pclntab): not a Go program.
    NotGo,
    /// Not x86-64 little-endian.
    UnsupportedArch(String),
    /// The Go version is older than the oldest supported one.
    TooOld(String),
    /// The version string could not be parsed.
    BadVersion(String),
    /// No usable `.gopclntab`.
    NoPclntab(String),
    /// `runtime.allgs`/`allglen`/`allgptr` could not be found.
    NoAllgs(String),
    /// The offsets of `runtime.g` fields could not be found.
    NoLayout(String),
    /// The target's memory could not be read where it must be.
    Memory(String),
    /// What the target's memory holds does not make sense (torn or not a Go runtime).
    Inconsistent(String),
}

impl std::fmt::Display for GoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GoError::NotElf(why) => write!(f, "not an ELF file: {why}"),
            GoError::NotGo => f.write_str("not a Go binary (no .go.buildinfo, no Go pclntab)"),
            GoError::UnsupportedArch(a) => {
                write!(f, "Go binary for {a}: only x86-64 is supported")
            }
            GoError::TooOld(v) => write!(f, "Go {v} is older than supported 1.17"),
            GoError::BadVersion(v) => write!(f, "cannot parse the Go version {v:?}"),
            GoError::NoPclntab(why) => write!(f, "no pclntab: {why}"),
            GoError::NoAllgs(why) => write!(f, "cannot find runtime.allgs: {why}"),
            GoError::NoLayout(why) => write!(f, "cannot find the runtime.g layout: {why}"),
            GoError::Memory(why) => write!(f, "cannot read the Go runtime's memory: {why}"),
            GoError::Inconsistent(why) => {
                write!(f, "the Go runtime's memory does not make sense: {why}")
            }
        }
    }
}

impl std::error::Error for GoError {}

impl From<MemError> for GoError {
    fn from(e: MemError) -> GoError {
        GoError::Memory(e.to_string())
    }
}
