//! The target's address space, as something that can be read.

use std::collections::BTreeMap;

/// Why a read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemError {
    /// Nothing (or not everything) is mapped at that address.
    Unmapped { addr: u64, len: usize },
    /// The process is gone.
    Gone,
    /// Not allowed (ptrace access mode check).
    Denied,
}

impl std::fmt::Display for MemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemError::Unmapped { addr, len } => write!(f, "cannot read {len} bytes at {addr:#x}"),
            MemError::Gone => f.write_str("the process is gone"),
            MemError::Denied => f.write_str("not allowed to read the process's memory"),
        }
    }
}

impl std::error::Error for MemError {}

/// A readable address space.
pub trait Memory {
    /// Fill `buf` from `addr`; all or nothing.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError>;

    fn read_u64(&self, addr: u64) -> Result<u64, MemError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn read_u32(&self, addr: u64) -> Result<u32, MemError> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// `len` bytes at `addr`, refusing lengths above `cap` (a garbage length read from the
    /// target must not become a huge allocation).
    fn read_vec(&self, addr: u64, len: usize, cap: usize) -> Result<Vec<u8>, MemError> {
        if len > cap {
            return Err(MemError::Unmapped { addr, len });
        }
        let mut v = vec![0u8; len];
        self.read(addr, &mut v)?;
        Ok(v)
    }

    /// Many reads of the same length: `len` bytes at each of `addrs` into consecutive
    /// `len`-byte chunks of `out` (which must hold `addrs.len() * len` bytes). Returns, per
    /// address, whether that read succeeded (a failed chunk is left zeroed). Implementations may
    /// batch the reads (ProcessMemory: up to 1024 per system call).
    fn read_many(&self, addrs: &[u64], len: usize, out: &mut [u8]) -> Vec<bool> {
        let mut ok = vec![false; addrs.len()];
        if len == 0 {
            return vec![true; addrs.len()];
        }
        for ((addr, chunk), ok) in addrs.iter().zip(out.chunks_exact_mut(len)).zip(&mut ok) {
            *ok = self.read(*addr, chunk).is_ok();
            if !*ok {
                chunk.fill(0);
            }
        }
        ok
    }
}

/// Another process's memory, read with process_vm_readv (needs ptrace access to it).
pub struct ProcessMemory {
    pub pid: u32,
}

impl Memory for ProcessMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        use nix::{
            errno::Errno,
            sys::uio::{RemoteIoVec, process_vm_readv},
            unistd::Pid,
        };
        let len = buf.len();
        if len == 0 {
            return Ok(());
        }
        let remote = [RemoteIoVec {
            base: addr as usize,
            len,
        }];
        let mut local = [std::io::IoSliceMut::new(buf)];
        match process_vm_readv(Pid::from_raw(self.pid as i32), &mut local, &remote) {
            Ok(n) if n == len => Ok(()),
            Ok(_) | Err(Errno::EFAULT) | Err(Errno::EIO) => Err(MemError::Unmapped { addr, len }),
            Err(Errno::ESRCH) => Err(MemError::Gone),
            Err(Errno::EPERM) => Err(MemError::Denied),
            Err(_) => Err(MemError::Unmapped { addr, len }),
        }
    }

    fn read_many(&self, addrs: &[u64], len: usize, out: &mut [u8]) -> Vec<bool> {
        let mut ok = vec![false; addrs.len()];
        if len == 0 {
            return vec![true; addrs.len()];
        }
        let Some(need) = addrs.len().checked_mul(len) else {
            return ok;
        };
        if out.len() < need {
            return ok;
        }
        let mut i = 0;
        while i < addrs.len() {
            let end = (i + MAX_IOV).min(addrs.len());
            match self.readv_prefix(&addrs[i..end], len, &mut out[i * len..end * len]) {
                Ok(done) => {
                    ok[i..i + done].iter_mut().for_each(|o| *o = true);
                    if i + done < end {
                        // The chunk after the last complete one failed (or was short): zero it
                        // and go on after it.
                        out[(i + done) * len..(i + done + 1) * len].fill(0);
                        i += done + 1;
                    } else {
                        i = end;
                    }
                }
                Err(_) => break, // gone or denied: nothing more will succeed
            }
        }
        ok
    }
}

/// Most remote iovecs one process_vm_readv call takes here (the kernel's UIO_MAXIOV is 1024).
const MAX_IOV: usize = 1024;

