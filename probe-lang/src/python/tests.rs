//! The reader on synthesized interpreter states (3.9, 3.10, 3.11, 3.12, 3.13 layouts) in a
//! FakeMemory, and on garbage.

use super::layout::{FrameLayout, FrameLink, GilLink, LineTableKind, OB_SIZE, OB_TYPE};
use super::*;
use crate::mem::FakeMemory;
use proptest::prelude::*;

const CODE_TYPE: u64 = 0x7000_0000;
const STR_TYPE: u64 = 0x7000_1000;
const BYTES_TYPE: u64 = 0x7000_2000;
const RUNTIME: u64 = 0x1000_0000;

struct Fake {
    mem: FakeMemory,
    next: u64,
    l: Layout,
    /// Allocation granularity (a page; 16 for [`Fake::flat`]).
    align: u64,
}

impl Fake {
    fn new(minor: u32) -> Fake {
        let l = layout::for_minor(minor).unwrap();
        let mut f = Fake {
            mem: FakeMemory::new(),
            next: 0x2000_0000,
            l,
            align: 0x1000,
        };
        f.mem.map(RUNTIME, vec![0; 4096]);
        f
    }

    /// Everything allocated right after `_PyRuntime`, without gaps: [`Fake::bytes_from_runtime`]
    /// is then the whole address space as one blob.
    fn flat(minor: u32) -> Fake {
        let mut f = Fake::new(minor);
        f.next = RUNTIME + 4096;
        f.align = 16;
        f
    }

    fn alloc(&mut self, size: usize) -> u64 {
        let a = self.next;
        let size = (size as u64 + self.align - 1) & !(self.align - 1);
        self.mem.map(a, vec![0; size as usize]);
        self.next += size;
        a
    }

    /// The memory from `_PyRuntime` to the last allocation (for a [`Fake::flat`] one).
    fn bytes_from_runtime(&self) -> Vec<u8> {
        let mut out = vec![0u8; (self.next - RUNTIME) as usize];
        let mut at = RUNTIME;
        while at < self.next {
            let mut b = [0u8; 16];
            self.mem.read(at, &mut b).unwrap();
            out[(at - RUNTIME) as usize..][..16].copy_from_slice(&b);
            at += 16;
        }
        out
    }

    fn w64(&mut self, addr: u64, v: u64) {
        self.mem.write(addr, &v.to_le_bytes());
    }

    fn w32(&mut self, addr: u64, v: u32) {
        self.mem.write(addr, &v.to_le_bytes());
    }

    fn str(&mut self, s: &str) -> u64 {
        let chars: Vec<u32> = s.chars().map(u32::from).collect();
        let max = chars.iter().copied().max().unwrap_or(0);
        let (kind, ascii, hdr) = match max {
            0..=0x7f => (1, 1, self.l.ascii_size),
            0x80..=0xff => (1, 0, self.l.compact_size),
            0x100..=0xffff => (2, 0, self.l.compact_size),
            _ => (4, 0, self.l.compact_size),
        };
        let a = self.alloc(hdr as usize + (chars.len() + 1) * kind);
        self.w64(a + OB_TYPE, STR_TYPE);
        self.w64(a + 16, chars.len() as u64);
        self.w32(a + 32, (kind as u32) << 2 | 1 << 5 | ascii << 6);
        for (i, c) in chars.iter().enumerate() {
            let at = a + hdr + (i * kind) as u64;
            self.mem.write(at, &c.to_le_bytes()[..kind]);
        }
        a
    }

    fn bytes(&mut self, b: &[u8]) -> u64 {
        let a = self.alloc(32 + b.len() + 1);
        self.w64(a + OB_TYPE, BYTES_TYPE);
        self.w64(a + OB_SIZE, b.len() as u64);
        self.mem.write(a + 32, b);
        a
    }

    /// A code object whose every instruction is on line `first + 3`.
    fn code(&mut self, name: &str, file: &str, first: u32) -> u64 {
        let table: Vec<u8> = match self.l.line_table {
            LineTableKind::Lnotab => vec![0, 3],
            LineTableKind::Linetable310 => vec![64, 3],
            // code 13 (no columns), 8 units, line delta +3 (svarint 6)
            LineTableKind::Locations => vec![0x80 | 13 << 3 | 7, 6],
        };
        let (n, f, t) = (self.str(name), self.str(file), self.bytes(&table));
        let q = self.str(&format!("Cls.{name}"));
        let a = self.alloc(512);
        self.w64(a + OB_TYPE, CODE_TYPE);
        self.w64(a + self.l.co_name, n);
        if let Some(off) = self.l.co_qualname {
            self.w64(a + off, q);
        }
        self.w64(a + self.l.co_filename, f);
        self.w32(a + self.l.co_firstlineno, first);
        self.w64(a + self.l.co_linetable, t);
        a
    }

