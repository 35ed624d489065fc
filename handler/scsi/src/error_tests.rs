use super::*;

#[test]
fn errno_mapping() {
    let s = |e: i32, w: bool| ScsiError::from_errno(e, w);
    assert_eq!(s(5, false), Sense::unrecovered_read_error().into());
    assert_eq!(s(5, true), Sense::write_error().into());
    assert_eq!(s(-5, true), Sense::write_error().into());
    assert_eq!(s(28, true), Sense::space_allocation_failed().into());
    assert_eq!(s(122, true), Sense::space_allocation_failed().into());
    assert_eq!(s(30, true), Sense::write_protected().into());
    // Every connection-class errno (and ESHUTDOWN), the same for reads and writes.
    for e in [
        110, 107, 108, 104, 111, 103, 113, 112, 101, 100, 102, 32, 67, 77,
    ] {
        assert_eq!(s(e, true), s(e, false), "errno {e}");
        assert_eq!(
            s(e, false),
            Sense::not_ready_in_transition().into(),
            "errno {e}"
        );
    }
    for e in [11, 16, 4, 12] {
        assert_eq!(s(e, true), ScsiError::Busy, "errno {e}");
    }
    assert_eq!(s(19, false), Sense::lun_communication_failure().into());
    assert_eq!(s(95, true), Sense::invalid_opcode().into());
    for e in [22, 34, 0, 9999, i32::MIN] {
        assert_eq!(
            s(e, false),
            Sense::internal_target_failure().into(),
            "errno {e}"
        );
    }
}

#[test]
fn retryable_classification() {
    for e in [110, 107, 108, 104, 11, 16, 4, 12] {
        assert!(ScsiError::from_errno(e, true).is_retryable(), "errno {e}");
    }
    for e in [5, 28, 30, 22, 19] {
        assert!(!ScsiError::from_errno(e, true).is_retryable(), "errno {e}");
    }
    assert!(ScsiError::TaskSetFull.is_retryable());
    assert!(ScsiError::from(Sense::not_ready_becoming_ready()).is_retryable());
    assert!(ScsiError::from(Sense::power_on_reset()).is_retryable());
    assert!(!ScsiError::ReservationConflict.is_retryable());
}

#[test]
fn status_and_sense() {
    let e = ScsiError::from(Sense::lba_out_of_range());
    assert_eq!(e.status(), status::CHECK_CONDITION);
    assert_eq!(e.sense(), Some(Sense::lba_out_of_range()));
    assert_eq!(ScsiError::Busy.status(), status::BUSY);
    assert_eq!(ScsiError::Busy.sense(), None);
    assert_eq!(ScsiError::TaskSetFull.status(), status::TASK_SET_FULL);
    assert_eq!(ScsiError::TaskAborted.status(), status::TASK_ABORTED);
    assert_eq!(
        ScsiError::ReservationConflict.status(),
        status::RESERVATION_CONFLICT
    );
    assert!(!e.to_string().is_empty());
}
