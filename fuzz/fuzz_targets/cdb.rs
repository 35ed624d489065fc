//! Fuzz the CDB decoder and the emulation of whatever it accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcmu_scsi::cdb::{data_in_len, data_out_len, decode};
use tcmu_scsi::emulate::respond;
use tcmu_scsi::lun::{Caps, LunInfo};
use tcmu_scsi::sense::{key, Sense, SENSE_BUFFER_LEN};

fuzz_target!(|data: &[u8]| {
    // First byte picks the LUN flavour, the rest is the CDB.
    let (flavour, cdb) = match data.split_first() {
        Some((f, rest)) => (*f, rest),
        None => (0, data),
    };
    let mut lun = LunInfo::new(
        if flavour & 1 != 0 { 4096 } else { 512 },
        1 << (flavour % 48),
        "fuzz-serial-0123",
    );
    lun.caps = Caps {
        unmap: flavour & 2 != 0,
        write_zeroes: flavour & 4 != 0,
        fua: flavour & 8 != 0,
        flush: true,
        thin: flavour & 16 != 0,
        compare_and_write: flavour & 32 != 0,
    };
    lun.write_cache = flavour & 64 != 0;

    let check_sense = |s: Sense| {
        assert_eq!(s.key, key::ILLEGAL_REQUEST);
        let mut buf = [0u8; SENSE_BUFFER_LEN];
        s.to_fixed(&mut buf);
        assert_eq!(Sense::from_bytes(&buf), Some(s));
    };

    match decode(cdb) {
        Err(s) => check_sense(s),
        Ok(c) => {
            let _ = data_out_len(&c, lun.block_size);
            let _ = data_in_len(&c, lun.block_size);
            let _ = lun.validate(&c);
            let mut out = [0u8; 4096];
            match respond(&c, &lun, &mut out) {
                Ok(n) => assert!(n <= 4096, "response length {n}"),
                Err(s) => check_sense(s),
            }
            // A tiny buffer must not change the reported length.
            let mut small = [0u8; 7];
            let mut full = [0u8; 4096];
            assert_eq!(
                respond(&c, &lun, &mut small).ok(),
                respond(&c, &lun, &mut full).ok()
            );
        }
    }
});
