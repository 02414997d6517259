//! Connection caps, for both listeners: a server-wide number of open connections and (on
//! the XKS listener) a number per peer address ([`PeerLimit`]). The XKS listener refuses a
//! connection over a cap at once; refusals are counted by reason and logged as one summary
//! line at most every [`SUMMARY_EVERY`], so an unauthenticated client cannot drive keygate's
//! log volume at its connection rate. The admin listener waits for a free slot instead.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::peer_limit::{PeerLimit, PeerPermit};

/// Most often a summary of refused connections is logged.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The server-wide cap (`limits.max_connections`).
    ConnectionLimit,
    /// The per-peer cap (`limits.max_connections_per_peer`).
    PerPeerLimit,
}

impl Refused {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::ConnectionLimit => "connection_limit",
            Refused::PerPeerLimit => "per_peer_limit",
        }
    }
}

/// One connection's slots; dropping it frees them.
#[derive(Debug)]
pub struct Permit {
    _total: OwnedSemaphorePermit,
    _peer: Option<PeerPermit>,
}

/// The caps and the refusal summary.
#[derive(Debug, Clone)]
pub struct ConnectionCap {
    total: Arc<Semaphore>,
    max: usize,
    peers: PeerLimit,
    summary: Arc<Summary>,
}

#[derive(Debug)]
struct Summary {
    /// Refusals since the last summary line, by reason.
    pending: [AtomicU64; 2],
    last: Mutex<Option<Instant>>,
}

impl ConnectionCap {
    /// At most `max_connections` open at once.
    pub fn new(max_connections: usize) -> ConnectionCap {
        ConnectionCap {
            total: Arc::new(Semaphore::new(max_connections.max(1))),
            max: max_connections.max(1),
            peers: PeerLimit::default(),
            summary: Arc::new(Summary {
                pending: [AtomicU64::new(0), AtomicU64::new(0)],
                last: Mutex::new(None),
            }),
        }
    }

    /// Waits for a free slot (the admin listener).
    pub async fn acquire(&self) -> Permit {
        loop {
            // The semaphore is never closed, so this only loops in theory.
            if let Ok(permit) = self.total.clone().acquire_owned().await {
                return Permit {
                    _total: permit,
                    _peer: None,
                };
            }
            tokio::task::yield_now().await;
        }
    }

    /// Slots for a connection from `peer`, or why not (the XKS listener): the refusal is
    /// counted and summarised in keygate's log.
    pub fn try_admit(&self, peer: SocketAddr, per_peer: usize) -> Result<Permit, Refused> {
        let admitted = self.admit(peer.ip(), per_peer);
        if let Err(reason) = admitted {
            self.summarise(reason);
        }
        admitted
    }

    fn admit(&self, ip: IpAddr, per_peer: usize) -> Result<Permit, Refused> {
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::ConnectionLimit)?;
        let peer = self
            .peers
            .try_acquire(ip, per_peer)
            .ok_or(Refused::PerPeerLimit)?;
        Ok(Permit {
            _total: total,
            _peer: Some(peer),
        })
    }

    /// Slots free right now.
    pub fn available(&self) -> usize {
        self.total.available_permits()
    }

    /// Connections `ip` holds now.
    pub fn held_by(&self, ip: IpAddr) -> usize {
        self.peers.count(ip)
    }

    fn summarise(&self, reason: Refused) {
        let s = &self.summary;
        let slot = match reason {
            Refused::ConnectionLimit => 0,
            Refused::PerPeerLimit => 1,
        };
        if let Some(counter) = s.pending.get(slot) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let Ok(mut last) = s.last.try_lock() else {
            return;
        };
        if last.is_some_and(|at| at.elapsed() < SUMMARY_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let [total, per_peer] = &s.pending;
        let (total, per_peer) = (
            total.swap(0, Ordering::Relaxed),
            per_peer.swap(0, Ordering::Relaxed),
        );
        tracing::warn!(
            connection_limit = total,
            per_peer_limit = per_peer,
            max_connections = self.max,
            "connections refused since the last summary (at most one such line every {} s; keygate_connections_refused_total counts each)",
            SUMMARY_EVERY.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_refuse_by_reason_and_free_on_drop() {
        let cap = ConnectionCap::new(2);
        let a: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let first = cap.try_admit(a, 1).unwrap();
        assert_eq!(cap.try_admit(a, 1).unwrap_err(), Refused::PerPeerLimit);
        let second = cap.try_admit(b, 1).unwrap();
        assert_eq!(cap.try_admit(b, 5).unwrap_err(), Refused::ConnectionLimit);
        drop((first, second));
        assert_eq!(cap.available(), 2);
        assert_eq!(cap.held_by(a.ip()), 0);
    }
}
