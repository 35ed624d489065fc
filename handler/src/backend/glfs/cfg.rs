//! The `glfs` cfgstring: `<volume>@<server>[,<server>...]/<path>`, and the backend's options.
//!
//! tcmu-runner's form `glfs/<volume>@<host>/<path>` is accepted unchanged. Beyond it, several
//! volfile servers separated by commas, each `[rdma+]<host>[:<port>]` (an IPv6 address in
//! brackets: `[::1]:24007`). The path is relative to the volume's root (a leading `/` is
//! optional); its directory must exist on the volume, the file is created if missing.

use gfapi::Server;
use std::time::Duration;

/// glusterd's default port.
pub const DEFAULT_PORT: u16 = 24007;

/// The options this backend takes after the cfgstring (`;key=value`).
pub const OPTION_KEYS: &[&str] = &["ping_timeout", "gfapi_log"];

/// A parsed `glfs` cfgstring with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlfsConfig {
    /// The volume's name.
    pub volume: String,
    /// Volfile servers, in the order given.
    pub servers: Vec<Server>,
    /// Path of the LUN's file on the volume, starting with `/`.
    pub path: String,
    /// `ping_timeout=<secs>`: a per-client ping-timeout set on this connection, used as the
    /// backend tier instead of the volume's `network.ping-timeout`.
    pub ping_timeout: Option<Duration>,
    /// `gfapi_log=<file>`: gfapi's own log (level WARNING); none by default.
    pub gfapi_log: Option<String>,
}

impl GlfsConfig {
    /// `vol@h1:24007,h2:24007/path`, for logs.
    #[must_use]
    pub fn describe(&self) -> String {
        format!(
            "{}@{}{}",
            self.volume,
            servers_list(&self.servers),
            self.path
        )
    }

    /// The directory of the file (`/` for a file at the root).
    #[must_use]
    pub fn dir(&self) -> &str {
        match self.path.rfind('/') {
            Some(0) | None => "/",
            Some(i) => &self.path[..i],
        }
    }
}

