//! [`CallHandle`]: what a session's capture holds on its call, in one value — the call's keys,
//! its hold on secure mode, and its prompts — instead of a call id and separate objects.

use crate::call::KeyStream;
use crate::media::{CapturedKey, Clip};
use crate::{RelayError, SecureLease};

/// One session's hold on one call while it captures: the call's one [`KeyStream`] and the
/// session's [`SecureLease`], both for the same call. Not `Clone`. When the capture ends,
/// [`CallHandle::into_lease`] gives the key stream back (the next reader may take it) and keeps
/// the lease, which still masks the call until its session releases it.
#[derive(Debug)]
pub struct CallHandle {
    lease: SecureLease,
    keys: KeyStream,
}

impl CallHandle {
    /// Joins a lease and the key stream of the same call. `Conflict` when they name different
    /// calls (the lease comes back with the error, so its hold is not lost).
    pub fn new(lease: SecureLease, keys: KeyStream) -> Result<Self, (SecureLease, RelayError)> {
        if keys.call() != lease.call() {
            return Err((
                lease,
                RelayError::Conflict("the key stream and the lease are of different calls".into()),
            ));
        }
        Ok(Self { lease, keys })
    }

    /// The call it holds.
    pub fn call(&self) -> &str {
        self.lease.call()
    }

    /// The next key the caller keyed; `None` once the call has ended.
    pub async fn next_key(&mut self) -> Option<CapturedKey> {
        self.keys.recv().await
    }

    /// Plays `clips` to the caller (after what is already playing).
    pub async fn play(&self, clips: Vec<Clip>) -> Result<(), RelayError> {
        self.lease.relay().play(self.call(), clips).await
    }

    /// Stops the prompt playing to the caller, if one is (the caller started keying).
    pub async fn stop_prompt(&self) -> Result<(), RelayError> {
        self.lease.relay().stop_prompt(self.call()).await
    }

    /// The capture is over: the key stream is given back, the lease kept (see
    /// [`SecureLease::capture_ended`]) for the session to park or release.
    pub fn into_lease(self) -> SecureLease {
        self.lease.capture_ended();
        self.lease
    }
}
