//! `Idempotency-Key` on the session-creating routes: the same key with the same body answers
//! what the first request answered (the same session, agent URL and access code), for 24 hours;
//! the same key with another body is 422.
//!
//! What is stored, and why: the answer of an agent session holds the agent's one-time access
//! code, which is otherwise kept only as a hash, and a lost answer must not strand the agent.
//! So the answer is kept sealed (ChaCha20-Poly1305, ring) under a key derived from the
//! gateway's signing key *and* the Idempotency-Key itself, which is stored only hashed: the
//! database alone opens nothing, and a replay works only for whoever holds the key. Without
//! `auth.signing_key` the sealing key changes at each start, so an answer from before a restart
//! cannot be replayed (409, the message says so). Requests are never stored; card data never
//! arrives in these bodies (a PAN in `PaymentData` is masked before anything else sees it).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::ApiError;
use crate::session::store::IdempotentAnswer;

/// The request header.
pub(super) const HEADER: &str = "idempotency-key";
/// How long an answer is kept.
pub(super) const KEEP_S: u64 = 24 * 3600;
/// The longest key accepted.
pub(super) const MAX_LEN: usize = 255;

/// A request's key, while its create runs: a second request with it meanwhile is 409.
pub(super) struct Claim {
    key_hash: String,
    key: String,
    in_flight: Arc<Mutex<HashSet<String>>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key_hash);
    }
}

fn bad_key(message: &str) -> ApiError {
    ApiError::bad_request(message).field("Idempotency-Key")
}

/// The request's key (1-255 visible ASCII characters), claimed for `client` on `route`; `None`
/// without the header.
pub(super) fn claim(
    state: &super::AppState,
    headers: &HeaderMap,
    client: &str,
    route: &str,
) -> Result<Option<Claim>, ApiError> {
    let Some(v) = headers.get(HEADER) else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| (1..=MAX_LEN).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| bad_key("Idempotency-Key must be 1-255 visible ASCII characters"))?;
    let mut h = Sha256::new();
    for part in [client, route, key] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let key_hash = hex(&h.finalize());
    let in_flight = state.idempotency_in_flight.clone();
    if !in_flight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key_hash.clone())
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_in_use",
            "a request with this Idempotency-Key is still being answered: retry",
        )
        .field("Idempotency-Key"));
    }
    Ok(Some(Claim {
        key_hash,
        key: key.to_string(),
        in_flight,
    }))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 of a body's canonical JSON (members sorted: serde_json's map is ordered).
pub(super) fn request_hash(body: &Value) -> String {
    hex(&Sha256::digest(body.to_string().as_bytes()))
}

impl Claim {
    fn sealing_key(&self, authority: &crate::auth::Authority) -> LessSafeKey {
        let mut purpose = b"idempotency\0".to_vec();
        purpose.extend_from_slice(self.key.as_bytes());
        let k = authority.derive_key(&purpose);
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &k).expect("a 32-byte key"))
    }

    /// The answer kept for this key: `Ok(Some)` to replay it; 422 when the key came with
    /// another body.
    pub(super) fn replay(
        &self,
        state: &super::AppState,
        request_hash: &str,
    ) -> Result<Option<Value>, ApiError> {
        let since = state.clock.unix_now().saturating_sub(KEEP_S);
        let Some(kept) = state
            .sessions
            .store()
            .idempotent_get(&self.key_hash, since)
            .map_err(crate::session::SessionError::from)?
        else {
            return Ok(None);
        };
        if kept.request_hash != request_hash {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used with another request body: use a new key",
            )
            .field("Idempotency-Key"));
        }
        let opened = STANDARD
            .decode(&kept.sealed)
            .ok()
            .filter(|b| b.len() > NONCE_LEN)
            .and_then(|mut b| {
                let nonce = Nonce::try_assume_unique_for_key(&b[..NONCE_LEN]).ok()?;
                let plain = self
                    .sealing_key(&state.authority)
                    .open_in_place(
                        nonce,
                        Aad::from(self.key_hash.as_bytes()),
                        &mut b[NONCE_LEN..],
                    )
                    .ok()?;
                serde_json::from_slice::<Value>(plain).ok()
            });
        match opened {
            Some(v) => Ok(Some(v)),
            None => Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_unrecoverable",
                "the answer kept for this Idempotency-Key cannot be opened (the gateway restarted \
                 without auth.signing_key): use a new key",
            )
            .field("Idempotency-Key")),
        }
    }

    /// Keeps `answer` for this key (a failure is logged: the create itself succeeded).
    pub(super) fn keep(
        &self,
        state: &super::AppState,
        request_hash: &str,
        session_id: &str,
        answer: &Value,
    ) {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut data = answer.to_string().into_bytes();
        if self
            .sealing_key(&state.authority)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.key_hash.as_bytes()),
                &mut data,
            )
            .is_err()
        {
            tracing::error!("sealing an idempotent answer failed");
            return;
        }
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&data);
        let now = state.clock.unix_now();
        let kept = IdempotentAnswer {
            key_hash: self.key_hash.clone(),
            request_hash: request_hash.to_string(),
            session_id: session_id.to_string(),
            sealed: STANDARD.encode(sealed),
            created_at: now,
        };
        if let Err(e) = state
            .sessions
            .store()
            .idempotent_put(&kept, now.saturating_sub(KEEP_S))
        {
            tracing::error!(error = %e, "keeping an idempotent answer failed");
        }
    }
}
