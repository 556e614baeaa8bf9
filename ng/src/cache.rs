//! Replies kept for retransmissions: a proxy that resends a request (same cookie, same peer)
//! gets the reply it missed, so a retransmitted offer never allocates new ports.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Most replies a cache should keep, whatever their size (the gateway's bound).
pub const MAX_REPLIES: usize = 100_000;

/// What one kept reply costs besides its bytes: the map slot, the order entry, the peer and
/// the expiry (an estimate; the bound is on what an attacker controls, the lengths).
const ENTRY_OVERHEAD: usize = 128;

/// Replies to recent requests, by (cookie, peer), for retransmissions. Sans-IO: time comes in.
/// Bounded by count and by bytes (cookies and replies), oldest evicted first, so a flood of
/// requests with fresh cookies cannot grow it past either bound.
#[derive(Debug)]
pub struct ReplyCache {
    ttl: Duration,
    capacity: usize,
    max_bytes: usize,
    /// Bytes kept now, as [`ReplyCache::cost`] counts them.
    bytes: usize,
    replies: HashMap<(Vec<u8>, SocketAddr), Vec<u8>>,
    /// Insertion order with expiry, oldest first.
    order: VecDeque<(Instant, Vec<u8>, SocketAddr)>,
}

impl ReplyCache {
    /// A cache keeping replies for `ttl`, at most `capacity` of them and `max_bytes` in all
    /// (oldest go first).
    pub fn new(ttl: Duration, capacity: usize, max_bytes: usize) -> Self {
        ReplyCache {
            ttl,
            capacity,
            max_bytes,
            bytes: 0,
            replies: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The reply already sent for `cookie` from `peer`, if it is still kept at `now`.
    pub fn get(&mut self, cookie: &[u8], peer: SocketAddr, now: Instant) -> Option<&[u8]> {
        self.expire(now);
        self.replies
            .get(&(cookie.to_vec(), peer))
            .map(|v| v.as_slice())
    }

    /// Remembers the reply to `cookie` from `peer` (the first one, if it is already kept; not
    /// at all if it alone is over the byte bound).
    pub fn put(&mut self, cookie: &[u8], peer: SocketAddr, reply: Vec<u8>, now: Instant) {
        self.expire(now);
        let cost = Self::cost(cookie, &reply);
        let key = (cookie.to_vec(), peer);
        if cost > self.max_bytes || self.replies.contains_key(&key) {
            return;
        }
        while !self.order.is_empty()
            && (self.replies.len() >= self.capacity || self.bytes + cost > self.max_bytes)
        {
            self.evict_oldest();
        }
        if self.replies.len() >= self.capacity {
            return;
        }
        self.replies.insert(key, reply);
        self.bytes += cost;
        self.order
            .push_back((now + self.ttl, cookie.to_vec(), peer));
    }

    /// Replies kept.
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// Bytes kept (cookies, replies and a fixed cost per entry).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// What keeping `reply` to `cookie` costs: the cookie twice (map key and order entry).
    fn cost(cookie: &[u8], reply: &[u8]) -> usize {
        2 * cookie.len() + reply.len() + ENTRY_OVERHEAD
    }

    fn evict_oldest(&mut self) {
        if let Some((_, c, p)) = self.order.pop_front() {
            let key = (c, p);
            if let Some(r) = self.replies.remove(&key) {
                self.bytes -= Self::cost(&key.0, &r);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(t, _, _)| *t <= now) {
            self.evict_oldest();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where a test's time starts (any instant will do: the cache only compares them).
    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
    }

    #[test]
    fn the_cache_answers_retransmissions_until_they_expire() {
        let t0 = origin();
        let mut c = ReplyCache::new(Duration::from_secs(30), 2, 1 << 20);
        let p: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let q: SocketAddr = "127.0.0.1:5061".parse().unwrap();
        c.put(b"1", p, b"one".to_vec(), t0);
        assert_eq!(
            c.get(b"1", p, t0 + Duration::from_secs(29)),
            Some(&b"one"[..])
        );
        assert_eq!(
            c.get(b"1", q, t0),
            None,
            "another peer's cookie is another request"
        );
        assert_eq!(c.get(b"1", p, t0 + Duration::from_secs(30)), None);
        // Capacity: the oldest goes first.
        c.put(b"a", p, b"A".to_vec(), t0);
        c.put(b"b", p, b"B".to_vec(), t0);
        c.put(b"c", p, b"C".to_vec(), t0);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(b"a", p, t0), None);
        assert_eq!(c.get(b"c", p, t0), Some(&b"C"[..]));
    }

    #[test]
    fn the_cache_stays_within_its_byte_bound_evicting_the_oldest() {
        let t0 = origin();
        let p: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let reply = vec![b'r'; 1000];
        let each = ReplyCache::cost(b"c0000", &reply);
        // Room for exactly three entries of this size.
        let mut c = ReplyCache::new(Duration::from_secs(60), 1000, 3 * each);
        for i in 0..100 {
            let cookie = format!("c{i:04}");
            c.put(cookie.as_bytes(), p, reply.clone(), t0);
            assert!(c.bytes() <= 3 * each, "{} > {}", c.bytes(), 3 * each);
        }
        assert_eq!((c.len(), c.bytes()), (3, 3 * each));
        // The newest three are kept; the oldest went first.
        assert!(c.get(b"c0096", p, t0).is_none());
        assert!(c.get(b"c0097", p, t0).is_some() && c.get(b"c0099", p, t0).is_some());
        // One reply bigger than the whole bound is answered but not kept, and evicts nothing.
        c.put(b"huge", p, vec![0; 4 * each], t0);
        assert!(c.get(b"huge", p, t0).is_none());
        assert_eq!(c.len(), 3);
        // A large reply pushes out as many old ones as it needs.
        c.put(b"big", p, vec![0; 2 * each - ENTRY_OVERHEAD - 6], t0);
        assert_eq!(c.len(), 2, "two of the three made room");
        assert!(c.get(b"c0099", p, t0).is_some() && c.get(b"big", p, t0).is_some());
        assert!(c.bytes() <= 3 * each);
        // Expiry gives the bytes back.
        assert_eq!(c.get(b"big", p, t0 + Duration::from_secs(60)), None);
        assert_eq!((c.len(), c.bytes()), (0, 0));
        // A retransmission's reply is kept once: the first stays, the bytes count once.
        c.put(b"x", p, b"first".to_vec(), t0);
        c.put(b"x", p, b"second".to_vec(), t0);
        assert_eq!(c.get(b"x", p, t0), Some(&b"first"[..]));
        assert_eq!(c.bytes(), ReplyCache::cost(b"x", b"first"));
    }
}
