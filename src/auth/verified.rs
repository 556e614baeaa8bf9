//! A short-lived memory of client secrets that were verified, so a client that has just
//! proved its secret is answered again without argon2 and without asking the failure throttle.
//!
//! Why: a token request whose pair (client id, address) is locked by someone else's guesses, or
//! that waits behind their argon2 checks, would be refused or delayed although its secret is
//! right. Checked first, this cache answers the right secret at once, whatever floods in
//! beside it.
//!
//! What is kept is an HMAC-SHA256 of the secret under a key made at random when the process
//! starts (never the secret, never a hash that could be attacked offline), one per client id,
//! compared in constant time. Entries live for a fixed time after the last argon2 check or
//! hit, and only client ids that exist get one, so the table holds at most one entry per
//! configured client. Sans-IO: callers pass `now`.

use std::collections::HashMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type Tag = [u8; 32];

/// Client secrets verified recently, as keyed hashes.
pub struct VerifiedSecrets {
    key: [u8; 32],
    ttl: Duration,
    by_client: HashMap<String, (Tag, Duration)>,
}

impl std::fmt::Debug for VerifiedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedSecrets")
            .field("ttl", &self.ttl)
            .field("clients", &self.by_client.len())
            .finish()
    }
}

impl VerifiedSecrets {
    /// An empty cache whose entries last `ttl` (zero: remembers nothing).
    pub fn new(ttl: Duration) -> Self {
        use rand::RngCore;
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        VerifiedSecrets {
            key,
            ttl,
            by_client: HashMap::new(),
        }
    }

    fn tag(&self, client: &str, secret: &str) -> Tag {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        // The id's length first, so ("ab", "c") and ("a", "bc") differ.
        mac.update(&(client.len() as u64).to_be_bytes());
        mac.update(client.as_bytes());
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Whether `secret` is the one verified for `client` within the last `ttl`; a hit keeps
    /// the entry for another `ttl`.
    pub fn check(&mut self, client: &str, secret: &str, now: Duration) -> bool {
        let tag = self.tag(client, secret);
        let ttl = self.ttl;
        let Some((known, at)) = self.by_client.get_mut(client) else {
            return false;
        };
        if now.saturating_sub(*at) >= ttl {
            return false;
        }
        let hit: bool = known.ct_eq(&tag).into();
        if hit {
            *at = now;
        }
        hit
    }

    /// Remembers that `secret` was verified for `client` (an id that exists) at `now`.
    pub fn remember(&mut self, client: &str, secret: &str, now: Duration) {
        if self.ttl.is_zero() {
            return;
        }
        let tag = self.tag(client, secret);
        self.by_client.insert(client.to_string(), (tag, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn only_the_verified_secret_hits_and_only_while_fresh() {
        let mut v = VerifiedSecrets::new(S(60));
        assert!(!v.check("c", "right", S(0)), "nothing verified yet");
        v.remember("c", "right", S(0));
        assert!(v.check("c", "right", S(30)));
        assert!(!v.check("c", "wrong", S(30)));
        assert!(!v.check("d", "right", S(30)), "another client");
        // A hit at 30 s keeps it until 90 s.
        assert!(v.check("c", "right", S(89)));
        assert!(!v.check("c", "right", S(150)), "expired");
    }

    #[test]
    fn ids_and_secrets_do_not_run_together_and_zero_keeps_nothing() {
        let mut v = VerifiedSecrets::new(S(60));
        v.remember("ab", "c", S(0));
        assert!(!v.check("a", "bc", S(0)));
        let mut off = VerifiedSecrets::new(S(0));
        off.remember("c", "right", S(0));
        assert!(!off.check("c", "right", S(0)));
        assert!(!format!("{v:?}").contains("right"));
    }
}
