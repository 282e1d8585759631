//! Where CPython keeps what we read, per minor version (x86_64, default build: no Py_DEBUG, no
//! free threading). Only the fields the reader needs. The numbers were taken with gdb from the
//! DWARF of pyenv's 3.8.18, 3.9.18, 3.10.13, 3.11.7, 3.12.1 and 3.13.0 builds
//! (`print &((struct _ts*)0)->native_thread_id` and so on); they are the same across patch
//! releases of one minor version as far as the reader's own checks (tstate→interp back pointers,
//! code object types) can tell. 3.13 also carries them in `_Py_DebugOffsets` at the start of
//! `_PyRuntime`, which [`Layout::from_debug_offsets`] reads and prefers.

use crate::mem::{MemError, Memory};

/// How a thread state reaches its innermost frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameLink {
    /// `tstate->frame` (3.8–3.10) or `tstate->current_frame` (3.13+).
    Direct(u64),
    /// `tstate->cframe->current_frame` (3.11, 3.12).
    ViaCFrame { cframe: u64, current_frame: u64 },
}

/// The frame structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameLayout {
    /// `PyFrameObject` (3.8–3.10): one per `_PyEval_EvalFrameDefault` call.
    Object {
        back: u64,
        code: u64,
        lasti: u64,
        /// 3.10 counts `f_lasti` in 2-byte code units, 3.8/3.9 in bytes.
        lasti_in_units: bool,
    },
    /// `_PyInterpreterFrame` (3.11+): several per `_PyEval_EvalFrameDefault` call.
    Interpreter {
        previous: u64,
        /// `f_code` (3.11, 3.12) or `f_executable` (3.13).
        code: u64,
        /// `prev_instr` (3.11, 3.12) or `instr_ptr` (3.13): both give the instruction the
        /// frame is at when it is suspended in a call.
        instr: u64,
        /// `is_entry` (3.11 only).
        is_entry: Option<u64>,
        /// `owner` (3.12+: `FRAME_OWNED_BY_CSTACK` marks the shim an eval loop pushes).
        owner: Option<u64>,
    },
}

/// Which line table a code object has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineTableKind {
    /// `co_lnotab` (≤ 3.9).
    Lnotab,
    /// `co_linetable` of 3.10.
    Linetable310,
    /// The location table of 3.11+.
    Locations,
}

/// Where the GIL state lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GilLink {
    /// `_PyRuntime.ceval.gil` (3.8–3.11): offsets of `last_holder` and `locked` in `_PyRuntime`.
    Runtime { last_holder: u64, locked: u64 },
    /// `interp->ceval.gil` is a pointer to a `_gil_runtime_state` (3.12+).
    Interp {
        gil_ptr: u64,
        last_holder: u64,
        locked: u64,
    },
}

/// `FRAME_OWNED_BY_CSTACK` in 3.12 and 3.13.
pub const FRAME_OWNED_BY_CSTACK: u8 = 3;

/// Offsets for one minor version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub minor: u32,
    /// `_PyRuntime.interpreters.head`.
    pub runtime_interpreters_head: u64,
    pub gil: GilLink,
    pub interp_next: u64,
    pub interp_threads_head: u64,
    pub ts_next: u64,
    pub ts_interp: u64,
    pub ts_frame: FrameLink,
    /// `pthread_t` of the thread.
    pub ts_thread_id: u64,
    /// `native_thread_id` (3.11+); before that the tid is read from glibc's `struct pthread`.
    pub ts_native_thread_id: Option<u64>,
    pub frame: FrameLayout,
    pub co_filename: u64,
    pub co_name: u64,
    pub co_qualname: Option<u64>,
    pub co_firstlineno: u64,
    pub co_linetable: u64,
    /// `co_code_adaptive` (3.11+): the instructions, inline in the code object.
    pub co_code_adaptive: Option<u64>,
    pub line_table: LineTableKind,
    /// `sizeof(PyASCIIObject)`: where a compact ASCII string's characters start.
    pub ascii_size: u64,
    /// `sizeof(PyCompactUnicodeObject)`: where other compact strings' characters start.
    pub compact_size: u64,
}

/// `PyObject.ob_type`, `PyVarObject.ob_size`, `PyBytesObject.ob_sval`, `PyASCIIObject.length`
/// and `.state`: the same in every supported version.
pub const OB_TYPE: u64 = 8;
pub const OB_SIZE: u64 = 16;
pub const BYTES_SVAL: u64 = 32;
pub const STR_LENGTH: u64 = 16;
pub const STR_STATE: u64 = 32;

