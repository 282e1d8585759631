//! Reading another process's memory (its stack, a futex word) with process_vm_readv.

use std::io::IoSliceMut;

use nix::{
    sys::uio::{RemoteIoVec, process_vm_readv},
    unistd::Pid,
};

/// Read up to `len` bytes at `addr` in `pid`, clamped to the end of the mapping that holds
/// `addr` (`map_end`); returns what could be read (possibly less, possibly nothing).
pub fn read_stack(pid: u32, addr: u64, len: usize, map_end: Option<u64>) -> Vec<u8> {
    let len = match map_end {
        Some(end) if end > addr => len.min((end - addr) as usize),
        Some(_) => return Vec::new(),
        None => len,
    };
    let mut buf = vec![0u8; len];
    let mut done = 0usize;
    // process_vm_readv stops at the first unreadable page; retry the rest once in smaller steps
    // is not worth it for stacks (the rest is above the stack top).
    while done < len {
        let Some(base) = addr.checked_add(done as u64) else {
            break;
        };
        let remote = [RemoteIoVec {
            base: base as usize,
            len: len - done,
        }];
        let mut local = [IoSliceMut::new(&mut buf[done..])];
        match process_vm_readv(Pid::from_raw(pid as i32), &mut local, &remote) {
            Ok(0) | Err(_) => break,
            Ok(n) => done += n,
        }
    }
    buf.truncate(done);
    buf
}

/// Read a u32 (a futex word) at `addr` in `pid`.
pub fn read_u32(pid: u32, addr: u64) -> Option<u32> {
    let b = read_stack(pid, addr, 4, None);
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}
