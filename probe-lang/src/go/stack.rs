//! Goroutine stacks by frame pointers (Go keeps them on x86-64): the return address is at
//! `[bp+8]`, the caller's frame pointer at `[bp]`. All stacks of a snapshot are walked in
//! lockstep, one vectored read per depth, so 100,000 goroutines cost a few hundred system
//! calls rather than a million.

use crate::mem::Memory;

/// One stack being walked (addresses in the target, relocated).
#[derive(Clone, Debug, Default)]
pub(crate) struct Walk {
    /// Pcs found so far, innermost first: the first is where the goroutine stopped, the
    /// others return addresses.
    pub pcs: Vec<u64>,
    /// The frame pointer of the function holding the last pc; 0 when done.
    pub bp: u64,
    pub lo: u64,
    pub hi: u64,
    /// Why the walk ended early, if it did.
    pub note: Option<&'static str>,
}

impl Walk {
    pub fn new(pc: u64, bp: u64, lo: u64, hi: u64) -> Walk {
        let mut w = Walk {
            pcs: vec![pc],
            bp: 0,
            lo,
            hi,
            note: None,
        };
        w.set_bp(bp);
        w
    }

    fn in_stack(&self, bp: u64) -> bool {
        bp.is_multiple_of(8) && bp >= self.lo && bp.checked_add(16).is_some_and(|e| e <= self.hi)
    }

    /// Continue from frame pointer `bp`, if it lies in the stack.
    pub fn set_bp(&mut self, bp: u64) {
        if bp == 0 {
            self.bp = 0;
        } else if self.in_stack(bp) {
            self.bp = bp;
        } else {
            self.bp = 0;
            self.note = Some("the frame pointer left the goroutine's stack");
        }
    }
}

/// Walk every stack until it ends: at a zero frame pointer or return address, at a pc for
/// which `stop` says so (runtime.goexit: not a frame of its own), when the frame pointer
/// leaves the stack or does not grow, or at `max_frames`.
pub(crate) fn walk_all(
    mem: &dyn Memory,
    walks: &mut [Walk],
    max_frames: usize,
    stop: &dyn Fn(u64) -> bool,
) {
    let mut buf = Vec::new();
    for _ in 0..max_frames {
        let active: Vec<usize> = (0..walks.len())
            .filter(|&i| walks[i].bp != 0 && walks[i].pcs.len() < max_frames)
            .collect();
        if active.is_empty() {
            break;
        }
        let addrs: Vec<u64> = active.iter().map(|&i| walks[i].bp).collect();
        buf.clear();
        buf.resize(addrs.len() * 16, 0);
        let ok = mem.read_many(&addrs, 16, &mut buf);
        for (k, &i) in active.iter().enumerate() {
            let w = &mut walks[i];
            if !ok[k] {
                w.bp = 0;
                w.note = Some("a frame could not be read");
                continue;
            }
            let chunk = &buf[k * 16..k * 16 + 16];
            let next_bp = u64::from_le_bytes(chunk[..8].try_into().unwrap_or_default());
            let ret = u64::from_le_bytes(chunk[8..].try_into().unwrap_or_default());
            let bp = w.bp;
            w.bp = 0;
            if ret == 0 || stop(ret) {
                continue;
            }
            w.pcs.push(ret);
            if w.pcs.len() >= max_frames {
                w.note = Some("stack cut at the frame limit");
                continue;
            }
            if next_bp != 0 && next_bp <= bp {
                w.note = Some("the frame pointer chain does not grow");
                continue;
            }
            w.set_bp(next_bp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::FakeMemory;

    fn stack_with(frames: &[(u64, u64, u64)]) -> FakeMemory {
        // (bp, next bp, return address)
        let mut m = FakeMemory::new();
        m.map(0x1000, vec![0; 0x1000]);
        for &(bp, next, ret) in frames {
            m.write(bp, &next.to_le_bytes());
            m.write(bp + 8, &ret.to_le_bytes());
        }
        m
    }

    #[test]
    fn walks_to_goexit() {
        let m = stack_with(&[
            (0x1100, 0x1200, 0xa1),
            (0x1200, 0x1300, 0xa2),
            (0x1300, 0, 0x99),
        ]);
        let mut w = vec![Walk::new(0xa0, 0x1100, 0x1000, 0x2000)];
        walk_all(&m, &mut w, 256, &|pc| pc == 0x99);
        assert_eq!(w[0].pcs, vec![0xa0, 0xa1, 0xa2]);
        assert_eq!(w[0].note, None);
    }

    #[test]
    fn stops_when_bp_leaves_or_loops_or_caps() {
        let m = stack_with(&[(0x1100, 0x9000, 0xa1)]);
        let mut w = vec![Walk::new(0xa0, 0x1100, 0x1000, 0x2000)];
        walk_all(&m, &mut w, 256, &|_| false);
        assert_eq!(w[0].pcs, vec![0xa0, 0xa1]);
        assert!(w[0].note.is_some());

        let m = stack_with(&[(0x1100, 0x1100, 0xa1)]);
        let mut w = vec![Walk::new(0xa0, 0x1100, 0x1000, 0x2000)];
        walk_all(&m, &mut w, 256, &|_| false);
        assert_eq!(w[0].pcs, vec![0xa0, 0xa1]);

        let frames: Vec<(u64, u64, u64)> = (0..100)
            .map(|i| (0x1010 + 16 * i, 0x1020 + 16 * i, 0x500 + i))
            .collect();
        let m = stack_with(&frames);
        let mut w = vec![Walk::new(0xa0, 0x1010, 0x1000, 0x2000)];
        walk_all(&m, &mut w, 10, &|_| false);
        assert_eq!(w[0].pcs.len(), 10);
        assert_eq!(w[0].note, Some("stack cut at the frame limit"));

        let mut w = vec![
            Walk::new(0xa0, 0x1, 0x1000, 0x2000),
            Walk::new(0xa0, 0x3000, 0x1000, 0x2000),
        ];
        walk_all(&m, &mut w, 10, &|_| false);
        assert_eq!(w[0].pcs, vec![0xa0]);
        assert_eq!(w[1].pcs, vec![0xa0]);
    }
}
