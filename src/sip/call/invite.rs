//! The INVITE server transaction: a new call's INVITE (refused, or a call set up with the
//! relay asked for), its 200 once the relay is ready, the ACK that confirms it, and CANCEL.

use super::*;

impl Endpoint {
    pub(super) fn new_invite(&mut self, now: Instant, peer: Peer, r: Box<Request>) {
        if let Some(c) = self.calls.get(&r.call_id) {
            // A retransmission: the last answer again (nothing new is set up).
            if c.invite.branch == r.branch {
                if let Some((_, b)) = &c.last_invite_response {
                    let b = b.clone();
                    self.send(peer, b);
                }
            } else {
                let b = r.response(482, "Loop Detected", None, &[], None);
                self.send(peer, b);
            }
            return;
        }
        let refuse = |me: &mut Self, code: u16, reason: &str, extra: &[String]| {
            let b = r.response(code, reason, Some(&me.tag()), extra, None);
            me.send(peer, b);
        };
        // The per-peer rate is checked first: a flood costs one map lookup per INVITE.
        let slot = self.rate.entry(peer.addr.ip()).or_insert((now, 0));
        if now >= slot.0 + Duration::from_secs(1) {
            *slot = (now, 0);
        }
        slot.1 += 1;
        if slot.1 > self.cfg.invites_per_second || self.overloaded || self.stopping {
            self.counts.busy += 1;
            return refuse(self, 503, "Service Unavailable", &["Retry-After: 1".into()]);
        }
        let Some(account) = r
            .user
            .as_deref()
            .and_then(|u| self.cfg.numbers.get(&digits(u)))
            .cloned()
        else {
            self.counts.not_found += 1;
            return refuse(self, 404, "Not Found", &[]);
        };
        if let Some(t) = r.require.iter().find(|t| !t.eq_ignore_ascii_case("timer")) {
            let extra = [format!("Unsupported: {t}")];
            return refuse(self, 420, "Bad Extension", &extra);
        }
        let stream = match offer_of(&r) {
            Ok(s) => s,
            Err(why) => {
                self.counts.not_acceptable += 1;
                let warn = [format!("Warning: 399 tonegate \"{}\"", quoted(&why))];
                return refuse(self, 488, "Not Acceptable Here", &warn);
            }
        };
        if let Some((se, _)) = r.session_expires {
            if se < self.cfg.min_se_s {
                let extra = [format!("Min-SE: {}", self.cfg.min_se_s)];
                return refuse(self, 422, "Session Interval Too Small", &extra);
            }
        }
        let tag = self.tag();
        let trying = r.response(100, "Trying", None, &[], None);
        let link_id = r.link_id().map(str::to_string);
        let call_id = r.call_id.clone();
        self.calls.insert(
            call_id.clone(),
            SipCall {
                state: State::SettingUp,
                peer,
                last_invite_response: Some((r.branch.clone(), trying.clone())),
                invite: r,
                local_tag: tag,
                relay: None,
                answer: None,
                sdp_version: 1,
                retx: None,
                ring_until: None,
                session: None,
                refresh: None,
                refresh_ack: None,
                local_cseq: 0,
                answered: Vec::new(),
                hang_up_pending: false,
                until: None,
            },
        );
        self.send(peer, trying);
        self.out.push_back(Output::CreateCall(NewSipCall {
            call_id,
            account,
            law: stream.law,
            event_pt: stream.event_pt,
            host: stream.host,
            remote: stream.remote,
            link_id,
        }));
    }

    pub(super) fn answer(&mut self, now: Instant, id: &str) {
        let extra_base = self.capabilities();
        let contact = self
            .calls
            .get(id)
            .map(|c| self.contact(c.peer))
            .unwrap_or_default();
        let Some(asked) = self
            .calls
            .get(id)
            .map(|c| (c.invite.supports_timer(), c.invite.session_expires))
        else {
            return;
        };
        // A vanished caller stops refreshing (or stops answering tonegate's refreshes) and
        // the call ends at the interval.
        let (session, timer) = self.grant(asked, None, now);
        let c = self.calls.get_mut(id).expect("present");
        let mut extra = vec![contact];
        extra.extend(extra_base);
        extra.extend(timer);
        c.session = Some(session);
        let ok = c
            .invite
            .response(200, "OK", Some(&c.local_tag), &extra, c.answer.as_deref());
        self.counts.answered += 1;
        c.last_invite_response = Some((c.invite.branch.clone(), ok.clone()));
        c.state = State::Answered;
        c.retx = Some(Retx::start(ok.clone(), now, c.peer.reliable()));
        let peer = c.peer;
        self.send(peer, ok);
    }

    pub(super) fn ack(&mut self, now: Instant, r: &Request) {
        let Some(c) = self.calls.get_mut(&r.call_id) else {
            return;
        };
        if r.to_tag.as_deref() != Some(c.local_tag.as_str()) {
            return;
        }
        match c.state {
            State::Answered => {
                c.retx = None;
                c.state = State::Confirmed;
                if c.hang_up_pending {
                    c.hang_up_pending = false;
                    match c.relay.clone() {
                        Some(relay) => self.hang_up(now, &relay),
                        None => self.send_bye(now, &r.call_id),
                    }
                }
            }
            // A re-INVITE's 200 is ACKed: stop its retransmissions.
            State::Confirmed => c.retx = None,
            State::Cancelled => self.finish(now, &r.call_id),
            _ => {}
        }
    }

    pub(super) fn cancel(&mut self, now: Instant, peer: Peer, r: &Request) {
        let ok = r.response(200, "OK", None, &[], None);
        let Some(c) = self.calls.get_mut(&r.call_id) else {
            let b = r.response(481, "Call/Transaction Does Not Exist", None, &[], None);
            return self.send(peer, b);
        };
        if c.invite.branch != r.branch {
            let b = r.response(481, "Call/Transaction Does Not Exist", None, &[], None);
            return self.send(peer, b);
        }
        self.send(peer, ok);
        let c = self.calls.get_mut(&r.call_id).expect("present");
        if matches!(c.state, State::SettingUp | State::Ringing) {
            self.refuse_pending(now, &r.call_id, 487, "Request Terminated", &[]);
        }
    }
}
