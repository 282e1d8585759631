//! Struct layouts from the runtime's own type descriptors (`abi.Type`/`abi.StructType`), which
//! survive `-ldflags="-s -w"`: the runtime allocates `g`, `m`, `sudog` and `hchan` with
//! `new(T)`, so their descriptors are in the binary. Found by name (`*runtime.g` with the
//! extra-star flag) among the module's types, fields read from the descriptor.

use super::{buildinfo::uvarint, elf::Elf, moduledata::ModuleData};

/// Kind numbers (abi.Kind, low 5 bits).
pub(crate) const KIND_PTR: u8 = 22;
pub(crate) const KIND_STRUCT: u8 = 25;
const KIND_MASK: u8 = 0x1f;
const TFLAG_EXTRA_STAR: u8 = 1 << 1;
/// Most fields read from one struct.
const MAX_FIELDS: u64 = 512;

/// A struct's fields, from a type descriptor or from DWARF.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct StructDesc {
    pub name: String,
    pub size: u64,
    pub fields: Vec<FieldDesc>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldDesc {
    pub name: String,
    pub offset: u64,
    pub size: u64,
    /// The field's type name ("runtime.gobuf", "*runtime.sudog", "uintptr").
    pub type_name: String,
    /// The field's type's descriptor (type descriptors only), for nested structs.
    pub type_addr: Option<u64>,
    pub kind: u8,
}

/// Largest field offset believed: the runtime's structs are a few hundred bytes (runtime.m a
/// few KiB); a bigger offset is garbage, and sums of offsets must not overflow.
pub(crate) const MAX_FIELD_OFFSET: u64 = 64 << 10;

impl StructDesc {
    /// The field named `name`, unless its offset is implausible ([`MAX_FIELD_OFFSET`]).
    pub fn field(&self, name: &str) -> Option<&FieldDesc> {
        self.fields
            .iter()
            .find(|f| f.name == name && f.offset <= MAX_FIELD_OFFSET)
    }
}

/// Reads type descriptors from the binary's static data.
pub(crate) struct TypeReader<'a, 'e> {
    elf: &'a Elf<'e>,
    md: ModuleData,
    /// Before Go 1.19 a field's offset is stored shifted left by one (low bit: embedded).
    shifted_offsets: bool,
}

impl<'a, 'e> TypeReader<'a, 'e> {
    pub fn new(elf: &'a Elf<'e>, md: ModuleData, minor: u32) -> Self {
        TypeReader {
            elf,
            md,
            shifted_offsets: minor < 19,
        }
    }

    fn u64(&self, a: u64) -> Option<u64> {
        self.elf.u64_at(a)
    }

    fn u8(&self, a: u64) -> Option<u8> {
        Some(*self.elf.bytes_at(a, 1)?.first()?)
    }

    fn i32(&self, a: u64) -> Option<i32> {
        Some(i32::from_le_bytes(
            self.elf.bytes_at(a, 4)?.try_into().ok()?,
        ))
    }

    /// An `abi.Name` at `a`: flags byte, varint length, bytes.
    fn name_at(&self, a: u64) -> Option<String> {
        let head = self
            .elf
            .bytes_at(a.checked_add(1)?, 10)
            .or_else(|| self.elf.bytes_at(a.checked_add(1)?, 2))?;
        let (len, n) = uvarint(head)?;
        if len > 4096 {
            return None;
        }
        let b = self
            .elf
            .bytes_at(a.checked_add(1 + n as u64)?, len as usize)?;
        String::from_utf8(b.to_vec()).ok()
    }

    /// The type's name (`Str` resolved against moduledata.types; extra star removed).
    fn type_name(&self, t: u64) -> Option<String> {
        let str_off = self.i32(t.checked_add(40)?)?;
        let tflag = self.u8(t.checked_add(20)?)?;
        let n = self.name_at(self.md.types.checked_add_signed(i64::from(str_off))?)?;
        Some(if tflag & TFLAG_EXTRA_STAR != 0 {
            n.strip_prefix('*').unwrap_or(&n).to_string()
        } else {
            n
        })
    }

