//! stallprobe's user side as a library: load the kernel probes, watch processes, aggregate what
//! they report into live events and a report with a shutdown verdict.
//!
//! Layers, bottom up:
//! - [`bpf`]: loading/attaching the kernel programs; the target set, ring buffer, counters,
//!   task snapshots. [`events`] decodes what they send.
//! - [`procfs`], [`stack`], [`runtime`], [`syscalls`], [`signals`]: facts about the target
//!   from /proc, its stacks (DWARF unwinding + symbolization), its language runtime.
//! - [`session`]: the aggregation engine ([`session::Session`]), [`verdict`]: the shutdown
//!   judgement, [`report`]: the result as data, [`render`]: as text or JSON, [`export`]: as
//!   JUnit XML, Markdown, GitHub annotations, folded stacks, a flame graph and pprof.
//! - [`cli`], [`driver`], [`run`]: the `stallprobe` command.

pub mod bpf;
pub mod cli;
pub mod clock;
pub mod driver;
pub mod error;
pub mod events;
pub mod export;
pub mod hist;
pub mod locks;
pub mod preflight;
pub mod procfs;
pub mod render;
pub mod report;
pub mod run;
pub mod runtime;
pub mod session;
pub mod sidecar;
pub mod signals;
pub mod stack;
pub mod syscalls;
pub mod verdict;
pub mod waits;
