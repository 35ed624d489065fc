//! Parsing of Data-Out parameter lists (MODE SELECT, UNMAP).

mod mode_select;
mod unmap;

pub use mode_select::{mode_select, ModeChanges};
pub use unmap::{parse_unmap, UnmapDescriptors};

#[cfg(test)]
mod tests;
