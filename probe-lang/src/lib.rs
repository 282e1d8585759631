//! probe-lang: reads language runtimes' own bookkeeping from outside a live process, without
//! stopping or changing it.
//!
//! Everything here works on a [`mem::Memory`] (the target's address space) and on the target's
//! binaries as bytes, so it is unit-tested with fakes and recorded inputs; `ProcessMemory` is
//! the one implementation that touches a real process. Every read from the target is treated as
//! hostile: sizes and offsets are checked, loops are bounded, a torn read is an error value,
//! never a panic.

pub mod go;
pub mod java;
pub mod mem;
pub mod ns;
pub mod python;
