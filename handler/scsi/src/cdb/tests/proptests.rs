//! Property tests: an independent encoder agrees with `decode`, and garbage
//! never panics.

use super::super::*;
use crate::opcodes as op;
use crate::sense::key;
use proptest::prelude::*;

/// Random command fields.
#[derive(Debug, Clone, Copy)]
struct Fields {
    lba: u64,
    blocks: u32,
    fua: bool,
    dpo: bool,
    flag: bool,
    bytchk: u8,
    control: u8,
}

fn fields() -> impl Strategy<Value = Fields> {
    (
        any::<u64>(),
        any::<u32>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0u8..=1,
        any::<u8>(),
    )
        .prop_map(|(lba, blocks, fua, dpo, flag, bytchk, control)| Fields {
            lba,
            blocks,
            fua,
            dpo,
            flag,
            bytchk,
            control: control & !0x04,
        })
}

const OPS: &[u8] = &[
    op::READ_6,
    op::WRITE_6,
    op::READ_10,
    op::WRITE_10,
    op::READ_12,
    op::WRITE_12,
    op::READ_16,
    op::WRITE_16,
    op::VERIFY_10,
    op::VERIFY_16,
    op::WRITE_VERIFY_10,
    op::WRITE_VERIFY_16,
    op::SYNC_CACHE_10,
    op::SYNC_CACHE_16,
    op::WRITE_SAME_10,
    op::WRITE_SAME_16,
    op::COMPARE_AND_WRITE,
];

/// Encode `f` as a CDB for `opcode`; returns the CDB and the expected
/// decode (with fields cut to the CDB's widths).
fn encode(opcode: u8, f: Fields) -> (Vec<u8>, Cdb) {
    let len = match opcode >> 5 {
        0 => 6,
        1 | 2 => 10,
        5 => 12,
        _ => 16,
    };
    let mut c = vec![0u8; len];
    c[0] = opcode;
    c[len - 1] = f.control;
    let (lba, blocks) = match len {
        6 => {
            let lba = f.lba & 0x1F_FFFF;
            c[1..4].copy_from_slice(&lba.to_be_bytes()[5..]);
            let n = f.blocks & 0xFF;
            c[4] = n.to_be_bytes()[3];
            (lba, if n == 0 { 256 } else { n })
        }
        10 => {
            let lba = f.lba & 0xFFFF_FFFF;
            c[2..6].copy_from_slice(&lba.to_be_bytes()[4..]);
            let n = f.blocks & 0xFFFF;
            c[7..9].copy_from_slice(&n.to_be_bytes()[2..]);
            (lba, n)
        }
        12 => {
            let lba = f.lba & 0xFFFF_FFFF;
            c[2..6].copy_from_slice(&lba.to_be_bytes()[4..]);
            c[6..10].copy_from_slice(&f.blocks.to_be_bytes());
            (lba, f.blocks)
        }
        _ => {
            c[2..10].copy_from_slice(&f.lba.to_be_bytes());
            c[10..14].copy_from_slice(&f.blocks.to_be_bytes());
            (f.lba, f.blocks)
        }
    };
    let fua_dpo = u8::from(f.fua) << 3 | u8::from(f.dpo) << 4;
    let rw = Rw {
        lba,
        blocks,
        fua: f.fua,
        dpo: f.dpo,
    };
    let want = match opcode {
        op::READ_6 => Cdb::Read(Rw {
            fua: false,
            dpo: false,
            ..rw
        }),
        op::WRITE_6 => Cdb::Write(Rw {
            fua: false,
            dpo: false,
            ..rw
        }),
        op::READ_10 | op::READ_12 | op::READ_16 => {
            c[1] = fua_dpo;
            Cdb::Read(rw)
        }
        op::WRITE_10 | op::WRITE_12 | op::WRITE_16 => {
            c[1] = fua_dpo;
            Cdb::Write(rw)
        }
        op::VERIFY_10 | op::VERIFY_16 => {
            c[1] = f.bytchk << 1;
            Cdb::Verify {
                lba,
                blocks,
                bytchk: f.bytchk,
            }
        }
        op::WRITE_VERIFY_10 | op::WRITE_VERIFY_16 => {
            c[1] = f.bytchk << 1 | u8::from(f.dpo) << 4;
            Cdb::WriteAndVerify {
                rw: Rw { fua: true, ..rw },
                bytchk: f.bytchk,
            }
        }
        op::SYNC_CACHE_10 | op::SYNC_CACHE_16 => {
            c[1] = u8::from(f.flag) << 1;
            Cdb::SyncCache {
                lba,
                blocks,
                immed: f.flag,
            }
        }
        op::WRITE_SAME_10 | op::WRITE_SAME_16 => {
            let ndob = len == 16 && f.fua;
            c[1] = u8::from(f.flag) << 3 | u8::from(ndob);
            Cdb::WriteSame {
                lba,
                blocks,
                unmap: f.flag,
                anchor: false,
                ndob,
            }
        }
        _ => {
            // COMPARE AND WRITE: NUMBER OF LOGICAL BLOCKS is byte 13 only.
            c[1] = u8::from(f.fua) << 3;
            c[10..14].copy_from_slice(&[0, 0, 0, f.blocks.to_be_bytes()[3]]);
            Cdb::CompareAndWrite {
                lba,
                blocks: f.blocks.to_be_bytes()[3],
                fua: f.fua,
            }
        }
    };
    (c, want)
}

proptest! {
    #[test]
    fn encoder_and_decoder_agree(opcode in prop::sample::select(OPS), f in fields()) {
        let (c, want) = encode(opcode, f);
        prop_assert_eq!(decode(&c), Ok(want));
        // Trailing bytes beyond the CDB length are ignored.
        let mut longer = c.clone();
        longer.extend_from_slice(&[0xFF; 8]);
        prop_assert_eq!(decode(&longer), Ok(want));
    }

    #[test]
    fn protect_field_rejected(opcode in prop::sample::select(&OPS[2..12]), f in fields(), p in 1u8..8) {
        let (mut c, _) = encode(opcode, f);
        c[1] |= p << 5;
        let e = decode(&c).unwrap_err();
        prop_assert_eq!(e, crate::sense::Sense::invalid_field_in_cdb(1, Some(7)));
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        match decode(&bytes) {
            Ok(c) => {
                let _ = data_out_len(&c, 4096);
                let _ = data_in_len(&c, 4096);
            }
            Err(s) => prop_assert_eq!(s.key, key::ILLEGAL_REQUEST),
        }
    }

    #[test]
    fn supported_opcodes_with_random_bodies(
        idx in 0..crate::opcodes::SUPPORTED.len(),
        body in prop::collection::vec(any::<u8>(), 32),
    ) {
        let info = &crate::opcodes::SUPPORTED[idx];
        let mut c = body;
        c[0] = info.opcode;
        if let Some(sa) = info.service_action {
            c[1] = (c[1] & 0xE0) | u8::try_from(sa).unwrap();
        }
        let r = decode(&c);
        if let Err(s) = r {
            // A known opcode is never "invalid opcode", only an invalid field.
            prop_assert_eq!((s.key, s.asc), (key::ILLEGAL_REQUEST, 0x24));
            prop_assert!(s.field.is_some_and(|f| f.in_cdb && usize::from(f.byte) < info.cdb_len()));
        }
    }
}
