//! Fuzz the MODE SELECT(6)/(10) parameter list parser (`tcmu_scsi::params::mode_select`).
//!
//! The first byte picks the LUN (block size, capacity, write cache) and the CDB flags (6 or
//! 10 bytes, PF, SP); the rest is the parameter list. Asserts: no panic; a refusal is ILLEGAL
//! REQUEST sense that survives fixed-format encoding; PF=0 and SP=1 are always refused and an
//! empty list is no change; a change of the write cache is only reported when the list holds
//! a caching page; and, whatever the input, what MODE SENSE returns for the same LUN (all
//! pages, current values) is accepted back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcmu_scsi::cdb::Cdb;
use tcmu_scsi::emulate::respond;
use tcmu_scsi::lun::LunInfo;
use tcmu_scsi::params::{mode_select, ModeChanges};
use tcmu_scsi::sense::{key, Sense, SENSE_BUFFER_LEN};

fn check_sense(s: Sense) {
    assert!(
        s.key == key::ILLEGAL_REQUEST,
        "sense key {:#x} for a parameter list",
        s.key
    );
    let mut buf = [0u8; SENSE_BUFFER_LEN];
    s.to_fixed(&mut buf);
    assert_eq!(Sense::from_bytes(&buf), Some(s));
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, list)) = data.split_first() else {
        return;
    };
    let ten = sel & 1 != 0;
    let pf = sel & 2 == 0;
    let sp = sel & 4 != 0;
    let block_size = if sel & 8 != 0 { 4096 } else { 512 };
    let num_blocks = [1000u64, u64::from(u32::MAX), 1 << 40][usize::from((sel >> 4) % 3)];
    let mut lun = LunInfo::new(block_size, num_blocks, "fuzz");
    lun.write_cache = sel & 0x80 != 0;

    match mode_select(ten, pf, sp, list, &lun) {
        Err(s) => check_sense(s),
        Ok(ch) => {
            assert!(pf && !sp, "PF=0 or SP=1 accepted");
            if list.is_empty() {
                assert_eq!(ch, ModeChanges::default());
            }
            if ch.write_cache.is_some() {
                let header = if ten { 8 } else { 4 };
                assert!(
                    list.len() >= header + 20,
                    "a caching change without a caching page"
                );
            }
        }
    }

    // MODE SENSE's answer, header fields that MODE SELECT reserves cleared, is accepted back
    // without a change to anything but WCE (which keeps its value).
    let cdb = Cdb::ModeSense {
        ten,
        dbd: sel & 0x40 != 0,
        llbaa: ten && sel & 0x20 != 0,
        pc: 0,
        page: 0x3F,
        subpage: 0,
        alloc_len: 1024,
    };
    let mut out = [0u8; 1024];
    let n = respond(&cdb, &lun, &mut out).expect("MODE SENSE of every page");
    let mut back = out[..n].to_vec();
    back[0] = 0;
    if ten {
        back[1] = 0;
    }
    match mode_select(ten, true, false, &back, &lun) {
        Ok(ch) => assert_eq!(ch.write_cache, Some(lun.write_cache), "{back:02x?}"),
        Err(s) => panic!("MODE SENSE output refused: {s:?} for {back:02x?}"),
    }
});
