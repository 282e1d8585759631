//! stallprobe's kernel side. One small program per concern, all policy in user space:
//!
//! - [`programs::blocking`]: entry/exit of the probed blocking syscalls. Records the call in
//!   flight, adds its duration to the thread's histogram, sends slow calls with their stack.
//! - [`programs::signals`]: shutdown signals generated for a target.
//! - [`programs::lifecycle`]: thread exit (with final statistics), fork, exec.
//! - [`programs::snapshot`]: a task iterator that dumps every target thread's registers and
//!   statistics on demand (user space reads it every `--interval`).
//!
//! Every program starts with the target check ([`maps::is_target`]): one inlined array load,
//! so the cost for the rest of the host is a few instructions.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod programs;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// On the host this binary is an empty shell: the real one is built for `bpfel-unknown-none`.
#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("stallprobe-ebpf is a BPF object; it is loaded by the stallprobe binary.");
    std::process::exit(2);
}
