//! Field offsets of the runtime structs the reader needs, from DWARF or the type descriptors
//! (same code for both: both give [`StructDesc`]s). Missing optional fields degrade features
//! with a note; missing essential ones make the layout unusable, with the reason.

use super::types::{FieldDesc, KIND_STRUCT, MAX_FIELD_OFFSET, StructDesc};

/// Where the struct descriptions come from.
pub(crate) trait Structs {
    /// The struct named `name` ("runtime.g").
    fn named(&self, name: &str) -> Option<StructDesc>;
    /// The struct type of `field` (for structs only reachable through a field).
    fn of_field(&self, field: &FieldDesc) -> Option<StructDesc>;
    fn source(&self) -> &'static str;
}

/// runtime.g offsets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct GLayout {
    pub stack_lo: u64,
    pub stack_hi: u64,
    pub m: u64,
    pub sched_sp: u64,
    pub sched_pc: u64,
    pub sched_bp: u64,
    pub syscallsp: u64,
    pub syscallpc: u64,
    /// Go 1.23+.
    pub syscallbp: Option<u64>,
    pub atomicstatus: u64,
    pub goid: u64,
    pub waitsince: u64,
    pub waitreason: u64,
    /// Go 1.21+.
    pub parent_goid: Option<u64>,
    pub gopc: u64,
    pub startpc: u64,
    pub waiting: Option<u64>,
    /// Bytes to read from the start of a g to have every field above.
    pub read_len: u64,
}

/// sudog/hchan/waitq offsets, for channel details.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ChanLayout {
    /// Offset of the channel pointer in a sudog (inside `c`, which is a struct from 1.26).
    pub sudog_c: u64,
    pub sudog_next: u64,
    pub sudog_waitlink: u64,
    pub sudog_is_select: Option<u64>,
    pub sudog_len: u64,
    pub qcount: u64,
    pub dataqsiz: u64,
    pub closed: u64,
    pub recvq_first: u64,
    pub sendq_first: u64,
    pub hchan_len: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Layout {
    pub g: GLayout,
    /// m.procid, the OS thread id.
    pub m_procid: Option<u64>,
    pub chan: Option<ChanLayout>,
    pub source: &'static str,
    /// What degraded, and why.
    pub notes: Vec<String>,
}

fn off(s: &StructDesc, name: &str) -> Result<u64, String> {
    s.field(name)
        .map(|f| f.offset)
        .ok_or_else(|| format!("{} has no field {name}", s.name))
}

/// The offset of the pointer value held by field `name`: the field itself when it is a
/// pointer, or the `vu` word inside Go 1.26's maybeTraceable wrappers.
fn pointer_in(structs: &dyn Structs, s: &StructDesc, name: &str) -> Result<u64, String> {
    let f = s
        .field(name)
        .ok_or_else(|| format!("{} has no field {name}", s.name))?;
    if f.kind != KIND_STRUCT {
        return Ok(f.offset);
    }
    let mut inner = structs
        .of_field(f)
        .ok_or_else(|| format!("{}.{name}: cannot read its struct type", s.name))?;
    let mut at = f.offset;
    let too_far = || format!("{}.{name}: offset out of range", s.name);
    for _ in 0..4 {
        if let Some(vu) = inner.field("vu") {
            return at.checked_add(vu.offset).ok_or_else(too_far);
        }
        let first = inner
            .fields
            .first()
            .cloned()
            .ok_or_else(|| format!("{}.{name}: empty wrapper", s.name))?;
        if first.kind != KIND_STRUCT {
            break;
        }
        at = at
            .checked_add(first.offset)
            .filter(|&a| a <= MAX_FIELD_OFFSET)
            .ok_or_else(too_far)?;
        inner = structs
            .of_field(&first)
            .ok_or_else(|| format!("{}.{name}: cannot read its struct type", s.name))?;
    }
    Err(format!("{}.{name}: no pointer inside", s.name))
}

fn nested(
    structs: &dyn Structs,
    s: &StructDesc,
    field: &str,
    name: &str,
) -> Result<StructDesc, String> {
    if let Some(f) = s.field(field)
        && let Some(d) = structs.of_field(f)
    {
        return Ok(d);
    }
    structs
        .named(name)
        .ok_or_else(|| format!("cannot find {name} ({}.{field})", s.name))
}

