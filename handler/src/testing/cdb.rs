//! CDB builders (big-endian fields per SBC-3/SPC-4), the commands a test sends through
//! [`super::Harness`].

/// READ(16) of `blocks` blocks at `lba`.
#[must_use]
pub fn read16(lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x88;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// WRITE(16); `fua` sets FUA.
#[must_use]
pub fn write16(lba: u64, blocks: u32, fua: bool) -> [u8; 16] {
    let mut c = read16(lba, blocks);
    c[0] = 0x8A;
    if fua {
        c[1] |= 0x08;
    }
    c
}

/// READ(10).
#[must_use]
pub fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x28;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// SYNCHRONIZE CACHE(16) of the whole LUN.
#[must_use]
pub fn sync16() -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x91;
    c
}

/// WRITE SAME(16); `unmap` and `ndob` set those bits.
#[must_use]
pub fn write_same16(lba: u64, blocks: u32, unmap: bool, ndob: bool) -> [u8; 16] {
    let mut c = read16(lba, blocks);
    c[0] = 0x93;
    if unmap {
        c[1] |= 0x08;
    }
    if ndob {
        c[1] |= 0x01;
    }
    c
}

/// COMPARE AND WRITE of `blocks` blocks (Data-Out: compare data, then write data).
#[must_use]
pub fn caw(lba: u64, blocks: u8) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x89;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[13] = blocks;
    c
}

/// UNMAP with a parameter list of `param_len` bytes.
#[must_use]
pub fn unmap(param_len: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x42;
    c[7..9].copy_from_slice(&param_len.to_be_bytes());
    c
}

/// UNMAP parameter list with the given (lba, blocks) descriptors.
#[must_use]
pub fn unmap_params(ranges: &[(u64, u32)]) -> Vec<u8> {
    let mut p = vec![0u8; 8];
    for &(lba, n) in ranges {
        p.extend_from_slice(&lba.to_be_bytes());
        p.extend_from_slice(&n.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
    }
    let data_len = u16::try_from(p.len() - 2).unwrap();
    let desc_len = u16::try_from(p.len() - 8).unwrap();
    p[0..2].copy_from_slice(&data_len.to_be_bytes());
    p[2..4].copy_from_slice(&desc_len.to_be_bytes());
    p
}

/// INQUIRY; `evpd` asks for VPD page `page`.
#[must_use]
pub fn inquiry(evpd: bool, page: u8, alloc: u16) -> [u8; 6] {
    let a = alloc.to_be_bytes();
    [0x12, u8::from(evpd), page, a[0], a[1], 0]
}

/// READ CAPACITY(16) (SERVICE ACTION IN(16)).
#[must_use]
pub fn read_capacity16(alloc: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x9E;
    c[1] = 0x10;
    c[10..14].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// MODE SENSE(10) of `page`, block descriptors disabled.
#[must_use]
pub fn mode_sense10(page: u8, alloc: u16) -> [u8; 10] {
    let a = alloc.to_be_bytes();
    [0x5A, 0x08, page, 0, 0, 0, 0, a[0], a[1], 0]
}

/// MODE SELECT(10), page format.
#[must_use]
pub fn mode_select10(param_len: u16) -> [u8; 10] {
    let a = param_len.to_be_bytes();
    [0x55, 0x10, 0, 0, 0, 0, 0, a[0], a[1], 0]
}

/// VERIFY(16); `bytchk` compares with the Data-Out.
#[must_use]
pub fn verify16(lba: u64, blocks: u32, bytchk: bool) -> [u8; 16] {
    let mut c = read16(lba, blocks);
    c[0] = 0x8F;
    if bytchk {
        c[1] |= 0x02;
    }
    c
}

/// TEST UNIT READY.
#[must_use]
pub fn test_unit_ready() -> [u8; 6] {
    [0; 6]
}

/// READ CAPACITY(10).
#[must_use]
pub fn read_capacity10() -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x25;
    c
}

/// WRITE(10).
#[must_use]
pub fn write10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = read10(lba, blocks);
    c[0] = 0x2A;
    c
}

/// VERIFY(10); `bytchk` compares with the Data-Out.
#[must_use]
pub fn verify10(lba: u32, blocks: u16, bytchk: bool) -> [u8; 10] {
    let mut c = read10(lba, blocks);
    c[0] = 0x2F;
    if bytchk {
        c[1] |= 0x02;
    }
    c
}

/// WRITE SAME(10); `unmap` sets UNMAP.
#[must_use]
pub fn write_same10(lba: u32, blocks: u16, unmap: bool) -> [u8; 10] {
    let mut c = read10(lba, blocks);
    c[0] = 0x41;
    if unmap {
        c[1] |= 0x08;
    }
    c
}

/// REPORT LUNS.
#[must_use]
pub fn report_luns(alloc: u32) -> [u8; 12] {
    let mut c = [0u8; 12];
    c[0] = 0xA0;
    c[6..10].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// A CDB of the length the kernel copies for `opcode` (`scsi_command_size`), zero apart from
/// the opcode; for the variable-length opcode 0x7F a 32-byte CDB (ADDITIONAL CDB LENGTH 24).
#[must_use]
pub fn bare(opcode: u8) -> Vec<u8> {
    const GROUP_LEN: [usize; 8] = [6, 10, 10, 12, 16, 12, 10, 10];
    if opcode == 0x7F {
        let mut c = vec![0u8; 32];
        c[0] = 0x7F;
        c[7] = 24;
        return c;
    }
    let mut c = vec![0u8; GROUP_LEN[usize::from(opcode >> 5)]];
    c[0] = opcode;
    c
}

/// GET LBA STATUS (SERVICE ACTION IN(16), 12h) from `lba` with `alloc` bytes of answer.
#[must_use]
pub fn get_lba_status(lba: u64, alloc: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x9E;
    c[1] = 0x12;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// The `(lba, blocks, provisioning status)` descriptors of a GET LBA STATUS answer
/// (status 0: mapped, 1: deallocated).
#[must_use]
pub fn lba_status_descriptors(data_in: &[u8]) -> Vec<(u64, u32, u8)> {
    let Some(len) = data_in.get(0..4) else {
        return Vec::new();
    };
    let avail = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize + 4;
    data_in[8.min(data_in.len())..avail.min(data_in.len())]
        .chunks_exact(16)
        .map(|d| {
            let mut lba = [0u8; 8];
            lba.copy_from_slice(&d[0..8]);
            (
                u64::from_be_bytes(lba),
                u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
                d[12] & 0x0F,
            )
        })
        .collect()
}
