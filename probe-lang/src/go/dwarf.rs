//! Struct layouts from DWARF (unstripped binaries): `runtime.g` and friends as the compiler
//! described them. Go compresses its DWARF sections with zlib (SHF_COMPRESSED or `.zdebug_`).

use std::{borrow::Cow, collections::HashMap, io::Read};

use gimli::{AttributeValue, EndianSlice, LittleEndian, SectionId};
use object::{Object, ObjectSection};

use super::{
    elf::Elf,
    layout::Structs,
    types::{FieldDesc, KIND_PTR, KIND_STRUCT, StructDesc},
};

/// Most bytes a binary's compressed DWARF sections may inflate to, all together: the same
/// allowance stallprobe gives every file it reads (docs/security.md, "Malformed input"). Past it the
/// DWARF is not used (a note says so) and the layouts come from the type descriptors.
pub(crate) const MAX_INFLATED: u64 = 256 << 20;
/// Most bytes reserved up front for one section: its stated size is the file's word.
const MAX_PREALLOC: u64 = 16 << 20;

const WANTED: &[&str] = &[
    "runtime.g",
    "runtime.gobuf",
    "runtime.stack",
    "runtime.m",
    "runtime.sudog",
    "runtime.hchan",
    "runtime.waitq",
    "runtime.maybeTraceableChan",
    "runtime.maybeTraceablePtr",
];

/// The wanted structs, by name.
pub(crate) struct DwarfStructs {
    structs: HashMap<String, StructDesc>,
}

/// A DWARF section's bytes, inflated when compressed: at most what it states and what is left
/// of `budget`; `Err` (why) when it would take more. Unreadable or corrupt sections are empty.
fn section<'d>(
    file: &object::File<'d>,
    id: SectionId,
    budget: &mut u64,
) -> Result<Cow<'d, [u8]>, String> {
    let Some(s) = file.section_by_name(id.name()) else {
        return Ok(Cow::Borrowed(&[]));
    };
    let Ok(c) = s.compressed_data() else {
        return Ok(Cow::Borrowed(&[]));
    };
    match c.format {
        object::CompressionFormat::None => Ok(Cow::Borrowed(c.data)),
        object::CompressionFormat::Zlib => {
            let stated = c.uncompressed_size;
            if stated > *budget {
                return Err(format!(
                    "{} states {stated} bytes uncompressed, more than the {} MiB allowed for a binary's DWARF",
                    id.name(),
                    MAX_INFLATED >> 20
                ));
            }
            let mut out = Vec::with_capacity(stated.min(MAX_PREALLOC) as usize);
            let mut dec = flate2::read::ZlibDecoder::new(c.data).take(stated.saturating_add(1));
            match dec.read_to_end(&mut out) {
                Ok(_) if out.len() as u64 <= stated => {
                    *budget -= out.len() as u64;
                    Ok(Cow::Owned(out))
                }
                Ok(_) => Err(format!(
                    "{} inflates to more than the {stated} bytes it states",
                    id.name()
                )),
                Err(_) => Ok(Cow::Borrowed(&[])),
            }
        }
        _ => Ok(Cow::Borrowed(&[])),
    }
}

impl DwarfStructs {
    /// None when the binary has no DWARF (or it cannot be read); a note in `notes` when its
    /// DWARF was left unread because it inflates past [`MAX_INFLATED`].
    pub fn load(elf: &Elf, notes: &mut Vec<String>) -> Option<DwarfStructs> {
        let file = object::File::parse(elf.data).ok()?;
        file.section_by_name(".debug_info")
            .or_else(|| file.section_by_name(".zdebug_info"))?;
        let mut budget = MAX_INFLATED;
        let owned: Result<HashMap<SectionId, Cow<[u8]>>, String> = [
            SectionId::DebugInfo,
            SectionId::DebugAbbrev,
            SectionId::DebugStr,
            SectionId::DebugLineStr,
            SectionId::DebugStrOffsets,
            SectionId::DebugAddr,
            SectionId::DebugLine,
            SectionId::DebugRanges,
            SectionId::DebugRngLists,
        ]
        .into_iter()
        .map(|id| Ok((id, section(&file, id, &mut budget)?)))
        .collect();
        let owned = match owned {
            Ok(o) => o,
            Err(why) => {
                notes.push(format!("DWARF not read: {why}"));
                return None;
            }
        };
        let dwarf = gimli::Dwarf::load(|id| -> Result<_, ()> {
            let d: &[u8] = owned.get(&id).map(|c| c.as_ref()).unwrap_or(&[]);
            Ok(EndianSlice::new(d, LittleEndian))
        })
        .ok()?;
        let structs = collect(&dwarf).ok()?;
        (!structs.is_empty()).then_some(DwarfStructs { structs })
    }
}

