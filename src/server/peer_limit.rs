//! Connections per peer address: a count per IPv4 address or IPv6 /64, held by a permit that
//! gives its slot back when the connection ends. One peer cannot take every connection slot.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// Open connections per peer. The cap is given at each acquire, so a reloaded limit applies
/// to the next connection.
#[derive(Debug, Clone, Default)]
pub struct PeerLimit {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's slot; dropping it releases the slot.
#[derive(Debug)]
pub struct PeerPermit {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    peer: IpAddr,
}

/// The address connections are counted under: IPv4 as is (also when mapped into IPv6), IPv6
/// by its /64, since one host commonly holds a whole /64.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

impl PeerLimit {
    /// A slot for `ip`, or `None` when that peer already holds `max` connections.
    pub fn try_acquire(&self, ip: IpAddr, max: usize) -> Option<PeerPermit> {
        let peer = bucket(ip);
        let mut counts = self.counts.lock().ok()?;
        let n = counts.entry(peer).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerPermit {
            counts: self.counts.clone(),
            peer,
        })
    }

    /// Connections `ip` holds now.
    pub fn count(&self, ip: IpAddr) -> usize {
        self.counts
            .lock()
            .ok()
            .and_then(|c| c.get(&bucket(ip)).copied())
            .unwrap_or(0)
    }
}

impl Drop for PeerPermit {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.counts.lock()
            && let Some(n) = counts.get_mut(&self.peer)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_peer_gets_its_own_cap_and_slots_come_back() {
        let limit = PeerLimit::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = limit.try_acquire(a, 2).unwrap();
        let _p2 = limit.try_acquire(a, 2).unwrap();
        assert!(limit.try_acquire(a, 2).is_none());
        let _q = limit.try_acquire(b, 2).unwrap();
        drop(p1);
        assert_eq!(limit.count(a), 1);
        assert!(limit.try_acquire(a, 2).is_some());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_counts_as_ipv4() {
        let limit = PeerLimit::default();
        let _x = limit
            .try_acquire("2001:db8:1:2::1".parse().unwrap(), 1)
            .unwrap();
        assert!(
            limit
                .try_acquire("2001:db8:1:2:ffff::9".parse().unwrap(), 1)
                .is_none()
        );
        assert!(
            limit
                .try_acquire("2001:db8:1:3::1".parse().unwrap(), 1)
                .is_some()
        );
        let _v4 = limit.try_acquire("192.0.2.7".parse().unwrap(), 1).unwrap();
        assert!(
            limit
                .try_acquire("::ffff:192.0.2.7".parse().unwrap(), 1)
                .is_none()
        );
    }

    #[test]
    fn the_map_forgets_peers_without_connections() {
        let limit = PeerLimit::default();
        for i in 0..100u8 {
            drop(limit.try_acquire(IpAddr::from([10, 0, 0, i]), 3));
        }
        assert!(limit.counts.lock().unwrap().is_empty());
    }
}