    fn kind(&self, t: u64) -> Option<u8> {
        Some(self.u8(t.checked_add(23)?)? & KIND_MASK)
    }

    /// The address of the struct type descriptor named `name` ("runtime.g").
    pub fn find_struct(&self, name: &str) -> Option<u64> {
        let (types, etypes) = (self.md.types, self.md.etypes);
        let span = usize::try_from(etypes.checked_sub(types)?).ok()?;
        let region = self.elf.bytes_at(types, span).or_else(|| {
            // The types range can cross a section boundary; take what one section holds.
            let s = self.elf.section_at(types)?;
            let d = self.elf.section_data(s)?;
            d.get(usize::try_from(types - s.addr).ok()?..)
        })?;
        let star = format!("*{name}");
        let mut needle = vec![star.len() as u8];
        needle.extend_from_slice(star.as_bytes());
        if star.len() >= 0x80 {
            return None;
        }
        let mut from = 0;
        let mut name_offs = Vec::new();
        while let Some(p) = region[from..]
            .windows(needle.len())
            .position(|w| w == needle)
        {
            let at = from + p;
            if at > 0 {
                name_offs.push((at - 1) as i32);
            }
            from = at + 1;
            if name_offs.len() > 8 {
                break;
            }
        }
        for off in name_offs {
            for t in (0..region.len().saturating_sub(48)).step_by(8) {
                let str_off = i32::from_le_bytes(region[t + 40..t + 44].try_into().ok()?);
                if str_off == off
                    && region[t + 23] & KIND_MASK == KIND_STRUCT
                    && region[t + 20] & TFLAG_EXTRA_STAR != 0
                {
                    return types.checked_add(t as u64);
                }
            }
        }
        None
    }

    /// Read the struct type descriptor at `t`.
    pub fn read_struct(&self, t: u64) -> Option<StructDesc> {
        if self.kind(t)? != KIND_STRUCT {
            return None;
        }
        let size = self.u64(t)?;
        let fields_ptr = self.u64(t.checked_add(56)?)?;
        let nfields = self.u64(t.checked_add(64)?)?;
        if nfields > MAX_FIELDS {
            return None;
        }
        let mut fields = Vec::new();
        for i in 0..nfields {
            let f = fields_ptr.checked_add(i * 24)?;
            let name = self.name_at(self.u64(f)?)?;
            let typ = self.u64(f.checked_add(8)?)?;
            let raw = self.u64(f.checked_add(16)?)?;
            let offset = if self.shifted_offsets { raw >> 1 } else { raw };
            let kind = self.kind(typ)?;
            let mut type_name = self.type_name(typ).unwrap_or_default();
            if kind == KIND_PTR
                && let Some(elem) = self.u64(typ.checked_add(48)?)
                && let Some(n) = self.type_name(elem)
            {
                type_name = format!("*{n}");
            }
            fields.push(FieldDesc {
                name,
                offset,
                size: self.u64(typ)?,
                type_name,
                type_addr: Some(typ),
                kind,
            });
        }
        Some(StructDesc {
            name: self.type_name(t).unwrap_or_default(),
            size,
            fields,
        })
    }

    /// The struct named `name`, or failing that the struct type of `via`'s field (for types
    /// only reachable through a field, like runtime.gobuf).
    pub fn struct_named(&self, name: &str) -> Option<StructDesc> {
        self.read_struct(self.find_struct(name)?)
    }
}

/// Type descriptors as a source of struct layouts.
pub(crate) struct TypeDescStructs<'a, 'e>(pub TypeReader<'a, 'e>);

impl super::layout::Structs for TypeDescStructs<'_, '_> {
    fn named(&self, name: &str) -> Option<StructDesc> {
        self.0.struct_named(name)
    }

    fn of_field(&self, field: &FieldDesc) -> Option<StructDesc> {
        let t = field.type_addr?;
        match field.kind {
            KIND_STRUCT => self.0.read_struct(t),
            KIND_PTR => self.0.read_struct(self.0.u64(t.checked_add(48)?)?),
            _ => None,
        }
    }

    fn source(&self) -> &'static str {
        "runtime type descriptors"
    }
}
