use super::*;
use crate::cdb::Rw;

fn rw(blocks: u32) -> Rw {
    Rw {
        lba: 0,
        blocks,
        fua: false,
        dpo: false,
    }
}

#[test]
fn a_read_is_never_refused() {
    for have in [0, 200, 512, 1024, 10_000] {
        assert_eq!(check_buffer(&Cdb::Read(rw(2)), 512, have), Ok(()));
    }
}

#[test]
fn data_cdbs_with_data_out_must_match_exactly() {
    let iu = Err(Sense::invalid_field_in_command_iu());
    let w = Cdb::Write(rw(2));
    assert_eq!(check_buffer(&w, 512, 1024), Ok(()));
    assert_eq!(check_buffer(&w, 512, 512), iu);
    assert_eq!(check_buffer(&w, 512, 2048), iu);
    let wv = Cdb::WriteAndVerify {
        rw: rw(1),
        bytchk: 0,
    };
    assert_eq!(check_buffer(&wv, 512, 512), Ok(()));
    assert_eq!(check_buffer(&wv, 512, 0), iu);
    let caw = Cdb::CompareAndWrite {
        lba: 0,
        blocks: 1,
        fua: false,
    };
    assert_eq!(check_buffer(&caw, 512, 1024), Ok(()));
    assert_eq!(check_buffer(&caw, 512, 512), iu);
    assert_eq!(Sense::invalid_field_in_command_iu().asc, 0x0E);
    assert_eq!(Sense::invalid_field_in_command_iu().ascq, 0x03);
}

#[test]
fn other_data_out_commands_need_at_least_their_length() {
    let ws = Cdb::WriteSame {
        lba: 0,
        blocks: 4,
        unmap: false,
        anchor: false,
        ndob: false,
    };
    let short = Err(Sense::invalid_field_in_cdb_unknown());
    assert_eq!(check_buffer(&ws, 512, 0), short);
    assert_eq!(check_buffer(&ws, 512, 512), Ok(()));
    assert_eq!(check_buffer(&ws, 512, 4096), Ok(()));
    let ndob = Cdb::WriteSame {
        lba: 0,
        blocks: 4,
        unmap: true,
        anchor: false,
        ndob: true,
    };
    assert_eq!(check_buffer(&ndob, 512, 0), Ok(()));
    let unmap = Cdb::Unmap {
        anchor: false,
        param_len: 24,
    };
    assert_eq!(check_buffer(&unmap, 512, 16), short);
    assert_eq!(check_buffer(&unmap, 512, 24), Ok(()));
    let verify = Cdb::Verify {
        lba: 0,
        blocks: 4,
        bytchk: 1,
    };
    assert_eq!(check_buffer(&verify, 512, 512), short);
    assert_eq!(check_buffer(&verify, 512, 2048), Ok(()));
}
