//! Fuzz the UNMAP parameter list parser (`tcmu_scsi::params::parse_unmap`).
//!
//! The first two bytes pick the LUN (block count, unmap limits); the rest is the parameter
//! list as the initiator sent it. Asserts: no panic; a refusal is ILLEGAL REQUEST sense that
//! survives fixed-format encoding; an accepted list yields only non-empty ranges inside the
//! LUN and within MAXIMUM UNMAP LBA COUNT, no more descriptors than MAXIMUM UNMAP BLOCK
//! DESCRIPTOR COUNT, exactly the non-empty descriptors of the list in order, and the same
//! ranges when parsed again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcmu_scsi::lun::LunInfo;
use tcmu_scsi::params::parse_unmap;
use tcmu_scsi::sense::{key, Sense, SENSE_BUFFER_LEN};

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().expect("4 bytes"))
}

fuzz_target!(|data: &[u8]| {
    let (lun_sel, list) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]), rest),
        _ => return,
    };
    let num_blocks = [1u64, 8, 1000, 1 << 20, 1 << 40, u64::MAX][usize::from(lun_sel % 6)];
    let mut lun = LunInfo::new(512, num_blocks, "fuzz");
    lun.caps.unmap = true;
    lun.max_unmap_descriptors = u32::from((lun_sel >> 3) & 0x1f);
    lun.max_unmap_blocks = [0u32, 1, 100, 8192, u32::MAX][usize::from((lun_sel >> 8) % 5)];

    match parse_unmap(list, &lun) {
        Err(s) => {
            assert_eq!(s.key, key::ILLEGAL_REQUEST);
            let mut buf = [0u8; SENSE_BUFFER_LEN];
            s.to_fixed(&mut buf);
            assert_eq!(Sense::from_bytes(&buf), Some(s));
        }
        Ok(descs) => {
            let got: Vec<(u64, u32)> = descs.clone().collect();
            for &(lba, n) in &got {
                assert!(n != 0 && n <= lun.max_unmap_blocks, "{n} blocks");
                assert!(lba
                    .checked_add(u64::from(n))
                    .is_some_and(|e| e <= num_blocks));
            }
            // What the list says, read independently: the block descriptor data cut to what
            // arrived, whole 16-byte descriptors, the empty ones skipped.
            let want: Vec<(u64, u32)> = if list.len() < 8 {
                Vec::new()
            } else {
                let bd_len = usize::from(u16::from_be_bytes([list[2], list[3]]));
                let body = &list[8..];
                body[..bd_len.min(body.len())]
                    .chunks_exact(16)
                    .map(|d| (be64(d), be32(&d[8..])))
                    .filter(|&(_, n)| n != 0)
                    .collect()
            };
            assert_eq!(got, want);
            assert!(
                list.len() < 8 || {
                    let bd_len = usize::from(u16::from_be_bytes([list[2], list[3]]));
                    (bd_len.min(list.len() - 8) / 16) as u64 <= u64::from(lun.max_unmap_descriptors)
                }
            );
            assert_eq!(
                parse_unmap(list, &lun).map(Iterator::count).ok(),
                Some(got.len())
            );
        }
    }
});