/// The layout of CPython 3.`minor`, or None for versions this reader does not know.
pub fn for_minor(minor: u32) -> Option<Layout> {
    let old_frame = |lasti, lasti_in_units| FrameLayout::Object {
        back: 24,
        code: 32,
        lasti,
        lasti_in_units,
    };
    let runtime_gil = |last_holder, locked| GilLink::Runtime {
        last_holder,
        locked,
    };
    let base_old = Layout {
        minor,
        runtime_interpreters_head: 32,
        gil: runtime_gil(360, 368),
        interp_next: 0,
        interp_threads_head: 8,
        ts_next: 8,
        ts_interp: 16,
        ts_frame: FrameLink::Direct(24),
        ts_thread_id: 176,
        ts_native_thread_id: None,
        frame: old_frame(104, false),
        co_filename: 104,
        co_name: 112,
        co_qualname: None,
        co_firstlineno: 40,
        co_linetable: 120,
        co_code_adaptive: None,
        line_table: LineTableKind::Lnotab,
        ascii_size: 48,
        compact_size: 72,
    };
    Some(match minor {
        8 => Layout {
            gil: runtime_gil(1160, 1168),
            ..base_old
        },
        9 => base_old,
        10 => Layout {
            frame: old_frame(96, true),
            line_table: LineTableKind::Linetable310,
            ..base_old
        },
        11 => Layout {
            runtime_interpreters_head: 40,
            gil: runtime_gil(368, 376),
            interp_threads_head: 16,
            ts_frame: FrameLink::ViaCFrame {
                cframe: 56,
                current_frame: 8,
            },
            ts_thread_id: 152,
            ts_native_thread_id: Some(160),
            frame: FrameLayout::Interpreter {
                previous: 48,
                code: 32,
                instr: 56,
                is_entry: Some(68),
                owner: None,
            },
            co_filename: 112,
            co_name: 120,
            co_qualname: Some(128),
            co_firstlineno: 72,
            co_linetable: 136,
            co_code_adaptive: Some(184),
            line_table: LineTableKind::Locations,
            ..base_old
        },
        12 => Layout {
            runtime_interpreters_head: 40,
            gil: GilLink::Interp {
                gil_ptr: 384,
                last_holder: 8,
                locked: 16,
            },
            interp_threads_head: 72,
            ts_frame: FrameLink::ViaCFrame {
                cframe: 56,
                current_frame: 0,
            },
            ts_thread_id: 136,
            ts_native_thread_id: Some(144),
            frame: FrameLayout::Interpreter {
                previous: 8,
                code: 0,
                instr: 56,
                is_entry: None,
                owner: Some(70),
            },
            co_filename: 112,
            co_name: 120,
            co_qualname: Some(128),
            co_firstlineno: 68,
            co_linetable: 136,
            co_code_adaptive: Some(192),
            line_table: LineTableKind::Locations,
            ascii_size: 40,
            compact_size: 56,
            ..base_old
        },
        13 => Layout {
            runtime_interpreters_head: 632,
            gil: GilLink::Interp {
                gil_ptr: 16,
                last_holder: 8,
                locked: 16,
            },
            interp_next: 7264,
            interp_threads_head: 7344,
            ts_frame: FrameLink::Direct(72),
            ts_thread_id: 152,
            ts_native_thread_id: Some(160),
            frame: FrameLayout::Interpreter {
                previous: 8,
                code: 0,
                instr: 56,
                is_entry: None,
                owner: Some(70),
            },
            co_filename: 112,
            co_name: 120,
            co_qualname: Some(128),
            co_firstlineno: 68,
            co_linetable: 136,
            co_code_adaptive: Some(200),
            line_table: LineTableKind::Locations,
            ascii_size: 40,
            compact_size: 56,
            ..base_old
        },
        _ => return None,
    })
}

/// The cookie `_Py_DebugOffsets` starts with (3.13+).
pub const DEBUG_COOKIE: &[u8; 8] = b"xdebugpy";

/// Size of the 3.13 `_Py_DebugOffsets` (584 bytes); what we read of it.
const DEBUG_OFFSETS_313_LEN: usize = 584;

/// What `_Py_DebugOffsets` at `runtime` says, if it is there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DebugOffsets {
    /// No cookie: a version before 3.13 (or not `_PyRuntime`).
    Absent,
    /// Cookie and version (PY_VERSION_HEX) but a layout of the offsets this reader does not know.
    UnknownVersion(u64),
    Found {
        version_hex: u64,
        layout: Box<Layout>,
    },
}

