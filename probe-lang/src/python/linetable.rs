//! Line numbers from a code object's line table, for a byte offset into its instructions.
//!
//! Three formats (see CPython's `Objects/lnotab_notes.txt` and `Objects/locations.md`):
//! `co_lnotab` (≤ 3.9), the 3.10 `co_linetable`, and the 3.11+ location table. Every decoder
//! walks the table once, never reads past its end and never panics on garbage (a
//! property test feeds it random bytes): a table that does not cover the offset gives None.

use super::layout::LineTableKind;

/// The line of the instruction at `byte_offset` (bytes from the first instruction), or None
/// when the table says it has no line or does not cover it. A negative offset (a frame that
/// has not started) is the function's first line, as CPython says.
pub fn line_at(
    kind: LineTableKind,
    table: &[u8],
    firstlineno: i64,
    byte_offset: i64,
) -> Option<u32> {
    if byte_offset < 0 {
        return to_line(firstlineno);
    }
    match kind {
        LineTableKind::Lnotab => lnotab(table, firstlineno, byte_offset),
        LineTableKind::Linetable310 => linetable_310(table, firstlineno, byte_offset),
        LineTableKind::Locations => locations(table, firstlineno, byte_offset),
    }
}

fn to_line(line: i64) -> Option<u32> {
    u32::try_from(line).ok().filter(|&l| l > 0)
}

/// `co_lnotab`: pairs (address increment: u8, line increment: i8); the line applies from the
/// address reached.
fn lnotab(table: &[u8], first: i64, offset: i64) -> Option<u32> {
    let mut line = first;
    let mut addr: i64 = 0;
    for pair in table.chunks_exact(2) {
        addr += i64::from(pair[0]);
        if addr > offset {
            break;
        }
        line = line.saturating_add(i64::from(pair[1] as i8));
    }
    to_line(line)
}

/// The 3.10 `co_linetable`: pairs (byte length of the range: u8, line delta: i8), where a
/// delta of -128 means "no line" for that range and leaves the running line alone.
fn linetable_310(table: &[u8], first: i64, offset: i64) -> Option<u32> {
    let mut line = first;
    let mut end: i64 = 0;
    for pair in table.chunks_exact(2) {
        let start = end;
        end += i64::from(pair[0]);
        let delta = pair[1] as i8;
        let range_line = if delta == -128 {
            None
        } else {
            line = line.saturating_add(i64::from(delta));
            Some(line)
        };
        if start <= offset && offset < end {
            return range_line.and_then(to_line);
        }
    }
    None
}

/// The 3.11+ location table: entries start with a byte that has its top bit set:
/// `1 cccc lll` with code `c` and length `l + 1` in 2-byte code units. Codes: 15 no location;
/// 14 long form (signed varint line delta, then three varints); 13 no columns (signed varint
/// line delta); 10–12 one-line forms (line delta `c - 10`, two column bytes); 0–9 short form
/// (same line, one column byte).
fn locations(table: &[u8], first: i64, offset: i64) -> Option<u32> {
    let mut line = first;
    let mut end: i64 = 0;
    let mut i = 0;
    while i < table.len() {
        let head = table[i];
        if head & 0x80 == 0 {
            // Not the start of an entry: the table is damaged (or we lost sync).
            return None;
        }
        let code = (head >> 3) & 15;
        let start = end;
        end += (i64::from(head & 7) + 1) * 2;
        let delta = match code {
            13 | 14 => svarint(table, i + 1).unwrap_or(0),
            10..=12 => i64::from(code) - 10,
            _ => 0,
        };
        line = line.saturating_add(delta);
        let range_line = if code == 15 { None } else { Some(line) };
        if start <= offset && offset < end {
            return range_line.and_then(to_line);
        }
        // Skip to the next entry start.
        i += 1;
        while i < table.len() && table[i] & 0x80 == 0 {
            i += 1;
        }
    }
    None
}

/// The location table's varint: 6-bit groups, least significant first, bit 6 = more follows.
fn varint(table: &[u8], mut i: usize) -> Option<u64> {
    let mut val: u64 = 0;
    let mut shift = 0u32;
    loop {
        let b = *table.get(i)?;
        i += 1;
        val |= u64::from(b & 63).checked_shl(shift)?;
        if b & 64 == 0 || shift > 56 {
            return Some(val);
        }
        shift += 6;
    }
}

fn svarint(table: &[u8], i: usize) -> Option<i64> {
    let u = varint(table, i)?;
    let mag = (u >> 1) as i64;
    Some(if u & 1 != 0 { -mag } else { mag })
}

#[cfg(test)]
#[path = "linetable_tests.rs"]
mod tests;
