//! Open connections per source address (IPv6 by its /64): one host cannot take every
//! connection slot, so a flood of idle or slow connections from it leaves room for everyone
//! else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::auth::throttle::address_key;

/// Counts open connections by source address, up to a limit each.
#[derive(Debug)]
pub struct PerAddress {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection's place; given back when dropped.
#[derive(Debug)]
pub struct AddressSlot {
    owner: Arc<PerAddress>,
    key: IpAddr,
}

impl PerAddress {
    /// At most `limit` connections per address (0: no limit).
    pub fn new(limit: usize) -> Arc<PerAddress> {
        Arc::new(PerAddress {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for a new connection from `addr`, unless that address is at its limit.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Option<AddressSlot> {
        let key = address_key(addr);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key).or_insert(0);
        if self.limit > 0 && *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            owner: self.clone(),
            key,
        })
    }

    /// Connections open from `addr` now.
    pub fn open_from(&self, addr: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&address_key(addr)).copied().unwrap_or(0)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            // No entry for an address with nothing open: the table holds open connections only.
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_limit_and_places_come_back() {
        let p = PerAddress::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = p.admit(a).unwrap();
        let _s2 = p.admit(a).unwrap();
        assert!(p.admit(a).is_none(), "a third from one address");
        let _b1 = p.admit(b).expect("another address is not held back");
        drop(s1);
        assert_eq!(p.open_from(a), 1);
        assert!(p.admit(a).is_some(), "a place came back");
    }

    #[test]
    fn ipv6_counts_by_64_and_zero_means_no_limit() {
        let p = PerAddress::new(1);
        let _s = p.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert!(p.admit("2001:db8::ffff".parse().unwrap()).is_none());
        assert!(p.admit("2001:db8:0:1::1".parse().unwrap()).is_some());
        let open = PerAddress::new(0);
        let held: Vec<_> = (0..1000)
            .map(|_| open.admit("10.0.0.1".parse().unwrap()).unwrap())
            .collect();
        assert_eq!(open.open_from("10.0.0.1".parse().unwrap()), 1000);
        drop(held);
        assert!(open.open.lock().unwrap().is_empty(), "the table empties");
    }
}
