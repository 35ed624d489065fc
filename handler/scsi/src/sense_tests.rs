use super::*;

#[test]
fn fixed_layout_is_byte_exact() {
    let mut out = [0xAAu8; SENSE_BUFFER_LEN];
    Sense::invalid_field_in_cdb(0x0102, Some(5)).to_fixed(&mut out);
    let mut want = [0u8; SENSE_BUFFER_LEN];
    want[0] = 0x70;
    want[2] = 0x05;
    want[7] = 0x0A;
    want[12] = 0x24;
    want[15] = 0x80 | 0x40 | 0x08 | 5;
    want[16] = 0x01;
    want[17] = 0x02;
    assert_eq!(out, want);
}

#[test]
fn fixed_info_sets_valid_when_it_fits() {
    let mut out = [0u8; SENSE_BUFFER_LEN];
    Sense::miscompare(0x1234_5678).to_fixed(&mut out);
    assert_eq!(out[0], 0xF0);
    assert_eq!(out[2], key::MISCOMPARE);
    assert_eq!(&out[3..7], &[0x12, 0x34, 0x56, 0x78]);
    assert_eq!((out[12], out[13]), (0x1D, 0x00));
    assert_eq!(out[15], 0);

    Sense::miscompare(1 << 40).to_fixed(&mut out);
    assert_eq!(out[0], 0x70, "no VALID when INFORMATION does not fit");
    assert_eq!(&out[3..7], &[0, 0, 0, 0]);
}

#[test]
fn param_list_pointer_has_cd_clear_and_no_bpv() {
    let mut out = [0u8; SENSE_BUFFER_LEN];
    Sense::invalid_field_in_param_list(9, None).to_fixed(&mut out);
    assert_eq!((out[12], out[15], out[16], out[17]), (0x26, 0x80, 0, 9));
}

#[test]
fn fixed_round_trips() {
    let cases = [
        Sense::invalid_opcode(),
        Sense::invalid_field_in_cdb(1, Some(7)),
        Sense::invalid_field_in_param_list(300, None),
        Sense::miscompare(17),
        Sense::not_ready_in_transition(),
        Sense::space_allocation_failed(),
    ];
    for s in cases {
        let mut out = [0u8; SENSE_BUFFER_LEN];
        s.to_fixed(&mut out);
        assert_eq!(Sense::from_bytes(&out), Some(s));
        assert_eq!(Sense::from_bytes(&out[..FIXED_LEN]), Some(s));
    }
}

#[test]
fn descriptor_round_trips() {
    let cases = [
        Sense::no_sense(),
        Sense::miscompare(1 << 40),
        Sense::invalid_field_in_cdb(3, None),
        Sense {
            info: Some(5),
            ..Sense::invalid_field_in_param_list(2, Some(1))
        },
    ];
    for s in cases {
        let mut out = [0u8; 64];
        let n = s.to_descriptor(&mut out);
        assert_eq!(out[0], 0x72);
        assert_eq!(usize::from(out[7]) + 8, n);
        assert_eq!(Sense::from_bytes(&out[..n]), Some(s));
    }
}

#[test]
fn descriptor_truncated_output_does_not_panic() {
    let mut out = [0u8; 3];
    assert_eq!(Sense::miscompare(1).to_descriptor(&mut out), 20);
    assert_eq!(out, [0x72, key::MISCOMPARE, 0x1D]);
}

#[test]
fn from_bytes_rejects_other_formats() {
    assert_eq!(Sense::from_bytes(&[]), None);
    assert_eq!(Sense::from_bytes(&[0x00, 0x05]), None);
    assert_eq!(Sense::from_bytes(&[0x70]).map(|s| s.key), Some(0));
    // Truncated descriptor list with a huge descriptor length.
    assert!(Sense::from_bytes(&[0x72, 5, 0x24, 0, 0, 0, 0, 250, 2, 200]).is_some());
}

#[test]
fn named_constructors() {
    let t = |s: Sense| (s.key, s.asc, s.ascq);
    assert_eq!(t(Sense::invalid_opcode()), (5, 0x20, 0));
    assert_eq!(t(Sense::param_list_length_error()), (5, 0x1A, 0));
    assert_eq!(t(Sense::lba_out_of_range()), (5, 0x21, 0));
    assert_eq!(t(Sense::unrecovered_read_error()), (3, 0x11, 0));
    assert_eq!(t(Sense::write_error()), (3, 0x0C, 0));
    assert_eq!(t(Sense::internal_target_failure()), (4, 0x44, 0));
    assert_eq!(t(Sense::capacity_data_changed()), (6, 0x2A, 9));
    assert_eq!(t(Sense::mode_parameters_changed()), (6, 0x2A, 1));
    assert_eq!(t(Sense::power_on_reset()), (6, 0x29, 0));
    assert_eq!(t(Sense::write_protected()), (7, 0x27, 0));
    assert_eq!(t(Sense::space_allocation_failed()), (7, 0x27, 7));
    assert_eq!(t(Sense::not_ready_in_transition()), (2, 4, 0x0A));
    assert_eq!(t(Sense::not_ready_becoming_ready()), (2, 4, 1));
    assert_eq!(t(Sense::lun_communication_failure()), (2, 8, 0));
    assert_eq!(t(Sense::saving_params_unsupported()), (5, 0x39, 0));
}
