//! Which of a VM's addresses `vmr ssh` tries, in which order, and how it
//! knows one is ready: an sshd's banner read from it, not a TCP connect
//! (networks that accept any connection, and a guest whose port opens
//! before sshd answers, fool a connect).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncBufReadExt as _;
use vmr_proto::v1 as pb;

/// How far the host is from an address, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reach {
    /// A card on a nat, routed or isolated network, its address in the
    /// network's subnet: libvirt gives the host the gateway address on the
    /// network's bridge, so the host reaches the guest directly.
    HostNetwork,
    /// A card on an open or bridged network (or one the daemon did not
    /// list) whose address a DHCP server or the guest agent reported: some
    /// live segment handed it out, which the host may well be on.
    Leased,
    /// A static address on such a network: whatever the user wrote, on a
    /// segment the host may not be on.
    Static,
    /// A macvtap card: the host never reaches its own macvtap guest through
    /// the lower link, so it is tried last (for a daemon on another host).
    Macvtap,
}

/// One address to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub ip: Ipv4Addr,
    pub network: String,
    /// The network's mode as the daemon lists it; empty when unlisted.
    pub mode: String,
    /// static | dhcp | agent
    pub source: String,
    pub reach: Reach,
}

impl std::fmt::Display for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = if self.mode.is_empty() {
            "unlisted"
        } else {
            &self.mode
        };
        write!(f, "{} ({mode} network {}", self.ip, self.network)?;
        if !self.source.is_empty() {
            write!(f, ", {}", self.source)?;
        }
        f.write_str(")")
    }
}

/// The VM's addresses in the order to try them: by [`Reach`], cards in
/// their own order within one reach, each address once. The network's mode
/// is not in `InspectVM`'s answer, so it comes from `ListNetworks`.
pub fn candidates(
    interfaces: &[pb::InterfaceInfo],
    networks: &[pb::NetworkInfo],
) -> Vec<Candidate> {
    let mut found: Vec<Candidate> = Vec::new();
    for card in interfaces {
        let Ok(ip) = card.ip.parse::<Ipv4Addr>() else {
            continue;
        };
        if found.iter().any(|c| c.ip == ip) {
            continue;
        }
        let network = networks.iter().find(|n| n.name == card.network);
        let mode = network.map(|n| n.mode.clone()).unwrap_or_default();
        let in_subnet = network
            .and_then(|n| n.subnet.parse::<ipnet::Ipv4Net>().ok())
            .is_none_or(|subnet| subnet.contains(&ip));
        let reach = match mode.as_str() {
            "nat" | "routed" | "isolated" if in_subnet => Reach::HostNetwork,
            "macvtap" => Reach::Macvtap,
            _ if card.ip_source == "static" => Reach::Static,
            _ => Reach::Leased,
        };
        found.push(Candidate {
            ip,
            network: card.network.clone(),
            mode,
            source: card.ip_source.clone(),
            reach,
        });
    }
    // A stable sort: the card order stays within one reach.
    found.sort_by_key(|c| c.reach);
    found
}

/// Why an address gave no SSH banner.
#[derive(Debug, thiserror::Error)]
pub enum NoBanner {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("no answer to the connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("accepted the connection but sent no SSH banner within {0:?}")]
    Silent(Duration),
    #[error("closed the connection without an SSH banner")]
    Closed,
    #[error("answered {0:?}, not an SSH-2.0 banner")]
    NotSsh(String),
    #[error("reading the banner: {0}")]
    Read(#[source] std::io::Error),
}

/// The most a server may send before its version line (RFC 4253 4.2 allows
/// other lines first); past this it is not an sshd.
const MAX_PREAMBLE: u64 = 8 * 1024;

/// Connects to `addr` and reads until the server's version line, all within
/// `within`; the line (`SSH-2.0-...`) when it is an SSH-2 server's.
pub async fn ssh_banner(addr: SocketAddr, within: Duration) -> Result<String, NoBanner> {
    let begun = tokio::time::Instant::now();
    let stream = tokio::time::timeout(within, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| NoBanner::ConnectTimeout(within))?
        .map_err(NoBanner::Connect)?;
    let left = within.saturating_sub(begun.elapsed());
    tokio::time::timeout(left, version_line(stream))
        .await
        .map_err(|_| NoBanner::Silent(within))?
}

async fn version_line(stream: tokio::net::TcpStream) -> Result<String, NoBanner> {
    let mut reader = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(stream, MAX_PREAMBLE));
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader
            .read_until(b'\n', &mut line)
            .await
            .map_err(NoBanner::Read)?
            == 0
        {
            return Err(NoBanner::Closed);
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        // "SSH-1.99-" is a server that speaks 2.0 as well.
        if text.starts_with("SSH-2.0-") || text.starts_with("SSH-1.99-") {
            return Ok(text);
        }
        if text.starts_with("SSH-") || !line.ends_with(b"\n") {
            return Err(NoBanner::NotSsh(text.chars().take(80).collect()));
        }
    }
}

/// The message for a VM none of whose addresses gave a banner in time.
pub fn unreachable_message(
    vm: &str,
    port: u16,
    wait: Duration,
    tried: &[(Candidate, NoBanner)],
) -> String {
    let each: Vec<String> = tried.iter().map(|(c, why)| format!("{c}: {why}")).collect();
    format!(
        "VM {vm}: no address answered as an sshd on port {port} within {}s; tried {}; is the guest's sshd running and is one of its networks reachable from this host? see `vmr logs {vm}`",
        wait.as_secs(),
        each.join("; ")
    )
}

#[cfg(test)]
#[path = "ssh_reach_tests.rs"]
mod tests;