impl Layout {
    /// Read `_Py_DebugOffsets` at the start of `_PyRuntime` (3.13's layout of it).
    pub fn from_debug_offsets(mem: &dyn Memory, runtime: u64) -> Result<DebugOffsets, MemError> {
        let mut cookie = [0u8; 8];
        mem.read(runtime, &mut cookie)?;
        if &cookie != DEBUG_COOKIE {
            return Ok(DebugOffsets::Absent);
        }
        let raw = mem.read_vec(runtime, DEBUG_OFFSETS_313_LEN, DEBUG_OFFSETS_313_LEN)?;
        let q = |off: usize| u64::from_le_bytes(raw[off..off + 8].try_into().unwrap_or([0; 8]));
        let version_hex = q(8);
        let (major, minor) = ((version_hex >> 24) & 0xff, (version_hex >> 16) & 0xff);
        if major != 3 || minor != 13 || q(16) != 0 {
            // 3.14 reorders the offsets; free-threaded builds have other structs.
            return Ok(DebugOffsets::UnknownVersion(version_hex));
        }
        let Some(base) = for_minor(13) else {
            return Ok(DebugOffsets::UnknownVersion(version_hex));
        };
        let gil_state = q(120);
        let layout = Layout {
            runtime_interpreters_head: q(40),
            interp_next: q(64),
            interp_threads_head: q(72),
            gil: GilLink::Interp {
                gil_ptr: q(112),
                last_holder: q(144).wrapping_sub(gil_state),
                locked: q(136).wrapping_sub(gil_state),
            },
            ts_next: q(168),
            ts_interp: q(176),
            ts_frame: FrameLink::Direct(q(184)),
            ts_thread_id: q(192),
            ts_native_thread_id: Some(q(200)),
            frame: FrameLayout::Interpreter {
                previous: q(232),
                code: q(240),
                instr: q(248),
                is_entry: None,
                owner: Some(q(264)),
            },
            co_filename: q(280),
            co_name: q(288),
            co_qualname: Some(q(296)),
            co_linetable: q(304),
            co_firstlineno: q(312),
            co_code_adaptive: Some(q(344)),
            ascii_size: q(560),
            ..base
        };
        // Garbage offsets must not send the reader far away: every field sits inside its struct.
        let sane = [
            layout.runtime_interpreters_head,
            layout.interp_next,
            layout.interp_threads_head,
            layout.ts_next,
            layout.ts_interp,
            q(184),
            layout.co_filename,
            layout.co_code_adaptive.unwrap_or(0),
            layout.ascii_size,
        ]
        .iter()
        .all(|&o| o < 1 << 20);
        if !sane {
            return Ok(DebugOffsets::UnknownVersion(version_hex));
        }
        Ok(DebugOffsets::Found {
            version_hex,
            layout: Box::new(layout),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::FakeMemory;

    #[test]
    fn known_versions_only() {
        for m in 8..=13 {
            assert_eq!(for_minor(m).unwrap().minor, m);
        }
        assert!(for_minor(7).is_none());
        assert!(for_minor(14).is_none());
    }

    /// The 3.13.0 `_Py_DebugOffsets` as the pyenv build has it in `.data` (first 584 bytes,
    /// as u64s): the offsets read from it equal the table's.
    #[test]
    fn debug_offsets_313_match_the_table() {
        #[rustfmt::skip]
        let words: [u64; 73] = [8750607829840520312, 51183856, 0, 283320, 608, 632, 194968, 7272, 7264, 7344, 7400, 7656, 7640, 7648, 16, 7752, 0, 7768, 7760, 304, 0, 8, 16, 72, 152, 160, 232, 32, 80, 8, 0, 56, 72, 70, 208, 112, 120, 128, 136, 68, 52, 96, 104, 200, 16, 8, 416, 24, 88, 168, 32, 24, 16, 40, 24, 16, 48, 32, 40, 24, 16, 32, 16, 24, 40, 16, 32, 64, 32, 16, 40, 240, 200];
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut m = FakeMemory::new();
        m.map(0x1000, bytes);
        let DebugOffsets::Found {
            version_hex,
            layout,
        } = Layout::from_debug_offsets(&m, 0x1000).unwrap()
        else {
            panic!("not found")
        };
        assert_eq!(version_hex, 0x030d_00f0);
        assert_eq!(*layout, for_minor(13).unwrap());
    }

    #[test]
    fn no_cookie_is_absent() {
        let mut m = FakeMemory::new();
        m.map(0x1000, vec![0; 4096]);
        assert_eq!(
            Layout::from_debug_offsets(&m, 0x1000).unwrap(),
            DebugOffsets::Absent
        );
    }
}
