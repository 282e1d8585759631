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
}
