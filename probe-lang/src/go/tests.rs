//! Unit tests on synthesized runtime structures (FakeMemory) and no-panic property tests.

use super::{
    GStatus,
    goroutines::{Check, RawG, check_g, decode_g},
    layout::GLayout,
};
use crate::mem::{FakeMemory, Memory};

fn layout() -> GLayout {
    GLayout {
        stack_lo: 0,
        stack_hi: 8,
        m: 48,
        sched_sp: 56,
        sched_pc: 64,
        sched_bp: 96,
        syscallsp: 104,
        syscallpc: 112,
        syscallbp: Some(120),
        atomicstatus: 144,
        goid: 152,
        waitsince: 168,
        waitreason: 176,
        parent_goid: Some(280),
        gopc: 288,
        startpc: 304,
        waiting: Some(320),
        read_len: 328,
    }
}

fn g_bytes(l: &GLayout, status: u32, goid: u64, sp: u64) -> Vec<u8> {
    let mut b = vec![0u8; l.read_len as usize];
    let put = |b: &mut Vec<u8>, off: u64, v: u64| {
        b[off as usize..off as usize + 8].copy_from_slice(&v.to_le_bytes())
    };
    put(&mut b, l.stack_lo, 0xc000_1000);
    put(&mut b, l.stack_hi, 0xc000_2000);
    put(&mut b, l.sched_sp, sp);
    put(&mut b, l.sched_pc, 0x40_1000);
    put(&mut b, l.syscallsp, sp);
    put(&mut b, l.goid, goid);
    b[l.atomicstatus as usize..l.atomicstatus as usize + 4].copy_from_slice(&status.to_le_bytes());
    b[l.waitreason as usize] = 15;
    b
}

#[test]
fn status_decoding() {
    assert_eq!(GStatus::decode(4), Some(GStatus::Waiting));
    assert_eq!(
        GStatus::decode(0x1004),
        Some(GStatus::Waiting),
        "scan bit cleared"
    );
    assert_eq!(GStatus::decode(6), None, "dead");
    assert_eq!(GStatus::decode(0x1006), None);
    assert_eq!(GStatus::decode(11), None, "dead extra M (1.26+)");
    assert_eq!(GStatus::decode(10), Some(GStatus::Other(10)));
    assert_eq!(GStatus::Other(10).name(), "leaked");
    assert_eq!(GStatus::decode(9), Some(GStatus::Preempted));
    assert_eq!(GStatus::decode(3), Some(GStatus::Syscall));
}

#[test]
fn g_validation() {
    let l = layout();
    let ok = decode_g(&l, 0xc000_0000, &g_bytes(&l, 4, 7, 0xc000_1800));
    assert_eq!(ok.goid, 7);
    assert_eq!(ok.waitreason, 15);
    assert_eq!(check_g(&ok), Check::Live(GStatus::Waiting));
    let dead = decode_g(&l, 0, &g_bytes(&l, 6, 7, 0));
    assert_eq!(check_g(&dead), Check::Dead);
    let bad_sp = decode_g(&l, 0, &g_bytes(&l, 4, 7, 0xc000_3000));
    assert!(matches!(check_g(&bad_sp), Check::Invalid(_)));
    let no_goid = decode_g(&l, 0, &g_bytes(&l, 4, 0, 0xc000_1800));
    assert!(matches!(check_g(&no_goid), Check::Invalid(_)));
    let bad_status = decode_g(&l, 0, &g_bytes(&l, 0x7777, 7, 0xc000_1800));
    assert!(matches!(check_g(&bad_status), Check::Invalid(_)));
    let mut g = ok.clone();
    g.m = 0x1001;
    assert!(matches!(check_g(&g), Check::Invalid(_)), "misaligned m");
    let mut g = ok.clone();
    g.stack_lo = g.stack_hi;
    assert!(matches!(check_g(&g), Check::Invalid(_)));
    // a running g's saved sp is stale: not checked
    let running = decode_g(&l, 0, &g_bytes(&l, 2, 7, 0));
    assert_eq!(check_g(&running), Check::Live(GStatus::Running));
    // short input decodes to zeros, never panics
    let short = decode_g(&l, 0, &[1, 2, 3]);
    assert_eq!(short.goid, 0);
    assert!(matches!(check_g(&short), Check::Invalid(_)));
    let _ = RawG::default();
}

/// A memory that returns garbage for the first read of an address, then the real bytes
/// (a torn read of a g the target was changing).
struct Torn {
    inner: FakeMemory,
    torn: std::cell::RefCell<std::collections::HashSet<u64>>,
}

