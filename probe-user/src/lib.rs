//! stallprobe's user side as a library: load the kernel probes, watch processes, aggregate what
//! they report into live events and a report with a shutdown verdict.
//!
//! Data flows one way (docs/design.md has the picture):
//!
//! ```text
//! bpf (kernel records) → events (decoded) → tracker (threads, processes) → verdict, locks
//!   (judgement) → assemble → report (the data) → export (text, JSON, JUnit, pprof …)
//! ```
//!
//! - [`bpf`] loads and attaches the kernel programs; [`events`] decodes what they send.
//! - [`tracker`] keeps per-thread and per-process state; it reads /proc, target memory and
//!   stacks through its `Host` trait ([`procfs`], [`stack`], [`waits`], [`runtime`] are the
//!   real sources), so it is unit-tested with fakes.
//! - [`verdict`] and [`locks`] judge: roles, flags, reasons, lock owners, deadlock cycles.
//! - [`assemble`] builds the [`report`]; [`session`] is the I/O shell that drives all of it.
//! - [`export`] writes the report and the live lines; [`modes`] are `--pid`, `run` and
//!   `watch` on one event loop; [`cli`] parses the command line.

pub(crate) mod assemble;
pub(crate) mod attach_broker;
pub(crate) mod bpf;
pub mod cli;
pub(crate) mod clock;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod export;
/// Entry points for the fuzz targets in `fuzz/` (not an API).
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod hist;
pub(crate) mod locks;
pub(crate) mod modes;
pub(crate) mod preflight;
pub(crate) mod privileges;
pub(crate) mod procfs;
pub mod report;
pub(crate) mod runtime;
pub(crate) mod session;
pub(crate) mod signals;
pub(crate) mod stack;
pub(crate) mod syscalls;
pub(crate) mod target_fs;
pub(crate) mod tracker;
pub(crate) mod verdict;
pub mod waits;
