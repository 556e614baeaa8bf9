//! Secure mode held, not toggled: the owner's request, a session's [`SecureLease`], or the
//! account's policy hold it; it goes off only when an explicit release leaves nobody holding
//! it, never while a capture is live nor within the hold-off after a key. Also the call's one
//! [`KeyStream`].

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::call::{KeyStream, KEY_STREAM_DEPTH};
use crate::driver::CallControl;
use crate::{Access, CallInfo, Relay, RelayError};

/// Secure mode held on one call by one session ([`Relay::lease_secure`]). Not `Clone`, and
/// the only ways to give it up take it by value, so only the session holding it can end its
/// hold. Dropping it gives nothing up: the call stays masked until it ends (fail closed).
#[derive(Debug)]
#[must_use = "a dropped lease keeps the call masked until the call ends"]
pub struct SecureLease {
    relay: Relay,
    call: String,
    session: String,
}

impl SecureLease {
    /// The call it holds.
    pub fn call(&self) -> &str {
        &self.call
    }

    /// The session holding it.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The relay the call is on.
    pub(crate) fn relay(&self) -> &Relay {
        &self.relay
    }

    /// The capture ended: the lease still holds secure mode (a caller keying another card
    /// after a decline must not be heard), but no longer blocks other holders' releases.
    pub fn capture_ended(&self) {
        let mut calls = self.relay.inner.calls.lock().expect("calls lock");
        if let Some(live) = calls
            .get_mut(&self.call)
            .and_then(|c| c.leases.sessions.get_mut(&self.session))
        {
            *live = false;
        }
    }

    /// A new capture started under this lease (a card asked for again): it blocks other
    /// holders' releases again, as a live capture does.
    pub fn capture_resumed(&self) {
        let mut calls = self.relay.inner.calls.lock().expect("calls lock");
        if let Some(live) = calls
            .get_mut(&self.call)
            .and_then(|c| c.leases.sessions.get_mut(&self.session))
        {
            *live = true;
        }
    }

    /// Gives secure mode up (it goes off where nothing else holds it). `Ok(true)`: released;
    /// `Ok(false)`: the call had already ended. Refused with the lease handed back (`Conflict`
    /// with the reason) while the capture is live or within the hold-off after a key.
    pub async fn release(self) -> Result<bool, (SecureLease, RelayError)> {
        match self.relay.end_lease(&self).await {
            Ok(released) => Ok(released),
            Err(e) => Err((self, e)),
        }
    }

    fn actor(&self) -> String {
        format!("session:{}", self.session)
    }
}

impl Relay {
    /// The owner asks for secure mode on or off (relay API). On: the owner holds it. Off: the
    /// owner's hold ends — refused (`Conflict`, with the reason) under policy `call`, while a
    /// session holds a lease on the call, or within the hold-off after a key.
    pub async fn request_secure(
        &self,
        id: &str,
        access: Access<'_>,
        on: bool,
    ) -> Result<CallInfo, RelayError> {
        let actor = match access {
            Access::Owner(c) => format!("client:{c}"),
            Access::Admin(c) => format!("admin:{c}"),
        };
        let hold_off = Duration::from_secs(self.inner.cfg.secure_hold_off_s);
        let now_ms = self.inner.wall.unix_ms();
        {
            let mut calls = self.inner.calls.lock().expect("calls lock");
            let c = calls
                .get_mut(id)
                .filter(|c| access.allows(&c.owner))
                .ok_or(RelayError::UnknownCall)?;
            if on {
                c.leases.api = true;
            } else {
                // The owner gives up its own hold only: a session's lease is its session's to
                // release.
                let refusal = c.release_refusal(hold_off, now_ms).or_else(|| {
                    c.leases.sessions.keys().next().map(|s| {
                        format!(
                            "session {s} holds secure mode on this call; release it with \
                             POST /globalpci/v1/session/{s}/release"
                        )
                    })
                });
                if let Some(why) = refusal {
                    self.audit(c, &actor, "secure_off_refused", why.clone());
                    return Err(RelayError::Conflict(why));
                }
                c.leases.api = false;
            }
        }
        self.apply_secure(
            id,
            &actor,
            if on {
                "asked for over the relay API"
            } else {
                "released over the relay API"
            },
        )
        .await?;
        self.get(id, Access::Owner(&self.owner(id).unwrap_or_default()))
            .ok_or(RelayError::UnknownCall)
    }

