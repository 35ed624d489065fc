//! Who holds a device's backend series (RBD, gluster), so that only the last holder removes
//! them: after a `dev_config` change the new backend registers the device's series before the
//! old one is dropped, and the old one's drop must not remove what the new one uses.

use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Holders per device name, and the extra label values each device used (errno names...).
#[derive(Default, Clone)]
pub struct Holders(Arc<Mutex<HashMap<String, Holder>>>);

#[derive(Default)]
struct Holder {
    count: usize,
    labels: BTreeSet<String>,
}

impl Holders {
    /// One more holder of `device`'s series.
    pub fn hold(&self, device: &str) {
        self.0.lock().entry(device.to_string()).or_default().count += 1;
    }

    /// `device` used the label value `label` (kept until its last holder goes).
    pub fn note(&self, device: &str, label: &str) {
        if let Some(h) = self.0.lock().get_mut(device) {
            if !h.labels.contains(label) {
                h.labels.insert(label.to_string());
            }
        }
    }

    /// One holder fewer; the noted label values when it was the last (remove the series
    /// then), None while others hold them.
    pub fn release(&self, device: &str) -> Option<BTreeSet<String>> {
        let mut m = self.0.lock();
        let h = m.get_mut(device)?;
        h.count = h.count.saturating_sub(1);
        if h.count > 0 {
            return None;
        }
        m.remove(device).map(|h| h.labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_holder_releases() {
        let h = Holders::default();
        h.hold("a");
        h.hold("a");
        h.note("a", "ENOMEDIUM");
        assert_eq!(h.release("a"), None);
        let labels = h.release("a").unwrap();
        assert!(labels.contains("ENOMEDIUM"));
        assert_eq!(h.release("a"), None, "nothing held any more");
    }
}
