//! Fuzz the EXTENDED COPY(LID1) parameter list parser
//! (`tcmu_scsi::params::xcopy::parse_extended_copy`).
//!
//! The input is the parameter list as the initiator sent it. Asserts: no panic; a refusal is
//! ILLEGAL REQUEST sense, or COPY ABORTED for a segment naming a CSCD that is not in the list
//! (as LIO answers), and survives fixed-format encoding; an accepted list keeps within the
//! advertised limits (CSCDs, segments), names only CSCDs it carries, has a list identifier
//! consistent with its LIST ID USAGE, and, written out again in the SPC-4 layout, parses to
//! the same list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcmu_scsi::params::xcopy::{
    parse_extended_copy, CopyList, ListIdUsage, CSCD_IDENTIFICATION, MAX_CSCDS, MAX_SEGMENTS,
    SEGMENT_BLOCK_TO_BLOCK,
};
use tcmu_scsi::sense::{key, Sense, SENSE_BUFFER_LEN};

/// The list in the SPC-4 layout the parser reads.
fn encode(c: &CopyList) -> Vec<u8> {
    let usage = match c.usage {
        ListIdUsage::Hold => 0u8,
        ListIdUsage::NoHold => 2,
        ListIdUsage::Discard => 3,
    };
    let cscd_len = u16::try_from(c.cscds.len() * 32).expect("few CSCDs");
    let seg_len = u32::try_from(c.segments.len() * 28).expect("few segments");
    let mut v = vec![c.list_id, usage << 3];
    v.extend_from_slice(&cscd_len.to_be_bytes());
    v.extend_from_slice(&[0; 4]);
    v.extend_from_slice(&seg_len.to_be_bytes());
    v.extend_from_slice(&[0; 4]); // INLINE DATA LENGTH
    for d in &c.cscds {
        v.extend_from_slice(&[CSCD_IDENTIFICATION, 0, 0, 0, 0x01, 0x03, 0, 16]);
        v.extend_from_slice(&d.naa);
        v.extend_from_slice(&[0; 4]);
        v.extend_from_slice(&(d.block_len & 0x00FF_FFFF).to_be_bytes());
    }
    for s in &c.segments {
        v.extend_from_slice(&[SEGMENT_BLOCK_TO_BLOCK, u8::from(s.dc) << 1, 0, 0x18]);
        v.extend_from_slice(&u16::try_from(s.src).expect("index").to_be_bytes());
        v.extend_from_slice(&u16::try_from(s.dst).expect("index").to_be_bytes());
        v.extend_from_slice(&[0; 2]);
        v.extend_from_slice(&s.blocks.to_be_bytes());
        v.extend_from_slice(&s.src_lba.to_be_bytes());
        v.extend_from_slice(&s.dst_lba.to_be_bytes());
    }
    v
}

fuzz_target!(|list: &[u8]| {
    match parse_extended_copy(list) {
        Err(s) => {
            assert!(
                s.key == key::ILLEGAL_REQUEST || s == Sense::copy_target_not_reachable(),
                "sense {s:?}"
            );
            let mut buf = [0u8; SENSE_BUFFER_LEN];
            s.to_fixed(&mut buf);
            assert_eq!(Sense::from_bytes(&buf), Some(s));
        }
        Ok(c) => {
            assert!(c.cscds.len() <= MAX_CSCDS && c.segments.len() <= MAX_SEGMENTS);
            for s in &c.segments {
                assert!(s.src < c.cscds.len() && s.dst < c.cscds.len(), "{s:?}");
            }
            for d in &c.cscds {
                assert_eq!(d.naa[0] & 0xF0, 0x60, "not NAA 6: {d:?}");
                assert!(d.block_len <= 0x00FF_FFFF);
            }
            if c.usage == ListIdUsage::Discard {
                assert_eq!(c.list_id, 0);
            }
            let again = encode(&c);
            assert_eq!(parse_extended_copy(&again), Ok(c), "{again:02x?}");
        }
    }
});