pub(crate) fn build(structs: &dyn Structs) -> Result<Layout, String> {
    let g = structs
        .named("runtime.g")
        .ok_or_else(|| format!("runtime.g not found in the {}", structs.source()))?;
    let stack = nested(structs, &g, "stack", "runtime.stack")?;
    let gobuf = nested(structs, &g, "sched", "runtime.gobuf")?;
    let sched = off(&g, "sched")?;
    let stk = off(&g, "stack")?;
    let opt = |n: &str| g.field(n).map(|f| f.offset);
    let mut gl = GLayout {
        stack_lo: stk + off(&stack, "lo")?,
        stack_hi: stk + off(&stack, "hi")?,
        m: off(&g, "m")?,
        sched_sp: sched + off(&gobuf, "sp")?,
        sched_pc: sched + off(&gobuf, "pc")?,
        sched_bp: sched + off(&gobuf, "bp")?,
        syscallsp: off(&g, "syscallsp")?,
        syscallpc: off(&g, "syscallpc")?,
        syscallbp: opt("syscallbp"),
        atomicstatus: off(&g, "atomicstatus")?,
        goid: off(&g, "goid")?,
        waitsince: off(&g, "waitsince")?,
        waitreason: off(&g, "waitreason")?,
        parent_goid: opt("parentGoid"),
        gopc: off(&g, "gopc")?,
        startpc: off(&g, "startpc")?,
        waiting: opt("waiting"),
        read_len: 0,
    };
    let last = [
        gl.stack_hi,
        gl.m,
        gl.sched_bp,
        gl.syscallsp,
        gl.syscallpc,
        gl.atomicstatus,
        gl.goid,
        gl.waitsince,
        gl.waitreason,
        gl.gopc,
        gl.startpc,
    ]
    .into_iter()
    .chain(gl.syscallbp)
    .chain(gl.parent_goid)
    .chain(gl.waiting)
    .max()
    .unwrap_or(0);
    gl.read_len = (last + 8).min(g.size.max(last + 8));
    if gl.read_len > 4096 {
        return Err(format!(
            "runtime.g fields past 4 KiB ({} bytes)",
            gl.read_len
        ));
    }
    let mut notes = Vec::new();
    let m_procid = match nested(structs, &g, "m", "runtime.m")
        .ok()
        .or_else(|| structs.named("runtime.m"))
        .and_then(|m| m.field("procid").map(|f| f.offset))
    {
        Some(o) => Some(o),
        None => {
            notes
                .push("runtime.m.procid not found: goroutines are not mapped to OS threads".into());
            None
        }
    };
    let chan = match chan_layout(structs, &g) {
        Ok(c) => Some(c),
        Err(why) => {
            notes.push(format!("no channel details: {why}"));
            None
        }
    };
    Ok(Layout {
        g: gl,
        m_procid,
        chan,
        source: structs.source(),
        notes,
    })
}

fn chan_layout(structs: &dyn Structs, g: &StructDesc) -> Result<ChanLayout, String> {
    if g.field("waiting").is_none() {
        return Err("runtime.g has no field waiting".into());
    }
    let sudog = nested(structs, g, "waiting", "runtime.sudog")?;
    let hchan = match structs.named("runtime.hchan") {
        Some(h) => h,
        None => nested(structs, &sudog, "c", "runtime.hchan")?,
    };
    let waitq = nested(structs, &hchan, "recvq", "runtime.waitq")?;
    let first = off(&waitq, "first")?;
    let mut c = ChanLayout {
        sudog_c: pointer_in(structs, &sudog, "c")?,
        sudog_next: off(&sudog, "next")?,
        sudog_waitlink: off(&sudog, "waitlink")?,
        sudog_is_select: sudog.field("isSelect").map(|f| f.offset),
        sudog_len: 0,
        qcount: off(&hchan, "qcount")?,
        dataqsiz: off(&hchan, "dataqsiz")?,
        closed: off(&hchan, "closed")?,
        recvq_first: off(&hchan, "recvq")? + first,
        sendq_first: off(&hchan, "sendq")? + first,
        hchan_len: 0,
    };
    c.sudog_len = [c.sudog_c, c.sudog_next, c.sudog_waitlink]
        .into_iter()
        .chain(c.sudog_is_select)
        .max()
        .unwrap_or(0)
        + 8;
    c.hchan_len = [c.qcount, c.dataqsiz, c.closed, c.recvq_first, c.sendq_first]
        .into_iter()
        .max()
        .unwrap_or(0)
        + 8;
    if c.sudog_len > MAX_CHAN_READ || c.hchan_len > MAX_CHAN_READ {
        return Err(format!(
            "runtime.sudog/hchan fields past {MAX_CHAN_READ} bytes ({}, {})",
            c.sudog_len, c.hchan_len
        ));
    }
    Ok(c)
}

/// Most bytes read of one sudog or hchan (they are about 100; one is read per waiting
/// goroutine).
const MAX_CHAN_READ: u64 = 512;
