//! Session timers (RFC 4028): who refreshes, tonegate's own refreshes when it is the refresher
//! (UPDATE, or a re-INVITE to a caller without UPDATE in its Allow) at half the interval, and
//! the BYE when that refresh fails or times out, or when the caller, refreshing, stops.

use super::*;
use crate::sip::message::Refresher;

/// A dialog's session timer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Session {
    /// The session interval, seconds.
    pub(super) interval: u32,
    /// When it runs out without a refresh.
    expires: Instant,
    /// tonegate refreshes (`refresher=uas`), rather than the caller.
    pub(super) ours: bool,
}

impl Session {
    fn new(interval: u32, ours: bool, now: Instant) -> Session {
        Session {
            interval,
            expires: now + Duration::from_secs(interval.into()),
            ours,
        }
    }

    /// When the timer next needs attention: tonegate's refresh at half the interval (the
    /// expiry itself while one is out), or the caller's last chance before the BYE.
    pub(super) fn due(&self, refreshing: bool) -> Instant {
        match (self.ours, refreshing) {
            (true, false) => self.expires - Duration::from_secs(u64::from(self.interval / 2)),
            (true, true) => self.expires,
            (false, _) => self.expires - early(self.interval),
        }
    }
}

/// A session refresh tonegate sent, waiting for its answer.
#[derive(Debug)]
pub(super) struct Refresh {
    method: &'static str,
    cseq: u32,
    pub(super) retx: Retx,
}

/// How long before the session interval runs out the non-refreshing side ends the call
/// (RFC 4028 §10: the smaller of 32 s and a third of the interval).
fn early(interval: u32) -> Duration {
    Duration::from_secs(u64::from(interval.min(96) / 3))
}

impl Endpoint {
    /// The session timer a (re-)INVITE or UPDATE gets, and the header lines that say so.
    /// `asked`: whether the caller supports timers, and its Session-Expires; `current`: the
    /// dialog's interval so far. RFC 4028 §9: a caller that supports timers refreshes unless it
    /// asked tonegate to (`refresher=uas`); one that does not is refreshed by tonegate, with
    /// no `Require: timer` (it would not understand it).
    pub(super) fn grant(
        &self,
        asked: (bool, Option<(u32, Refresher)>),
        current: Option<u32>,
        now: Instant,
    ) -> (Session, Vec<String>) {
        let default = current.unwrap_or(self.cfg.session_expires_s);
        match asked {
            (true, se) => {
                let interval = se.map_or(default, |(s, _)| s).max(self.cfg.min_se_s);
                let ours = matches!(se, Some((_, Refresher::Uas)));
                let who = if ours { "uas" } else { "uac" };
                let lines = vec![
                    format!("Session-Expires: {interval};refresher={who}"),
                    "Require: timer".into(),
                ];
                (Session::new(interval, ours, now), lines)
            }
            (false, _) => (
                Session::new(default, true, now),
                vec![format!("Session-Expires: {default};refresher=uas")],
            ),
        }
    }

    /// Call `id`'s session timer at `now`: tonegate's refresh when due (and its
    /// retransmissions), the BYE when it fails, times out or the caller's refresh never came.
    /// Whether the call ended.
    pub(super) fn session_timeout(&mut self, now: Instant, id: &str) -> bool {
        let Some(c) = self.calls.get_mut(id) else {
            return false;
        };
        if c.state != State::Confirmed {
            return false;
        }
        let Some(s) = c.session else {
            return false;
        };
        if let Some(f) = c.refresh.as_mut() {
            // No answer within 64×T1 (or before the session itself runs out): the caller is
            // gone (RFC 4028 §10 treats a timed-out refresh as a failed one).
            if f.retx.give_up <= now || s.expires <= now {
                return self.expire(now, id);
            }
            if let Some(bytes) = f.retx.resend(now) {
                let peer = c.peer;
                self.send(peer, bytes);
            }
            return false;
        }
        if s.due(false) > now {
            return false;
        }
        if !s.ours {
            return self.expire(now, id);
        }
        let takes_update = c
            .invite
            .allow
            .iter()
            .any(|m| m.eq_ignore_ascii_case("UPDATE"));
        self.send_refresh(now, id, if takes_update { "UPDATE" } else { "INVITE" });
        false
    }

