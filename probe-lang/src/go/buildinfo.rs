//! The Go version from `.go.buildinfo`: the old format (pointers to string headers, before Go
//! 1.18) and the inline one (varint-prefixed strings, flag bit 2, from 1.18).

use super::{elf::Elf, error::GoError};

const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const HEADER_LEN: usize = 32;
/// Longest version string accepted.
const MAX_VERSION_LEN: u64 = 128;

/// A Go release, as far as layouts care: 1.minor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoVersion {
    /// As the binary spells it: "go1.23.9", "go1.21rc2", "devel go1.24-abc".
    pub text: String,
    /// The minor release (23 for go1.23.9).
    pub minor: u32,
}

impl GoVersion {
    /// Parse "go1.N[.P|rcN|betaN|-...]" anywhere in the text.
    pub fn parse(text: &str) -> Result<GoVersion, GoError> {
        let bad = || GoError::BadVersion(text.to_string());
        let at = text.find("go1.").ok_or_else(bad)?;
        let digits: String = text[at + 4..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        let minor = digits.parse::<u32>().map_err(|_| bad())?;
        Ok(GoVersion {
            text: text.to_string(),
            minor,
        })
    }

    pub fn at_least(&self, minor: u32) -> bool {
        self.minor >= minor
    }
}

/// The version string recorded in the binary's build info (the bytes of `.go.buildinfo`, or
/// of the file when that section is missing).
pub(crate) fn read_version(elf: &Elf) -> Result<String, GoError> {
    let (blob, _addr) = match elf.section(".go.buildinfo") {
        Some(s) => (elf.section_data(s).ok_or(GoError::NotGo)?, s.addr),
        None => (find_by_magic(elf.data).ok_or(GoError::NotGo)?, 0),
    };
    parse_header(blob, |addr, len| {
        elf.bytes_at(addr, len).map(<[u8]>::to_vec)
    })
}

/// The build info blob found by its 16-byte-aligned magic in the file.
fn find_by_magic(data: &[u8]) -> Option<&[u8]> {
    let mut off = 0usize;
    while off.checked_add(HEADER_LEN)? <= data.len() {
        if data.get(off..off + MAGIC.len())? == MAGIC {
            return data.get(off..);
        }
        off += 16;
    }
    None
}

/// Parse the build info header; `read(addr, len)` reads the binary's static data by virtual
/// address (for the old, pointer-based format).
pub(crate) fn parse_header(
    blob: &[u8],
    read: impl Fn(u64, usize) -> Option<Vec<u8>>,
) -> Result<String, GoError> {
    let bad = |why: &str| GoError::BadVersion(format!("build info: {why}"));
    if blob.len() < HEADER_LEN || &blob[..MAGIC.len()] != MAGIC {
        return Err(GoError::NotGo);
    }
    let ptr_size = blob[14];
    let flags = blob[15];
    if flags & 1 != 0 {
        return Err(GoError::UnsupportedArch("big-endian".into()));
    }
    let version = if flags & 2 != 0 {
        let (len, n) = uvarint(&blob[HEADER_LEN..]).ok_or_else(|| bad("bad varint"))?;
        if len == 0 || len > MAX_VERSION_LEN {
            return Err(bad("implausible version length"));
        }
        let start = HEADER_LEN + n;
        blob.get(start..start + len as usize)
            .ok_or_else(|| bad("truncated"))?
            .to_vec()
    } else {
        if ptr_size != 8 {
            return Err(GoError::UnsupportedArch(format!(
                "{ptr_size}-byte pointers"
            )));
        }
        let ptr = u64::from_le_bytes(blob[16..24].try_into().map_err(|_| bad("short"))?);
        let hdr = read(ptr, 16).ok_or_else(|| bad("version pointer outside the file"))?;
        let sptr = u64::from_le_bytes(hdr[..8].try_into().map_err(|_| bad("short"))?);
        let slen = u64::from_le_bytes(hdr[8..16].try_into().map_err(|_| bad("short"))?);
        if slen == 0 || slen > MAX_VERSION_LEN {
            return Err(bad("implausible version length"));
        }
        read(sptr, slen as usize).ok_or_else(|| bad("version string outside the file"))?
    };
    String::from_utf8(version).map_err(|_| bad("not UTF-8"))
}

/// Go's unsigned varint (LEB128). Returns the value and the number of bytes.
pub(crate) fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &x) in b.iter().enumerate().take(10) {
        v |= u64::from(x & 0x7f).checked_shl(7 * i as u32)?;
        if x & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(flags: u8) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.push(8);
        b.push(flags);
        b.resize(HEADER_LEN, 0);
        b
    }

    #[test]
    fn inline_format() {
        let mut b = header(2);
        b.push(8);
        b.extend_from_slice(b"go1.23.9");
        b.push(0);
        assert_eq!(parse_header(&b, |_, _| None).unwrap(), "go1.23.9");
        let v = GoVersion::parse("go1.23.9").unwrap();
        assert_eq!(v.minor, 23);
        assert_eq!(GoVersion::parse("devel go1.27-abcdef").unwrap().minor, 27);
        assert_eq!(GoVersion::parse("go1.21rc2").unwrap().minor, 21);
        assert!(GoVersion::parse("go2").is_err());
    }

    #[test]
    fn pointer_format() {
        let mut b = header(0);
        b[16..24].copy_from_slice(&0x5000u64.to_le_bytes());
        let read = |addr: u64, len: usize| -> Option<Vec<u8>> {
            match addr {
                0x5000 => {
                    let mut h = 0x6000u64.to_le_bytes().to_vec();
                    h.extend_from_slice(&8u64.to_le_bytes());
                    Some(h[..len].to_vec())
                }
                0x6000 => Some(b"go1.17.3"[..len].to_vec()),
                _ => None,
            }
        };
        assert_eq!(parse_header(&b, read).unwrap(), "go1.17.3");
    }

    #[test]
    fn garbage() {
        assert_eq!(parse_header(b"nope", |_, _| None), Err(GoError::NotGo));
        let mut b = header(2);
        b.extend_from_slice(&[0xff; 12]);
        assert!(parse_header(&b, |_, _| None).is_err());
        let mut b = header(2);
        b.push(100);
        assert!(parse_header(&b, |_, _| None).is_err());
    }
}
