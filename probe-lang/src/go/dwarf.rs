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

/// Largest decompressed DWARF section accepted.
const MAX_SECTION: u64 = 1 << 30;

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

fn section<'d>(file: &object::File<'d>, id: SectionId) -> Cow<'d, [u8]> {
    let Some(s) = file.section_by_name(id.name()) else {
        return Cow::Borrowed(&[]);
    };
    let Ok(c) = s.compressed_data() else {
        return Cow::Borrowed(&[]);
    };
    match c.format {
        object::CompressionFormat::None => Cow::Borrowed(c.data),
        object::CompressionFormat::Zlib if c.uncompressed_size <= MAX_SECTION => {
            let mut out = Vec::with_capacity(c.uncompressed_size as usize);
            let mut dec = flate2::read::ZlibDecoder::new(c.data).take(MAX_SECTION);
            if dec.read_to_end(&mut out).is_ok() {
                Cow::Owned(out)
            } else {
                Cow::Borrowed(&[])
            }
        }
        _ => Cow::Borrowed(&[]),
    }
}

impl DwarfStructs {
    /// None when the binary has no DWARF (or it cannot be read).
    pub fn load(elf: &Elf) -> Option<DwarfStructs> {
        let file = object::File::parse(elf.data).ok()?;
        file.section_by_name(".debug_info")
            .or_else(|| file.section_by_name(".zdebug_info"))?;
        let owned: HashMap<SectionId, Cow<[u8]>> = [
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
        .map(|id| (id, section(&file, id)))
        .collect();
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