impl ProcessMemory {
    /// One vectored read of up to MAX_IOV chunks; returns how many leading chunks were read
    /// completely, or the error when not even the first one could be.
    fn readv_prefix(&self, addrs: &[u64], len: usize, out: &mut [u8]) -> Result<usize, MemError> {
        use nix::{
            errno::Errno,
            sys::uio::{RemoteIoVec, process_vm_readv},
            unistd::Pid,
        };
        let remote: Vec<RemoteIoVec> = addrs
            .iter()
            .map(|&a| RemoteIoVec {
                base: a as usize,
                len,
            })
            .collect();
        let mut local: Vec<std::io::IoSliceMut> = out
            .chunks_exact_mut(len)
            .map(std::io::IoSliceMut::new)
            .collect();
        match process_vm_readv(Pid::from_raw(self.pid as i32), &mut local, &remote) {
            Ok(n) => Ok(n / len),
            Err(Errno::ESRCH) => Err(MemError::Gone),
            Err(Errno::EPERM) => Err(MemError::Denied),
            Err(_) => Ok(0),
        }
    }
}

/// A fake address space for tests: regions of bytes at addresses.
#[derive(Clone, Debug, Default)]
pub struct FakeMemory {
    regions: BTreeMap<u64, Vec<u8>>,
}

impl FakeMemory {
    pub fn new() -> FakeMemory {
        FakeMemory::default()
    }

    /// Map `bytes` at `addr` (regions must not overlap).
    pub fn map(&mut self, addr: u64, bytes: Vec<u8>) -> &mut Self {
        self.regions.insert(addr, bytes);
        self
    }

    /// Overwrite bytes inside an existing region.
    pub fn write(&mut self, addr: u64, bytes: &[u8]) {
        let (start, region) = self
            .regions
            .range_mut(..=addr)
            .next_back()
            .expect("write outside any region");
        let off = (addr - start) as usize;
        region[off..off + bytes.len()].copy_from_slice(bytes);
    }
}

impl Memory for FakeMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let err = MemError::Unmapped {
            addr,
            len: buf.len(),
        };
        let (start, region) = self.regions.range(..=addr).next_back().ok_or(err)?;
        let off = usize::try_from(addr - start).map_err(|_| err)?;
        let end = off.checked_add(buf.len()).ok_or(err)?;
        let src = region.get(off..end).ok_or(err)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_reads_inside_regions_only() {
        let mut m = FakeMemory::new();
        m.map(0x1000, (0u8..16).collect());
        assert_eq!(
            m.read_u32(0x1004).unwrap(),
            u32::from_le_bytes([4, 5, 6, 7])
        );
        assert!(m.read_u64(0x100c).is_err(), "crosses the end");
        assert!(m.read_u32(0xfff).is_err(), "before the region");
        assert!(
            m.read_vec(0x1000, 1 << 40, 1 << 20).is_err(),
            "over the cap"
        );
        m.write(0x1008, &[0xff; 4]);
        assert_eq!(m.read_u32(0x1008).unwrap(), u32::MAX);
    }

    #[test]
    fn own_process_memory() {
        let x: u64 = 0x1122_3344_5566_7788;
        let m = ProcessMemory {
            pid: std::process::id(),
        };
        assert_eq!(m.read_u64(&x as *const u64 as u64).unwrap(), x);
        assert!(m.read_u64(8).is_err());
    }

    #[test]
    fn read_many_batches_and_marks_failures() {
        let xs: Vec<u64> = (0..3000u64).map(|i| i * 3).collect();
        let m = ProcessMemory {
            pid: std::process::id(),
        };
        let mut addrs: Vec<u64> = xs.iter().map(|x| x as *const u64 as u64).collect();
        addrs[1500] = 8; // unmapped
        let mut out = vec![0u8; addrs.len() * 8];
        let ok = m.read_many(&addrs, 8, &mut out);
        for (i, c) in out.chunks_exact(8).enumerate() {
            let v = u64::from_le_bytes(c.try_into().unwrap());
            if i == 1500 {
                assert!(!ok[i]);
                assert_eq!(v, 0);
            } else {
                assert!(ok[i], "{i}");
                assert_eq!(v, xs[i]);
            }
        }
        let mut f = FakeMemory::new();
        f.map(0x1000, vec![7; 16]);
        let mut out = vec![0u8; 8];
        assert_eq!(
            f.read_many(&[0x1000, 0x2000], 4, &mut out),
            vec![true, false]
        );
        assert_eq!(out, [7, 7, 7, 7, 0, 0, 0, 0]);
    }
}