    /// Push frames (innermost first) of `(code, entry)`; returns the innermost frame pointer.
    fn frames(&mut self, codes: &[(u64, bool)]) -> u64 {
        let mut outer = 0;
        for &(code, entry) in codes.iter().rev() {
            let fr = self.alloc(128);
            match self.l.frame {
                FrameLayout::Object {
                    back,
                    code: c,
                    lasti,
                    lasti_in_units,
                } => {
                    self.w64(fr + back, outer);
                    self.w64(fr + c, code);
                    self.w32(fr + lasti, if lasti_in_units { 2 } else { 4 });
                }
                FrameLayout::Interpreter {
                    previous,
                    code: c,
                    instr,
                    is_entry,
                    owner,
                } => {
                    let mut prev = outer;
                    if let (true, Some(owner)) = (entry, owner) {
                        // 3.12+: the eval loop's shim sits below an entry frame.
                        let shim = self.alloc(128);
                        self.w64(shim + previous, outer);
                        self.mem
                            .write(shim + owner, &[layout::FRAME_OWNED_BY_CSTACK]);
                        prev = shim;
                    }
                    self.w64(fr + previous, prev);
                    self.w64(fr + c, code);
                    self.w64(fr + instr, code + self.l.co_code_adaptive.unwrap() + 4);
                    if let Some(off) = is_entry {
                        self.mem.write(fr + off, &[entry as u8]);
                    }
                }
            }
            outer = fr;
        }
        outer
    }

    fn tstate(&mut self, interp: u64, tid: u32, frame: u64) -> u64 {
        let ts = self.alloc(512);
        self.w64(ts + self.l.ts_interp, interp);
        match self.l.ts_native_thread_id {
            Some(off) => self.w64(ts + off, tid.into()),
            None => {
                let pthread = self.alloc(0x400);
                self.w32(pthread + DEFAULT_PTHREAD_TID_OFFSET, tid);
                self.w64(ts + self.l.ts_thread_id, pthread);
            }
        }
        match self.l.ts_frame {
            FrameLink::Direct(off) => self.w64(ts + off, frame),
            FrameLink::ViaCFrame {
                cframe,
                current_frame,
            } => {
                let c = self.alloc(64);
                self.w64(c + current_frame, frame);
                self.w64(ts + cframe, c);
            }
        }
        ts
    }

    fn process(&self, minor: u32) -> PyProcess {
        PyProcess {
            module: "/usr/lib/libpython3.so".into(),
            version: format!("3.{minor}.0"),
            minor,
            runtime: RUNTIME,
            code_type: Some(CODE_TYPE),
            unicode_type: Some(STR_TYPE),
            bytes_type: Some(BYTES_TYPE),
            pthread_tid_offset: DEFAULT_PTHREAD_TID_OFFSET,
            layout: self.l,
            notes: vec![],
        }
    }
}

/// An interpreter with a worker (tid 101: wait() in threading.py called from run() in
/// app.py, holding the GIL) and an idle thread state (tid 102), then a main thread (tid 100).
fn scenario(minor: u32) -> (Fake, u64) {
    scenario_in(Fake::new(minor))
}

fn scenario_in(mut f: Fake) -> (Fake, u64) {
    let interp = f.alloc(8192);
    f.w64(RUNTIME + f.l.runtime_interpreters_head, interp);
    let wait = f.code("wait", "/usr/lib/python3/threading.py", 300);
    let run = f.code("run", "app.py", 10);
    let main = f.code("<module>", "app.py", 1);
    let top = f.frames(&[(wait, false), (run, true)]);
    let t1 = f.tstate(interp, 101, top);
    let t2 = f.tstate(interp, 102, 0);
    let mtop = f.frames(&[(main, true)]);
    let t0 = f.tstate(interp, 100, mtop);
    f.w64(interp + f.l.interp_threads_head, t1);
    f.w64(t1 + f.l.ts_next, t2);
    f.w64(t2 + f.l.ts_next, t0);
    match f.l.gil {
        GilLink::Runtime {
            last_holder,
            locked,
        } => {
            f.w64(RUNTIME + last_holder, t1);
            f.w32(RUNTIME + locked, 1);
        }
        GilLink::Interp {
            gil_ptr,
            last_holder,
            locked,
        } => {
            let g = f.alloc(256);
            f.w64(interp + gil_ptr, g);
            f.w64(g + last_holder, t1);
            f.w32(g + locked, 1);
        }
    }
    (f, interp)
}

