//! Channel details for a goroutine blocked on a channel: `g.waiting` → sudog → `c` (hchan):
//! capacity, length, closed, and how many goroutines wait to send and to receive.

use std::collections::HashMap;

use super::{ChanOp, ChanWait, layout::ChanLayout};
use crate::mem::Memory;

/// Most select cases followed through sudog.waitlink.
const MAX_CASES: u32 = 65_536;

/// The channel operation a wait reason names (as the target spells it).
pub(crate) fn chan_op(reason: &str) -> Option<ChanOp> {
    match reason {
        "chan send" => Some(ChanOp::Send),
        "chan receive" => Some(ChanOp::Recv),
        "select" => Some(ChanOp::Select),
        _ => None,
    }
}

fn word(b: &[u8], off: u64) -> Option<u64> {
    let o = usize::try_from(off).ok()?;
    Some(u64::from_le_bytes(
        b.get(o..o.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn ptr_ok(p: u64) -> bool {
    p != 0 && p.is_multiple_of(8)
}

/// A channel's state, read once per snapshot.
#[derive(Clone, Debug)]
struct Hchan {
    cap: u64,
    len: u64,
    closed: bool,
    senders: u32,
    receivers: u32,
}

/// Channels already read in this snapshot (2,000 senders on one channel: one read).
#[derive(Default)]
pub(crate) struct ChanCache(HashMap<u64, Option<Hchan>>);

/// Count a sudog list through the link at `link_off`, at most `cap` entries.
fn count_list(mem: &dyn Memory, first: u64, link_off: u64, cap: u32) -> u32 {
    let mut n = 0;
    let mut p = first;
    while ptr_ok(p) && n < cap {
        n += 1;
        match p.checked_add(link_off).map(|a| mem.read_u64(a)) {
            Some(Ok(next)) if next != p => p = next,
            _ => break,
        }
    }
    n
}

fn read_hchan(mem: &dyn Memory, l: &ChanLayout, c: u64, max_waiters: u32) -> Option<Hchan> {
    let len = usize::try_from(l.hchan_len).ok()?;
    let b = mem.read_vec(c, len, 4096).ok()?;
    let qcount = word(&b, l.qcount)?;
    let dataqsiz = word(&b, l.dataqsiz)?;
    let closed = u32::from_le_bytes(
        b.get(usize::try_from(l.closed).ok()?..)?
            .get(..4)?
            .try_into()
            .ok()?,
    );
    if qcount > dataqsiz || dataqsiz > 1 << 40 {
        return None; // torn or not a channel
    }
    Some(Hchan {
        cap: dataqsiz,
        len: qcount,
        closed: closed != 0,
        senders: count_list(mem, word(&b, l.sendq_first)?, l.sudog_next, max_waiters),
        receivers: count_list(mem, word(&b, l.recvq_first)?, l.sudog_next, max_waiters),
    })
}

/// The channel wait of a goroutine whose `g.waiting` is `waiting`.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn read_wait(
    mem: &dyn Memory,
    l: &ChanLayout,
    waiting: u64,
    op: ChanOp,
    max_waiters: u32,
    cache: &mut ChanCache,
) -> Option<ChanWait> {
    if !ptr_ok(waiting) {
        return None;
    }
    let sudog = mem
        .read_vec(waiting, usize::try_from(l.sudog_len).ok()?, 4096)
        .ok()?;
    read_wait_from(mem, l, waiting, &sudog, op, max_waiters, cache)
}

/// [`read_wait`] with the sudog at `waiting` already read (batched by the caller).
pub(crate) fn read_wait_from(
    mem: &dyn Memory,
    l: &ChanLayout,
    waiting: u64,
    sudog: &[u8],
    op: ChanOp,
    max_waiters: u32,
    cache: &mut ChanCache,
) -> Option<ChanWait> {
    if !ptr_ok(waiting) {
        return None;
    }
    let c = word(sudog, l.sudog_c)?;
    if !ptr_ok(c) {
        return None;
    }
    let cases = if op == ChanOp::Select {
        count_list(mem, waiting, l.sudog_waitlink, MAX_CASES)
    } else {
        1
    };
    let h = cache
        .0
        .entry(c)
        .or_insert_with(|| read_hchan(mem, l, c, max_waiters))
        .clone()?;
    Some(ChanWait {
        addr: c,
        cap: h.cap,
        len: h.len,
        closed: h.closed,
        senders: h.senders,
        receivers: h.receivers,
        op,
        cases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::FakeMemory;

    fn layout() -> ChanLayout {
        ChanLayout {
            sudog_c: 0x48,
            sudog_next: 0x8,
            sudog_waitlink: 0x30,
            sudog_is_select: Some(0x28),
            sudog_len: 0x50,
            qcount: 0,
            dataqsiz: 8,
            closed: 0x1c,
            recvq_first: 0x30,
            sendq_first: 0x40,
            hchan_len: 0x48,
        }
    }

    #[test]
    fn send_wait_with_three_senders() {
        let l = layout();
        let mut m = FakeMemory::new();
        m.map(0x10000, vec![0; 0x1000]);
        let c: u64 = 0x10800;
        // three sudogs on sendq: 0x10000 -> 0x10100 -> 0x10200
        for (s, next) in [(0x10000u64, 0x10100u64), (0x10100, 0x10200), (0x10200, 0)] {
            m.write(s + l.sudog_next, &next.to_le_bytes());
            m.write(s + l.sudog_c, &c.to_le_bytes());
        }
        m.write(c + l.dataqsiz, &4u64.to_le_bytes());
        m.write(c + l.qcount, &4u64.to_le_bytes());
        m.write(c + l.sendq_first, &0x10000u64.to_le_bytes());
        let mut cache = ChanCache::default();
        let w = read_wait(&m, &l, 0x10100, ChanOp::Send, 100, &mut cache).unwrap();
        assert_eq!(
            (w.cap, w.len, w.closed, w.senders, w.receivers),
            (4, 4, false, 3, 0)
        );
        assert_eq!(w.addr, c);
        // capped walk
        let mut cache = ChanCache::default();
        let w = read_wait(&m, &l, 0x10100, ChanOp::Send, 2, &mut cache).unwrap();
        assert_eq!(w.senders, 2);
        // a torn channel (len > cap) gives no details
        m.write(c + l.qcount, &9u64.to_le_bytes());
        let mut cache = ChanCache::default();
        assert!(read_wait(&m, &l, 0x10100, ChanOp::Send, 100, &mut cache).is_none());
        // garbage pointers
        assert!(read_wait(&m, &l, 0, ChanOp::Send, 100, &mut cache).is_none());
        assert!(read_wait(&m, &l, 0x123, ChanOp::Send, 100, &mut cache).is_none());
        assert!(read_wait(&m, &l, 0x90000, ChanOp::Send, 100, &mut cache).is_none());
    }

    #[test]
    fn cycles_are_bounded() {
        let l = layout();
        let mut m = FakeMemory::new();
        m.map(0x10000, vec![0; 0x1000]);
        m.write(0x10000 + l.sudog_next, &0x10100u64.to_le_bytes());
        m.write(0x10100 + l.sudog_next, &0x10000u64.to_le_bytes());
        assert_eq!(count_list(&m, 0x10000, l.sudog_next, 50), 50);
    }
}