    /// Ends call `id` because its session is over: a BYE.
    fn expire(&mut self, now: Instant, id: &str) -> bool {
        self.counts.expired += 1;
        self.send_bye(now, id);
        true
    }

    /// Sends tonegate's session refresh: an UPDATE without a body, or a re-INVITE offering
    /// the session as it is (the same SDP, its version unchanged: nothing moves).
    fn send_refresh(&mut self, now: Instant, id: &str, method: &'static str) {
        let min_se = self.cfg.min_se_s;
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        let Some(s) = c.session else {
            return;
        };
        c.local_cseq = c.local_cseq.max(1) + 1;
        let cseq = c.local_cseq;
        let body = (method == "INVITE").then(|| c.answer.clone()).flatten();
        let extra = [
            format!("Session-Expires: {};refresher=uas", s.interval),
            "Supported: timer".into(),
            format!("Min-SE: {min_se}"),
        ];
        let Some(bytes) = self.dialog_request(id, method, cseq, &extra, body.as_deref()) else {
            return;
        };
        let c = self.calls.get_mut(id).expect("present");
        c.refresh = Some(Refresh {
            method,
            cseq,
            retx: Retx::start(bytes.clone(), now, c.peer.reliable()),
        });
        self.counts.refreshes += 1;
        let peer = c.peer;
        self.send(peer, bytes);
    }

    /// A response to tonegate's refresh (or a repeat of a re-INVITE's 2xx, ACKed again).
    /// Whether it was one.
    pub(super) fn refresh_answered(&mut self, now: Instant, r: &Response) -> bool {
        let Some(c) = self.calls.get_mut(&r.call_id) else {
            return false;
        };
        if let Some((n, ack)) = &c.refresh_ack {
            if *n == r.cseq && r.cseq_method == "INVITE" && (200..300).contains(&r.code) {
                let (peer, ack) = (c.peer, ack.clone());
                self.send(peer, ack);
                return true;
            }
        }
        let Some(f) = c.refresh.as_mut() else {
            return false;
        };
        if f.cseq != r.cseq || f.method != r.cseq_method {
            return false;
        }
        if r.code < 200 {
            // Provisional: the request arrived, so no more resending; the give-up stands.
            f.retx.next = f.retx.give_up;
            return true;
        }
        let f = c.refresh.take().expect("present");
        if (200..300).contains(&r.code) {
            if let Some(s) = c.session.as_mut() {
                // The caller may have settled on another interval (not below Min-SE).
                s.interval = r
                    .session_expires
                    .filter(|&n| n >= self.cfg.min_se_s)
                    .unwrap_or(s.interval);
                *s = Session::new(s.interval, s.ours, now);
            }
            if f.method == "INVITE" {
                if let Some(ack) = self.dialog_request(&r.call_id, "ACK", f.cseq, &[], None) {
                    let c = self.calls.get_mut(&r.call_id).expect("present");
                    c.refresh_ack = Some((f.cseq, ack.clone()));
                    let peer = c.peer;
                    self.send(peer, ack);
                }
            }
        } else if f.method == "UPDATE" && matches!(r.code, 405 | 501) {
            // Its Allow said UPDATE, its answer says not: the refresh goes as a re-INVITE.
            self.send_refresh(now, &r.call_id, "INVITE");
        } else {
            self.expire(now, &r.call_id);
        }
        true
    }
}

impl Refresh {
    /// Whether it is a re-INVITE (a caller's re-INVITE meanwhile is glare: 491).
    pub(super) fn is_invite(&self) -> bool {
        self.method == "INVITE"
    }
}
