//! A tiny, bounded x86-64 pattern matcher: the RIP-relative `mov/lea/cmp reg, [rip+disp32]`
//! forms (REX.W + 8B/8D/39/3B/89 + ModRM with mod=00 rm=101) Go's compiler uses to reach
//! package variables. It scans every byte offset rather than decoding instruction lengths, so
//! a match may be a false one inside another instruction: callers validate every target.

/// What the instruction does with its memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// `mov reg, [rip+d]` (8B): a load.
    Load,
    /// `lea reg, [rip+d]` (8D).
    Lea,
    /// `cmp` (39/3B).
    Cmp,
    /// `mov [rip+d], reg` (89): a store.
    Store,
}

/// RIP-relative references in `code` (which starts at virtual address `addr`), in order:
/// (address of the instruction, operation, target address).
pub(crate) fn rip_refs(code: &[u8], addr: u64) -> Vec<(u64, Op, u64)> {
    let mut out = Vec::new();
    let mut i = 0usize;
    while i + 7 <= code.len() {
        let rex = code[i];
        let op = match code[i + 1] {
            0x8b => Some(Op::Load),
            0x8d => Some(Op::Lea),
            0x39 | 0x3b => Some(Op::Cmp),
            0x89 => Some(Op::Store),
            _ => None,
        };
        let modrm = code[i + 2];
        if (rex & 0xf8) == 0x48
            && let Some(op) = op
            && (modrm & 0xc7) == 0x05
        {
            let disp = i32::from_le_bytes([code[i + 3], code[i + 4], code[i + 5], code[i + 6]]);
            let insn = addr.wrapping_add(i as u64);
            let target = insn.wrapping_add(7).wrapping_add_signed(i64::from(disp));
            out.push((insn, op, target));
            i += 7;
            continue;
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_go_forms() {
        // 0x435c99: 48 8b 0d d0 2c 14 00   MOVQ runtime.allglen(SB), CX  (-> 0x578970)
        // 0x435ca5: 48 8b 1d 54 39 11 00   MOVQ runtime.allgptr(SB), BX  (-> 0x549600)
        let mut code = vec![0x90u8; 0x20];
        code[0..7].copy_from_slice(&[0x48, 0x8b, 0x0d, 0xd0, 0x2c, 0x14, 0x00]);
        code[12..19].copy_from_slice(&[0x48, 0x8b, 0x1d, 0x54, 0x39, 0x11, 0x00]);
        code[19..26].copy_from_slice(&[0x4c, 0x8d, 0x05, 0xf0, 0xff, 0xff, 0xff]); // lea r8
        let refs = rip_refs(&code, 0x435c99);
        assert_eq!(
            refs,
            vec![
                (0x435c99, Op::Load, 0x578970),
                (0x435ca5, Op::Load, 0x549600),
                (0x435cac, Op::Lea, 0x435cac + 7 - 16),
            ]
        );
        assert!(rip_refs(&[0x48, 0x8b], 0).is_empty());
    }
}