fn check(minor: u32) {
    let (f, _) = scenario(minor);
    let s = f.process(minor).threads(&f.mem).unwrap();
    let tids: Vec<_> = s.threads.iter().map(|t| t.tid).collect();
    assert_eq!(tids, [Some(101), Some(102), Some(100)], "3.{minor}");
    let w = s.thread(101).unwrap();
    let qual = |n: &str| {
        if minor >= 11 {
            format!("Cls.{n}")
        } else {
            n.to_string()
        }
    };
    let want = [
        PyFrame {
            function: qual("wait"),
            file: "/usr/lib/python3/threading.py".into(),
            line: Some(303),
            entry: minor < 11,
        },
        PyFrame {
            function: qual("run"),
            file: "app.py".into(),
            line: Some(13),
            entry: true,
        },
    ];
    assert_eq!(w.frames, want, "3.{minor}");
    assert_eq!(w.incomplete, None);
    let idle = s.thread(102).unwrap();
    assert!(idle.frames.is_empty());
    assert!(idle.why_empty.as_ref().unwrap().contains("holds no frame"));
    assert_eq!(s.thread(100).unwrap().frames[0].function, qual("<module>"));
    assert_eq!(s.gil_holder, Some(101), "3.{minor}");
    assert!(
        s.why_no_frames(999)
            .unwrap()
            .starts_with("not a Python thread")
    );
    assert!(s.why_no_frames(101).is_none());
    assert!(
        s.notes.iter().any(|n| n.starts_with("layout: ")),
        "{:?}",
        s.notes
    );
}

#[test]
fn reads_39_frames() {
    check(9);
}

#[test]
fn reads_310_frames() {
    check(10);
}

#[test]
fn reads_311_frames() {
    check(11);
}

#[test]
fn reads_312_frames_and_skips_shims() {
    check(12);
}

#[test]
fn reads_313_frames_with_the_table_when_there_is_no_cookie() {
    check(13);
}

#[test]
fn free_gil_and_foreign_holder() {
    let (mut f, _) = scenario(11);
    let GilLink::Runtime { locked, .. } = f.l.gil else {
        unreachable!()
    };
    f.w32(RUNTIME + locked, 0);
    let s = f.process(11).threads(&f.mem).unwrap();
    assert_eq!(s.gil, Gil::Free);
    assert_eq!(s.gil_holder, None);
}

