//! The BPF programs, one module per concern.

pub mod blocking;
pub mod hooks;
pub mod lifecycle;
pub mod sched;
pub mod signals;
pub mod snapshot;
