//! Parsing of Data-Out parameter lists (MODE SELECT, UNMAP, EXTENDED COPY).

mod mode_select;
mod unmap;
pub mod xcopy;

pub use mode_select::{mode_select, ModeChanges};
pub use unmap::{parse_unmap, UnmapDescriptors};

#[cfg(test)]
mod tests;
