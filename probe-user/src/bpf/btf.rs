//! Kernel struct offsets from the running kernel's BTF.
//!
//! Rust BPF programs get no CO-RE relocations, so the few `task_struct` fields the kernel side
//! reads by address are located here and passed in as load-time globals.

use btf_rs::{Btf, Type};

use crate::error::StallError;

/// Byte offsets inside `struct task_struct` on this kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOffsets {
    pub pid: u32,
    pub tgid: u32,
    pub comm: u32,
    pub state: u32,
    pub flags: u32,
    /// `sched_info.last_arrival`; 0 when the kernel lacks it (CONFIG_SCHED_INFO off).
    pub last_arrival: u32,
}

impl TaskOffsets {
    pub fn from_kernel() -> Result<TaskOffsets, StallError> {
        let path = crate::preflight::vmlinux_btf_path();
        let btf = Btf::from_file(&path).map_err(|e| StallError::KernelFeature {
            what: "kernel BTF".into(),
            detail: format!("cannot read {}: {e}", path.display()),
            hint: "stallprobe needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux 5.10 or later; \
                   most distribution kernels have it)."
                .into(),
        })?;
        let missing = |field: &str| {
            StallError::KernelFeature {
            what: format!("task_struct.{field} in kernel BTF"),
            detail: "not found".into(),
            hint: "this kernel's BTF does not describe the field stallprobe reads; please report it with `uname -r`.".into(),
        }
        };
        let off = |path: &[&str]| field_offset(&btf, "task_struct", path);
        Ok(TaskOffsets {
            pid: off(&["pid"]).ok_or_else(|| missing("pid"))?,
            tgid: off(&["tgid"]).ok_or_else(|| missing("tgid"))?,
            comm: off(&["comm"]).ok_or_else(|| missing("comm"))?,
            state: off(&["__state"])
                .or_else(|| off(&["state"]))
                .ok_or_else(|| missing("__state"))?,
            flags: off(&["flags"]).ok_or_else(|| missing("flags"))?,
            last_arrival: off(&["sched_info", "last_arrival"]).unwrap_or(0),
        })
    }
}

/// Byte offset of `path` (nested member names) inside struct `name`, looking through anonymous
/// structs and unions.
pub fn field_offset(btf: &Btf, name: &str, path: &[&str]) -> Option<u32> {
    let ty = btf
        .resolve_types_by_name(name)
        .ok()?
        .into_iter()
        .find(|t| matches!(t, Type::Struct(_)))?;
    let mut offset = 0u32;
    let mut cur = ty;
    for (i, field) in path.iter().enumerate() {
        let (off, member_ty) = find_member(btf, &cur, field)?;
        offset += off;
        if i + 1 < path.len() {
            cur = resolve_struct(btf, member_ty)?;
        }
    }
    Some(offset)
}

/// Strip typedefs and qualifiers down to a struct/union.
fn resolve_struct(btf: &Btf, mut ty: Type) -> Option<Type> {
    for _ in 0..16 {
        match ty {
            Type::Struct(_) | Type::Union(_) => return Some(ty),
            Type::Typedef(ref t) => ty = btf.resolve_chained_type(t).ok()?,
            Type::Const(ref t) => ty = btf.resolve_chained_type(t).ok()?,
            Type::Volatile(ref t) => ty = btf.resolve_chained_type(t).ok()?,
            _ => return None,
        }
    }
    None
}

/// (byte offset, type) of member `field` of a struct/union, searching anonymous members.
fn find_member(btf: &Btf, ty: &Type, field: &str) -> Option<(u32, Type)> {
    let members = match ty {
        Type::Struct(s) | Type::Union(s) => &s.members,
        _ => return None,
    };
    for m in members {
        let name = btf.resolve_name(m).unwrap_or_default();
        let mty = btf.resolve_chained_type(m).ok()?;
        if name == field {
            return Some((m.bit_offset() / 8, mty));
        }
        if name.is_empty()
            && let Some(inner) = resolve_struct(btf, mty)
            && let Some((off, t)) = find_member(btf, &inner, field)
        {
            return Some((m.bit_offset() / 8 + off, t));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against this machine's kernel BTF when it has one (every supported kernel does).
    #[test]
    fn task_struct_offsets_are_plausible() {
        if !std::path::Path::new(crate::preflight::VMLINUX_BTF).exists() {
            eprintln!("no {}: skipped", crate::preflight::VMLINUX_BTF);
            return;
        }
        let o = TaskOffsets::from_kernel().unwrap();
        assert!(o.pid > 0 && o.tgid > 0 && o.comm > 0);
        assert_eq!(o.tgid, o.pid + 4, "tgid follows pid in task_struct");
    }
}