impl Memory for Torn {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), crate::mem::MemError> {
        self.inner.read(addr, buf)?;
        if self.torn.borrow_mut().insert(addr) && buf.len() > 64 {
            buf[152..160].copy_from_slice(&0u64.to_le_bytes()); // goid 0: invalid
        }
        Ok(())
    }
}

#[test]
fn torn_reads_are_read_again_and_failures_counted() {
    let l = layout();
    let mut m = FakeMemory::new();
    m.map(0xc000_0000, vec![0; 0x4000]);
    let gs = [0xc000_0000u64, 0xc000_0200, 0xc000_0400];
    for (i, &a) in gs.iter().enumerate() {
        m.write(a, &g_bytes(&l, 4, i as u64 + 1, 0xc000_1800));
    }
    let torn = Torn {
        inner: m,
        torn: Default::default(),
    };
    let mut buf = vec![0u8; gs.len() * l.read_len as usize];
    let ok = torn.read_many(&gs, l.read_len as usize, &mut buf);
    assert!(ok.iter().all(|&o| o));
    let first = decode_g(&l, gs[0], &buf[..l.read_len as usize]);
    assert!(
        matches!(check_g(&first), Check::Invalid(_)),
        "first read torn"
    );
    let mut one = vec![0u8; l.read_len as usize];
    torn.read(gs[0], &mut one).unwrap();
    assert_eq!(
        check_g(&decode_g(&l, gs[0], &one)),
        Check::Live(GStatus::Waiting)
    );
}

mod props {
    use proptest::prelude::*;

    use super::super::{binary::GoBinary, buildinfo, chan, goroutines, pclntab::Pclntab};
    use crate::mem::FakeMemory;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn garbage_pclntab_never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..2048), magic in 0usize..4, pcs in proptest::collection::vec(any::<u64>(), 1..16)) {
            if data.len() >= 8 {
                let m: [u8; 4] = [[0xfa, 0xff, 0xff, 0xff], [0xf0, 0xff, 0xff, 0xff], [0xf1, 0xff, 0xff, 0xff], [0xfb, 0xff, 0xff, 0xff]][magic];
                data[..4].copy_from_slice(&m);
                data[4..8].copy_from_slice(&[0, 0, 1, 8]);
            }
            if let Ok(t) = Pclntab::parse(data, Some(0x40_0000)) {
                for pc in pcs {
                    let read = |_: u64, _: usize| None;
                    let _ = t.frames(pc, Some(0x50_0000), &read);
                    if let Some(f) = t.find_func(pc) {
                        let _ = t.spdelta(&f, pc);
                        let _ = t.file_line(&f, pc);
                    }
                }
                let _ = t.func_by_name("runtime.goexit");
            }
        }

        #[test]
        fn garbage_buildinfo_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256), inline in any::<bool>()) {
            let mut b = b"\xff Go buildinf:".to_vec();
            b.push(8);
            b.push(if inline { 2 } else { 0 });
            b.extend_from_slice(&data);
            let _ = buildinfo::parse_header(&b, |_, l| if l < 64 { Some(vec![b'g'; l]) } else { None });
        }

        #[test]
        fn garbage_elf_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut d = data;
            if d.len() > 20 {
                d[..4].copy_from_slice(b"\x7fELF");
                d[4] = 2;
                d[5] = 1;
                d[18] = 62; // x86-64
            }
            let _ = GoBinary::parse(&d);
        }

        #[test]
        fn garbage_memory_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096), waiting in any::<u64>()) {
            let l = super::layout();
            let g = goroutines::decode_g(&l, 0x1000, &bytes);
            let _ = goroutines::check_g(&g);
            let mut m = FakeMemory::new();
            m.map(0x1000, bytes);
            let cl = super::super::layout::ChanLayout {
                sudog_c: 0x48, sudog_next: 8, sudog_waitlink: 0x30, sudog_is_select: None, sudog_len: 0x50,
                qcount: 0, dataqsiz: 8, closed: 0x1c, recvq_first: 0x30, sendq_first: 0x40, hchan_len: 0x48,
            };
            let mut cache = chan::ChanCache::default();
            let _ = chan::read_wait(&m, &cl, waiting & !7, super::super::ChanOp::Select, 100, &mut cache);
            let _ = chan::read_wait(&m, &cl, 0x1000 + (waiting % 64) * 8, super::super::ChanOp::Send, 100, &mut cache);
        }
    }
}