    /// Session `session` starts capturing on call `id`: secure mode is on when this returns,
    /// held by the [`SecureLease`] it returns (until its holder releases it or the call ends).
    /// A session holds one lease per call: asking again is a `Conflict`.
    pub async fn lease_secure(&self, id: &str, session: &str) -> Result<SecureLease, RelayError> {
        {
            let mut calls = self.inner.calls.lock().expect("calls lock");
            let c = calls.get_mut(id).ok_or(RelayError::UnknownCall)?;
            if c.leases.sessions.contains_key(session) {
                return Err(RelayError::Conflict(format!(
                    "session {session} already holds secure mode on this call"
                )));
            }
            c.leases.sessions.insert(session.to_string(), true);
        }
        let lease = SecureLease {
            relay: self.clone(),
            call: id.to_string(),
            session: session.to_string(),
        };
        match self
            .apply_secure(id, &lease.actor(), "capture started")
            .await
        {
            Ok(()) => Ok(lease),
            Err(e) => {
                // Not applied: the capture must not start. The entry goes; the call, if it
                // still exists, keeps whatever else holds it.
                if let Some(c) = self.inner.calls.lock().expect("calls lock").get_mut(id) {
                    c.leases.sessions.remove(session);
                }
                Err(e)
            }
        }
    }

    /// Ends `lease`'s hold: secure mode goes off where nothing else holds it. Refused
    /// (`Conflict`) while its capture is live, or when it would turn masking off within the
    /// hold-off after a key. Under policy `call` masking stays on. `Ok(false)`: the call is gone.
    async fn end_lease(&self, lease: &SecureLease) -> Result<bool, RelayError> {
        let hold_off = Duration::from_secs(self.inner.cfg.secure_hold_off_s);
        let now_ms = self.inner.wall.unix_ms();
        let actor = lease.actor();
        {
            let mut calls = self.inner.calls.lock().expect("calls lock");
            let Some(c) = calls.get_mut(&lease.call) else {
                return Ok(false);
            };
            if c.leases.sessions.get(&lease.session) == Some(&true) {
                let why = "the session is still capturing; cancel or finish it first";
                self.audit(c, &actor, "secure_off_refused", why);
                return Err(RelayError::Conflict(why.into()));
            }
            c.leases.sessions.remove(&lease.session);
            // Only a release that would turn masking off waits out the hold-off; while others
            // hold it (or policy `call` does), giving up this hold changes nothing audible.
            if !c.held() {
                if let Some(why) = c.release_refusal(hold_off, now_ms) {
                    c.leases.sessions.insert(lease.session.clone(), false);
                    self.audit(c, &actor, "secure_off_refused", why.clone());
                    return Err(RelayError::Conflict(why));
                }
            }
        }
        self.apply_secure(&lease.call, &actor, "released by the session")
            .await?;
        Ok(true)
    }

    /// Brings the call's secure mode in line with what holds it; audits a change.
    async fn apply_secure(&self, id: &str, actor: &str, why: &str) -> Result<(), RelayError> {
        let (control, want, was) = {
            let calls = self.inner.calls.lock().expect("calls lock");
            let c = calls.get(id).ok_or(RelayError::UnknownCall)?;
            (c.steer.control(), c.held(), c.status.secure.load(Relaxed))
        };
        if want == was {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        control.send(CallControl::Secure(want, tx)).await?;
        rx.await.map_err(|_| RelayError::UnknownCall)?;
        tracing::info!(call = %id, secure = want, actor, "relay secure mode changed");
        if let Some(c) = self.inner.calls.lock().expect("calls lock").get(id) {
            self.audit(c, actor, if want { "secure_on" } else { "secure_off" }, why);
        }
        Ok(())
    }

    /// The call's captured keys from now on. A call has one [`KeyStream`] at a time: while
    /// one is alive, asking again is a `Conflict`, never a replacement; dropping it frees the
    /// call for the next.
    pub async fn key_stream(&self, id: &str) -> Result<KeyStream, RelayError> {
        let (sink, keys) = mpsc::channel(KEY_STREAM_DEPTH);
        let control = {
            let mut calls = self.inner.calls.lock().expect("calls lock");
            let c = calls.get_mut(id).ok_or(RelayError::UnknownCall)?;
            if c.key_sink.as_ref().is_some_and(|s| !s.is_closed()) {
                return Err(RelayError::Conflict(
                    "the call's keys already go to another subscriber".into(),
                ));
            }
            c.key_sink = Some(sink.clone());
            c.steer.control()
        };
        control.send(CallControl::Keys(sink)).await?;
        Ok(KeyStream {
            call: id.to_string(),
            keys,
        })
    }
}