type R<'a> = EndianSlice<'a, LittleEndian>;
/// A wanted struct's size and members (name, offset, type DIE's global offset).
type Wanted = (u64, Vec<(String, u64, usize)>);

/// One pass over every DIE: type DIEs by global offset (tag, name, size), and the members of
/// the wanted structs (with their type's global offset).
fn collect(dwarf: &gimli::Dwarf<R>) -> gimli::Result<HashMap<String, StructDesc>> {
    let mut types: HashMap<usize, (gimli::DwTag, String, u64, usize)> = HashMap::new();
    let mut wanted: HashMap<String, Wanted> = HashMap::new();
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        let base = unit.header.offset().0;
        let mut cur = unit.entries();
        let mut current: Option<(String, isize)> = None;
        while let Some(e) = cur.next_dfs()? {
            let depth = e.depth();
            if let Some((_, d)) = &current
                && depth <= *d
            {
                current = None;
            }
            let tag = e.tag();
            let name = match e.attr_value(gimli::DW_AT_name) {
                Some(v) => dwarf
                    .attr_string(&unit, v)
                    .ok()
                    .map(|s| String::from_utf8_lossy(s.slice()).into_owned()),
                None => None,
            };
            let size = e
                .attr_value(gimli::DW_AT_byte_size)
                .and_then(|v| v.udata_value());
            if matches!(
                tag,
                gimli::DW_TAG_structure_type
                    | gimli::DW_TAG_pointer_type
                    | gimli::DW_TAG_base_type
                    | gimli::DW_TAG_typedef
                    | gimli::DW_TAG_unspecified_type
            ) {
                let target = match e.attr_value(gimli::DW_AT_type) {
                    Some(AttributeValue::UnitRef(o)) => base + o.0,
                    Some(AttributeValue::DebugInfoRef(o)) => o.0,
                    _ => usize::MAX,
                };
                types.insert(
                    base + e.offset().0,
                    (
                        tag,
                        name.clone().unwrap_or_default(),
                        size.unwrap_or(0),
                        target,
                    ),
                );
            }
            if tag == gimli::DW_TAG_structure_type
                && let Some(n) = &name
                && WANTED.contains(&n.as_str())
                && !wanted.contains_key(n)
            {
                wanted.insert(n.clone(), (size.unwrap_or(0), Vec::new()));
                current = Some((n.clone(), depth));
                continue;
            }
            if tag == gimli::DW_TAG_member
                && let Some((sname, d)) = &current
                && depth == d + 1
                && let Some(fname) = name
            {
                let offset = e
                    .attr_value(gimli::DW_AT_data_member_location)
                    .and_then(|v| v.udata_value())
                    .unwrap_or(u64::MAX);
                let typ = match e.attr_value(gimli::DW_AT_type) {
                    Some(AttributeValue::UnitRef(o)) => base + o.0,
                    Some(AttributeValue::DebugInfoRef(o)) => o.0,
                    _ => usize::MAX,
                };
                if offset != u64::MAX
                    && let Some(w) = wanted.get_mut(sname)
                {
                    w.1.push((fname, offset, typ));
                }
            }
        }
    }
    Ok(wanted
        .into_iter()
        .map(|(name, (size, members))| {
            let fields = members
                .into_iter()
                .map(|(fname, offset, typ)| {
                    let (mut tag, type_name, mut fsize, mut next) = types
                        .get(&typ)
                        .cloned()
                        .unwrap_or((gimli::DW_TAG_null, String::new(), 0, usize::MAX));
                    // A typedef names the type; its kind and size are the target's.
                    for _ in 0..8 {
                        if tag != gimli::DW_TAG_typedef {
                            break;
                        }
                        let Some(t) = types.get(&next) else { break };
                        (tag, fsize, next) = (t.0, t.2, t.3);
                    }
                    let kind = match tag {
                        gimli::DW_TAG_pointer_type => KIND_PTR,
                        gimli::DW_TAG_structure_type => KIND_STRUCT,
                        _ => 0,
                    };
                    FieldDesc {
                        name: fname,
                        offset,
                        size: if kind == KIND_PTR { 8 } else { fsize },
                        type_name,
                        type_addr: None,
                        kind,
                    }
                })
                .collect();
            (name.clone(), StructDesc { name, size, fields })
        })
        .collect())
}

impl Structs for DwarfStructs {
    fn named(&self, name: &str) -> Option<StructDesc> {
        self.structs.get(name).cloned()
    }

    fn of_field(&self, field: &FieldDesc) -> Option<StructDesc> {
        self.named(field.type_name.trim_start_matches('*'))
    }

    fn source(&self) -> &'static str {
        "DWARF"
    }
}