#[test]
fn wrong_layout_is_an_error_not_garbage() {
    let (mut f, _) = scenario(12);
    // Read a 3.12 process with the 3.11 table: the thread state does not point back.
    f.l = layout::for_minor(11).unwrap();
    let mut p = f.process(11);
    p.layout = f.l;
    match p.threads(&f.mem) {
        Err(PyError::Inconsistent(_)) | Err(PyError::Unreadable(_)) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_looping_frame_list_is_cut_with_a_reason() {
    let (mut f, _) = scenario(10);
    let s = f.process(10).threads(&f.mem).unwrap();
    let w = s.thread(101).unwrap().clone();
    // Make the outer frame's f_back point at the inner frame.
    let FrameLink::Direct(off) = f.l.ts_frame else {
        unreachable!()
    };
    let inner = f.mem.read_u64(w.tstate + off).unwrap();
    let FrameLayout::Object { back, .. } = f.l.frame else {
        unreachable!()
    };
    let outer = f.mem.read_u64(inner + back).unwrap();
    f.w64(outer + back, inner);
    let s = f.process(10).threads(&f.mem).unwrap();
    let w = s.thread(101).unwrap();
    assert_eq!(w.frames.len(), 2);
    assert!(w.incomplete.as_ref().unwrap().contains("loops"));
}

#[test]
fn a_frame_whose_code_is_not_code_ends_the_walk() {
    let (mut f, _) = scenario(11);
    let s = f.process(11).threads(&f.mem).unwrap();
    let w = s.thread(101).unwrap();
    let FrameLink::ViaCFrame {
        cframe,
        current_frame,
    } = f.l.ts_frame
    else {
        unreachable!()
    };
    let c = f.mem.read_u64(w.tstate + cframe).unwrap();
    let inner = f.mem.read_u64(c + current_frame).unwrap();
    let FrameLayout::Interpreter { code, .. } = f.l.frame else {
        unreachable!()
    };
    let bogus = f.str("not code");
    f.w64(inner + code, bogus);
    let s = f.process(11).threads(&f.mem).unwrap();
    let w = s.thread(101).unwrap();
    assert!(w.frames.is_empty());
    assert!(
        w.why_empty
            .as_ref()
            .unwrap()
            .contains("is not a code object")
    );
}

#[test]
fn strings_of_every_kind() {
    let (mut f, _) = scenario(12);
    let s = f.process(12);
    for text in ["plain", "café", "Ωmega", "𝔘nicode"] {
        let a = f.str(text);
        let w = read::test_string(&s, &f.mem, a).unwrap();
        assert_eq!(w, text);
    }
    let long = "x".repeat(5000);
    let a = f.str(&long);
    let w = read::test_string(&s, &f.mem, a).unwrap();
    assert_eq!(w.chars().count(), 1025, "capped, with an ellipsis");
}

#[test]
fn no_interpreter_yet() {
    let f = Fake::new(11);
    assert!(matches!(
        f.process(11).threads(&f.mem),
        Err(PyError::Inconsistent(_))
    ));
}

#[test]
fn unknown_versions_are_refused_with_a_reason() {
    let facts = locate::ModuleFacts {
        runtime: Some(0x1000),
        version_hex: Some(0x030e_00f0),
        ..Default::default()
    };
    let e = PyProcess::from_facts(Path::new("/usr/lib/libpython3.14.so"), facts, 0).unwrap_err();
    assert!(e.to_string().contains("3.14.0"), "{e}");
    let facts = locate::ModuleFacts {
        runtime: Some(0x1000),
        ..Default::default()
    };
    let e = PyProcess::from_facts(Path::new("/usr/bin/uwsgi"), facts, 0).unwrap_err();
    assert!(matches!(e, PyError::UnknownVersion(_)));
}

#[test]
fn version_text() {
    assert_eq!(version_text_from_hex(0x030b_07f0), "3.11.7");
    assert_eq!(version_text_from_hex(0x030d_00c2), "3.13.0rc2");
}

/// The same scenarios as one blob each, as the `python_layout` fuzz target reads its input
/// (byte 0: minor - 8, byte 1: no type checks, then the memory at `_PyRuntime`). Run with
/// `STALLPROBE_WRITE_CORPUS=1 cargo test -p probe-lang write_python_seeds -- --ignored`.
#[test]
#[ignore]
fn write_python_seeds() {
    if std::env::var_os("STALLPROBE_WRITE_CORPUS").is_none() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/python_layout");
    std::fs::create_dir_all(&dir).unwrap();
    for minor in [9, 10, 11, 12, 13] {
        let (f, _) = scenario_in(Fake::flat(minor));
        let p = f.process(minor);
        let s = p.threads(&f.mem).unwrap();
        assert_eq!(s.thread(101).unwrap().frames.len(), 2, "3.{minor}");
        let mut blob = vec![(minor - 8) as u8, 0];
        blob.extend(f.bytes_from_runtime());
        std::fs::write(dir.join(format!("cpython-3.{minor}")), blob).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Memory full of pointers into itself and small numbers: the reader ends, with or
    /// without a snapshot, and never panics.
    #[test]
    fn garbage_never_panics(minor in 8u32..=13, words in proptest::collection::vec(
        prop_oneof![any::<u64>(), (0u64..2048).prop_map(|i| RUNTIME + i * 8), 0u64..64], 1024)) {
        let mut words = words;
        if minor == 13 && words[1] % 2 == 0 {
            // _Py_DebugOffsets with garbage offsets.
            words[0] = u64::from_le_bytes(*layout::DEBUG_COOKIE);
            words[1] = 0x030d_00f0;
            words[2] = 0;
        }
        let mut mem = FakeMemory::new();
        mem.map(RUNTIME, words.iter().flat_map(|w| w.to_le_bytes()).collect());
        let l = layout::for_minor(minor).unwrap();
        let p = PyProcess {
            module: "/x".into(), version: String::new(), minor, runtime: RUNTIME,
            code_type: None, unicode_type: None, bytes_type: None,
            pthread_tid_offset: DEFAULT_PTHREAD_TID_OFFSET, layout: l, notes: vec![],
        };
        let _ = p.threads(&mem);
    }
}
