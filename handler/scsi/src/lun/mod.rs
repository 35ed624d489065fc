//! [`LunInfo`]: what the emulation needs to know about a logical unit.

mod validate;

use crate::sense::Sense;

/// Backend capabilities that change what we advertise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Caps {
    /// The backend can deallocate blocks (UNMAP, WRITE SAME with UNMAP);
    /// unmapped blocks read back as zeroes.
    pub unmap: bool,
    /// The backend can write zeroes efficiently (WRITE SAME).
    pub write_zeroes: bool,
    /// The backend honours FUA (DPOFUA is advertised).
    pub fua: bool,
    /// The backend can flush a volatile cache (SYNCHRONIZE CACHE).
    pub flush: bool,
    /// The backend is thin provisioned.
    pub thin: bool,
    /// COMPARE AND WRITE is supported.
    pub compare_and_write: bool,
}

/// Static description of a logical unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunInfo {
    /// Logical block size in bytes (512, 4096, ...).
    pub block_size: u32,
    /// Capacity in logical blocks.
    pub num_blocks: u64,
    /// T10 vendor identification, space padded.
    pub vendor: [u8; 8],
    /// Product identification, space padded.
    pub product: [u8; 16],
    /// Product revision level.
    pub revision: [u8; 4],
    /// ASCII unit serial number (VPD 0x80), from configfs `wwn/vpd_unit_serial`.
    pub serial: String,
    /// Volatile write cache enabled (WCE of the caching mode page).
    pub write_cache: bool,
    /// Backend capabilities.
    pub caps: Caps,
    /// MAXIMUM TRANSFER LENGTH in blocks (0 = no limit), from `hw_max_sectors`.
    pub max_xfer_blocks: u32,
    /// OPTIMAL TRANSFER LENGTH in blocks (0 = not reported).
    pub opt_xfer_blocks: u32,
    /// MAXIMUM UNMAP LBA COUNT.
    pub max_unmap_blocks: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub max_unmap_descriptors: u32,
    /// OPTIMAL UNMAP GRANULARITY in blocks.
    pub unmap_granularity: u32,
    /// MAXIMUM WRITE SAME LENGTH in blocks (0 = no limit).
    pub max_write_same_blocks: u64,
    /// MAXIMUM COMPARE AND WRITE LENGTH in blocks.
    pub max_compare_write_blocks: u8,
    /// Rotating medium (false reports a non-rotating medium in VPD 0xB1).
    pub rotational: bool,
    /// The ALUA target port groups, when known (None: no ALUA: TPGS 0,
    /// REPORT TARGET PORT GROUPS refused).
    pub alua: Option<crate::alua::Alua>,
}

/// LIO's IEEE OUI used in NAA designators.
const LIO_OUI: u32 = 0x00_14_05;

impl LunInfo {
    /// A LUN with LIO-like defaults: vendor `LIO-ORG`, product
    /// `TCMU device`, revision `0002`, write cache off, no optional
    /// capabilities, 128-block maximum transfer (TCMU's default
    /// `hw_max_sectors`), unmap limits 8192 blocks / 16 descriptors,
    /// granularity 1, WRITE SAME up to 65536 blocks, COMPARE AND WRITE 1 block.
    pub fn new(block_size: u32, num_blocks: u64, serial: &str) -> LunInfo {
        LunInfo {
            block_size,
            num_blocks,
            vendor: *b"LIO-ORG ",
            product: *b"TCMU device     ",
            revision: *b"0002",
            serial: serial.to_owned(),
            write_cache: false,
            caps: Caps::default(),
            max_xfer_blocks: 128,
            opt_xfer_blocks: 128,
            max_unmap_blocks: 8192,
            max_unmap_descriptors: 16,
            unmap_granularity: 1,
            max_write_same_blocks: 65536,
            max_compare_write_blocks: 1,
            rotational: false,
            alua: None,
        }
    }

    /// SBC range check: `lba + blocks` must not exceed `num_blocks` (and must
    /// not overflow), else LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub fn check_range(&self, lba: u64, blocks: u64) -> Result<(), Sense> {
        match lba.checked_add(blocks) {
            Some(end) if end <= self.num_blocks => Ok(()),
            _ => Err(Sense::lba_out_of_range()),
        }
    }

    /// The highest LBA (0 for an empty LUN).
    pub fn last_lba(&self) -> u64 {
        self.num_blocks.saturating_sub(1)
    }

    /// 16-byte NAA IEEE Registered Extended designator (NAA 6) with LIO's
    /// OUI, whose vendor-specific part is the hexadecimal digits of the unit
    /// serial (other characters skipped) packed one per nibble, starting in
    /// the low nibble of byte 3 — the same value LIO derives from the serial.
    pub fn naa_designator(&self) -> [u8; 16] {
        let mut d = [0u8; 16];
        let head = (0x6u32 << 28) | (LIO_OUI << 4);
        d[..4].copy_from_slice(&head.to_be_bytes());
        // Nibble index 7 is the low nibble of byte 3; 32 nibbles in all.
        let digits = self.serial.chars().filter_map(|ch| ch.to_digit(16));
        for (nibble, v) in (7usize..32).zip(digits) {
            let v = u8::try_from(v).unwrap_or(0);
            if let Some(b) = d.get_mut(nibble / 2) {
                *b |= if nibble % 2 == 0 { v << 4 } else { v };
            }
        }
        d
    }
}

#[cfg(test)]
mod tests;
