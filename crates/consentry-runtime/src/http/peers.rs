//! Peers as the limits count them (an IPv4 address or an IPv6 /64), and
//! the bounded table of peers: connections held and a token bucket each.

use super::*;

/// Peers as the limits count them: an IPv4 address, or an IPv6 /64 (one
/// host usually holds a whole /64).
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// At most this many peers are remembered; past it, idle ones are
/// forgotten, and a new peer is refused while every slot is busy.
pub(super) const MAX_PEERS: usize = 16_384;

pub(super) struct Peer {
    pub(super) connections: usize,
    pub(super) tokens: f64,
    pub(super) last: Instant,
}

pub(super) struct Peers {
    pub(super) table: Mutex<HashMap<IpAddr, Peer>>,
    pub(super) per_peer: usize,
    pub(super) rate: f64,
    pub(super) burst: f64,
}

impl Peers {
    pub(super) fn refill(&self, p: &mut Peer, now: Instant) {
        let elapsed = now.saturating_duration_since(p.last).as_secs_f64();
        p.tokens = (p.tokens + elapsed * self.rate).min(self.burst);
        p.last = now;
    }

    /// A new connection from `key`, refused over its limits (or while the
    /// table is full of live peers).
    pub(super) fn connect(&self, key: IpAddr, now: Instant) -> Result<(), Refusal> {
        let Ok(mut table) = self.table.lock() else {
            return Err(Refusal::PeerConnectionLimit);
        };
        if table.len() >= MAX_PEERS && !table.contains_key(&key) {
            let full = self.burst;
            let rate = self.rate;
            table.retain(|_, p| {
                let idle = now.saturating_duration_since(p.last).as_secs_f64();
                p.connections > 0 || p.tokens + idle * rate < full
            });
            if table.len() >= MAX_PEERS {
                return Err(Refusal::PeerConnectionLimit);
            }
        }
        let peer = table.entry(key).or_insert(Peer {
            connections: 0,
            tokens: self.burst,
            last: now,
        });
        if peer.connections >= self.per_peer {
            return Err(Refusal::PeerConnectionLimit);
        }
        // A connection costs a request's token: reconnecting (and TLS
        // handshakes) cannot outrun the request rate.
        self.refill(peer, now);
        if peer.tokens < 1.0 {
            return Err(Refusal::ConnectionRateLimited);
        }
        peer.tokens -= 1.0;
        peer.connections += 1;
        Ok(())
    }

    pub(super) fn disconnect(&self, key: IpAddr) {
        if let Ok(mut table) = self.table.lock() {
            if let Some(p) = table.get_mut(&key) {
                p.connections = p.connections.saturating_sub(1);
            }
        }
    }

    /// Takes one request token for `key` at `now`.
    pub(super) fn admit(&self, key: IpAddr, now: Instant) -> bool {
        let Ok(mut table) = self.table.lock() else {
            return false;
        };
        let Some(peer) = table.get_mut(&key) else {
            return false;
        };
        self.refill(peer, now);
        if peer.tokens >= 1.0 {
            peer.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Releases a peer's connection slot when its task ends, however it ends.
pub(super) struct PeerSlot {
    pub(super) peers: Arc<Peers>,
    pub(super) key: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        self.peers.disconnect(self.key);
    }
}
