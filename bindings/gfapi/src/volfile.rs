//! Reading facts out of the client volfile glusterd hands to gfapi.

use std::time::Duration;

/// gluster's default `network.ping-timeout` when the volume does not set one.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(42);

/// The `ping-timeout` of the volume's `protocol/client` translators (the volume's
/// `network.ping-timeout`), or `None` when the volfile sets none (gluster's default of 42 s
/// applies). With several clients (bricks), the largest value.
#[must_use]
pub fn ping_timeout(volfile: &str) -> Option<Duration> {
    let mut best: Option<Duration> = None;
    let mut in_client = false;
    let mut current: Option<Duration> = None;
    for line in volfile.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("volume"), Some(_), None) => {
                in_client = false;
                current = None;
            }
            (Some("type"), Some(t), None) => in_client = t == "protocol/client",
            (Some("option"), Some("ping-timeout"), Some(v)) => {
                current = v.parse::<u64>().ok().map(Duration::from_secs);
            }
            (Some("end-volume"), None, None) => {
                if in_client {
                    if let Some(c) = current {
                        best = Some(best.map_or(c, |b| b.max(c)));
                    }
                }
                in_client = false;
                current = None;
            }
            _ => {}
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOLFILE: &str = "volume v-client-0
    type protocol/client
    option ping-timeout 5
    option remote-host LOCALHOST
    option remote-subvolume /bricks/b0
end-volume

volume v-write-behind
    type performance/write-behind
    option ping-timeout 99
    subvolumes v-client-0
end-volume
";

    #[test]
    fn reads_the_clients_ping_timeout_only() {
        assert_eq!(ping_timeout(VOLFILE), Some(Duration::from_secs(5)));
        let two = format!(
            "{VOLFILE}volume v-client-1\n type protocol/client\n option ping-timeout 7\nend-volume\n"
        );
        assert_eq!(ping_timeout(&two), Some(Duration::from_secs(7)));
        assert_eq!(
            ping_timeout("volume v-client-0\n type protocol/client\nend-volume\n"),
            None
        );
        assert_eq!(ping_timeout(""), None);
    }
}
