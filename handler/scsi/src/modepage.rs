//! The mode pages we implement (shared by MODE SENSE and MODE SELECT).

use crate::lun::LunInfo;

/// Caching mode page code.
pub const CACHING: u8 = 0x08;
/// Control mode page code.
pub const CONTROL: u8 = 0x0A;
/// "Return all pages" page code.
pub const ALL_PAGES: u8 = 0x3F;

/// Length of the caching page (header included).
pub const CACHING_LEN: usize = 20;
/// Length of the control page (header included).
pub const CONTROL_LEN: usize = 12;

/// WCE bit in byte 2 of the caching page.
pub const WCE: u8 = 0x04;

/// Page control (PC) values of MODE SENSE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageControl {
    /// Current values.
    Current,
    /// Mask of changeable bits.
    Changeable,
    /// Default values.
    Default,
}

/// Caching mode page (SBC-3 6.4.5). Only WCE is changeable; the default
/// value of WCE is the LUN's configured `write_cache`.
pub fn caching(pc: PageControl, lun: &LunInfo) -> [u8; CACHING_LEN] {
    let mut p = [0u8; CACHING_LEN];
    p[0] = CACHING;
    p[1] = 0x12;
    p[2] = match pc {
        PageControl::Changeable => WCE,
        PageControl::Current | PageControl::Default if lun.write_cache => WCE,
        _ => 0,
    };
    p
}

/// Control mode page (SPC-4 7.5.8): D_SENSE=0 (fixed format sense),
/// QUEUE ALGORITHM MODIFIER=1 (commands may be reordered: we run them
/// concurrently), TAS=1 (aborted commands report TASK ABORTED, LIO's
/// default). Nothing is changeable.
pub fn control(pc: PageControl) -> [u8; CONTROL_LEN] {
    let mut p = [0u8; CONTROL_LEN];
    p[0] = CONTROL;
    p[1] = 0x0A;
    if pc != PageControl::Changeable {
        p[3] = 0x10; // QUEUE ALGORITHM MODIFIER = 1
        p[4] = 0x80; // TAS
    }
    p
}