/// `h1:24007,h2:24007`.
#[must_use]
pub fn servers_list(servers: &[Server]) -> String {
    servers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn valid_volume(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn parse_server(s: &str) -> Result<Server, String> {
    let (transport, rest) = match s.split_once('+') {
        Some((t @ ("tcp" | "rdma"), rest)) => (t, rest),
        Some((t, _)) => {
            return Err(format!(
                "unknown transport {t:?} in server {s:?} (tcp or rdma)"
            ))
        }
        None => ("tcp", s),
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("server {s:?}: unclosed [ in an IPv6 address"))?;
        match after {
            "" => (h, None),
            p => (
                h,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("server {s:?}: expected :<port> after ]"))?,
                ),
            ),
        }
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(format!("server {s:?} has an empty host"));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
    {
        return Err(format!("host {host:?} is not a valid host name or address"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(format!("port {p:?} of host {host} is not a port number")),
        },
    };
    Ok(Server {
        transport: transport.to_string(),
        host: host.to_string(),
        port,
    })
}

/// Parse the cfgstring (the part after `glfs/`, options removed) and the backend's options.
///
/// # Errors
/// What is wrong, naming the part (volume, host, port, path, option).
pub fn parse(cfgstring: &str, options: &[(&str, &str)]) -> Result<GlfsConfig, String> {
    const SYNTAX: &str = "expected <volume>@<host>[,<host>...]/<path>";
    if cfgstring.contains(['\n', '\0']) {
        return Err(
            "the cfgstring contains a newline or NUL (was it written with echo instead of echo -n?)"
                .into(),
        );
    }
    let (volume, rest) = cfgstring
        .split_once('@')
        .ok_or_else(|| format!("{SYNTAX}: no @ after the volume name"))?;
    if !valid_volume(volume) {
        return Err(format!(
            "volume name {volume:?} is not valid (letters, digits, -, _ and . only)"
        ));
    }
    // The server list ends at the first '/' outside brackets.
    let mut depth = 0usize;
    let cut = rest.char_indices().find(|&(_, c)| {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        c == '/' && depth == 0
    });
    let Some((cut, _)) = cut else {
        if depth > 0 {
            return Err(format!("{SYNTAX}: unclosed [ in an IPv6 address"));
        }
        return Err(format!("{SYNTAX}: no /<path> after the host"));
    };
    let (servers, path) = (&rest[..cut], &rest[cut + 1..]);
    if servers.is_empty() {
        return Err(format!("{SYNTAX}: no host after @"));
    }
    let servers = servers
        .split(',')
        .map(parse_server)
        .collect::<Result<Vec<_>, _>>()?;
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        return Err(format!("{SYNTAX}: the path is empty"));
    }
    if path.ends_with('/') {
        return Err(format!("path /{path} names a directory, expected a file"));
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!("path /{path} has an empty, . or .. component"));
    }
    let mut cfg = GlfsConfig {
        volume: volume.to_string(),
        servers,
        path: format!("/{path}"),
        ping_timeout: None,
        gfapi_log: None,
    };
    for (k, v) in options {
        match *k {
            "ping_timeout" => {
                let s = v.strip_suffix('s').unwrap_or(v);
                match s.parse::<u64>() {
                    Ok(n @ 1..=1800) => cfg.ping_timeout = Some(Duration::from_secs(n)),
                    _ => {
                        return Err(format!(
                            "ping_timeout={v}: expected whole seconds from 1 to 1800"
                        ))
                    }
                }
            }
            "gfapi_log" if !v.is_empty() => cfg.gfapi_log = Some((*v).to_string()),
            "gfapi_log" => return Err("gfapi_log= needs a file name".into()),
            _ => {}
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(host: &str, port: u16) -> Server {
        Server {
            transport: "tcp".into(),
            host: host.into(),
            port,
        }
    }

    #[test]
    fn tcmu_runner_form_unchanged() {
        let c = parse("vol0@gluster1/dir/lun0.img", &[]).unwrap();
        assert_eq!(c.volume, "vol0");
        assert_eq!(c.servers, vec![srv("gluster1", 24007)]);
        assert_eq!(c.path, "/dir/lun0.img");
        assert_eq!(c.dir(), "/dir");
        assert_eq!(parse("v@h//a.img", &[]).unwrap().dir(), "/");
    }

    #[test]
    fn several_servers_ports_transports_and_ipv6() {
        let c = parse(
            "v@h1,h2:24008,rdma+h3,[::1]:1234,[fe80::1]/a",
            &[("ping_timeout", "7")],
        )
        .unwrap();
        assert_eq!(c.servers.len(), 5);
        assert_eq!(c.servers[1], srv("h2", 24008));
        assert_eq!(c.servers[2].transport, "rdma");
        assert_eq!(c.servers[3], srv("::1", 1234));
        assert_eq!(c.ping_timeout, Some(Duration::from_secs(7)));
        assert_eq!(
            c.describe(),
            "v@h1:24007,h2:24008,h3:24007 (rdma),[::1]:1234,[fe80::1]:24007/a"
        );
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let e = |s: &str| parse(s, &[]).unwrap_err();
        assert!(e("vol/a").contains("no @"));
        assert!(e("v o@h/a").contains("volume name \"v o\""));
        assert!(e("v@h").contains("no /<path>"));
        assert!(e("v@/a").contains("no host"));
        assert!(e("v@h:0/a").contains("port \"0\" of host h"));
        assert!(e("v@h:x/a").contains("port \"x\""));
        assert!(e("v@h,,h2/a").contains("empty host"));
        assert!(e("v@udp+h/a").contains("transport \"udp\""));
        assert!(e("v@h/").contains("path is empty"));
        assert!(e("v@h/d/").contains("directory"));
        assert!(e("v@h/a/../b").contains(".."));
        assert!(e("v@h/a\n").contains("newline"));
        assert!(e("v@[::1/a").contains("unclosed"));
        let e = parse("v@h/a", &[("ping_timeout", "0")]).unwrap_err();
        assert!(e.contains("ping_timeout=0"), "{e}");
    }
}
