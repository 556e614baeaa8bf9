//! The dialog once the call is up: requests from the caller in it (BYE, re-INVITE, UPDATE,
//! NOTIFY), answers to tonegate's own (BYE, REFER), and how a call ends (shutdown included).

use super::*;
use crate::sip::sdp::answer_address;

impl Endpoint {
    pub(super) fn in_dialog(&mut self, now: Instant, peer: Peer, r: Box<Request>) {
        let known = self
            .calls
            .get(&r.call_id)
            .filter(|c| r.to_tag.as_deref() == Some(c.local_tag.as_str()));
        let Some(c) = known else {
            let b = r.response(481, "Call/Transaction Does Not Exist", None, &[], None);
            return self.send(peer, b);
        };
        // A repeat of a request already answered gets the same answer.
        if let Some((_, b)) = c.answered.iter().find(|(br, _)| *br == r.branch) {
            let b = b.clone();
            return self.send(peer, b);
        }
        if r.method == "INVITE" {
            if let Some((br, b)) = &c.last_invite_response {
                if *br == r.branch {
                    let b = b.clone();
                    return self.send(peer, b);
                }
            }
        }
        let state = c.state;
        if state == State::Done {
            let b = r.response(481, "Call/Transaction Does Not Exist", None, &[], None);
            return self.send(peer, b);
        }
        match r.method.as_str() {
            "BYE" => {
                let b = r.response(200, "OK", None, &[], None);
                self.remember(&r, b.clone());
                self.send(peer, b);
                self.finish(now, &r.call_id);
            }
            "INVITE" | "UPDATE" => self.refresh(now, peer, r),
            "NOTIFY" => {
                let b = r.response(200, "OK", None, &[], None);
                self.remember(&r, b.clone());
                self.send(peer, b);
                // The REFER's progress (RFC 3515): a final status line in the sipfrag ends
                // tonegate's part of the call.
                let frag = String::from_utf8_lossy(&r.body);
                let code = frag
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse::<u16>().ok());
                if state == State::Referring && code.is_some_and(|c| c >= 200) {
                    self.send_bye(now, &r.call_id);
                }
            }
            _ => {}
        }
    }

    /// A re-INVITE or UPDATE: new media (the same ports), a session refresh.
    pub(super) fn refresh(&mut self, now: Instant, peer: Peer, r: Box<Request>) {
        let (seed, contact, caps) = (self.seed, self.contact(peer), self.capabilities());
        let current = self.calls.get(&r.call_id).and_then(|c| c.session);
        // A caller already refreshing knows timers even where a refresh omits `Supported`.
        let knows = r.supports_timer() || current.is_some_and(|s| !s.ours);
        let interval = current.map(|s| s.interval);
        let (session, timer) = self.grant((knows, r.session_expires), interval, now);
        let c = self.calls.get_mut(&r.call_id).expect("checked");
        // An INVITE of ours is out (tonegate's refresh): glare (RFC 3261 §14.2).
        let ours_out = c.refresh.as_ref().is_some_and(|f| f.is_invite());
        if (c.state == State::Answered || ours_out) && r.method == "INVITE" {
            let b = r.response(491, "Request Pending", None, &[], None);
            return self.send(peer, b);
        }
        let has_offer = !r.body.is_empty();
        let mut out = None;
        if has_offer {
            match offer_of(&r) {
                Ok(s) => {
                    if let (Some(relay), Some(ans)) = (&c.relay, &c.answer) {
                        c.sdp_version += 1;
                        let local = answer_address(ans);
                        c.answer = Some(answer_sdp(&s, local, seed, c.sdp_version));
                        out = Some(Output::MediaMoved {
                            relay: relay.clone(),
                            host: s.host,
                            remote: s.remote,
                        });
                    }
                }
                Err(why) => {
                    let warn = [format!("Warning: 399 tonegate \"{}\"", quoted(&why))];
                    let b = r.response(488, "Not Acceptable Here", None, &warn, None);
                    if r.method == "INVITE" {
                        c.last_invite_response = Some((r.branch.clone(), b.clone()));
                    }
                    return self.send(peer, b);
                }
            }
        }
        let mut extra = vec![contact];
        extra.extend(caps);
        extra.extend(timer);
        // The caller's refresh is a refresh, whoever was to send it.
        c.session = Some(session);
        // A re-INVITE without an offer gets ours; an UPDATE without one, none.
        let body = (has_offer || r.method == "INVITE")
            .then(|| c.answer.clone())
            .flatten();
        let b = r.response(200, "OK", None, &extra, body.as_deref());
        if r.method == "INVITE" {
            c.last_invite_response = Some((r.branch.clone(), b.clone()));
            if !c.peer.reliable() {
                c.retx = Some(Retx::start(b.clone(), now, false));
            }
        } else {
            self.remember(&r, b.clone());
        }
        if let Some(o) = out {
            self.out.push_back(o);
        }
        self.send(peer, b);
    }

    pub(super) fn on_response(&mut self, now: Instant, r: Response) {
        if self.refresh_answered(now, &r) {
            return;
        }
        let Some(c) = self.calls.get_mut(&r.call_id) else {
            return;
        };
        if r.cseq != c.local_cseq || r.code < 200 {
            return;
        }
        c.retx = None;
        match (c.state, r.cseq_method.as_str()) {
            (State::Ending, "BYE") => self.finish(now, &r.call_id),
            (State::Referring, "REFER") if r.code >= 300 => self.send_bye(now, &r.call_id),
            // Accepted: the NOTIFY says how the transfer went; give it 64×T1.
            (State::Referring, "REFER") => c.until = Some(now + T64),
            _ => {}
        }
    }

    pub(super) fn final_to_invite(&mut self, now: Instant, id: &str, b: Vec<u8>, state: State) {
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        c.last_invite_response = Some((c.invite.branch.clone(), b.clone()));
        c.state = state;
        if !c.peer.reliable() {
            c.retx = Some(Retx::start(b.clone(), now, false));
        } else {
            c.until = Some(now + T64);
        }
        let peer = c.peer;
        self.send(peer, b);
    }

    pub(super) fn send_bye(&mut self, now: Instant, id: &str) {
        self.send_request(now, id, "BYE", &[], State::Ending);
    }

    /// Sends a request of ours in the dialog (BYE, REFER), retransmitted over UDP.
    pub(super) fn send_request(
        &mut self,
        now: Instant,
        id: &str,
        method: &str,
        extra: &[String],
        state: State,
    ) {
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        c.local_cseq = c.local_cseq.max(1) + 1;
        let cseq = c.local_cseq;
        let Some(bytes) = self.dialog_request(id, method, cseq, extra, None) else {
            return;
        };
        let c = self.calls.get_mut(id).expect("present");
        c.state = state;
        c.session = None;
        c.refresh = None;
        c.retx = Some(Retx::start(bytes.clone(), now, c.peer.reliable()));
        if let Some(relay) = c.relay.take() {
            // The media ends with the call: a BYE's answer may never come.
            if state == State::Ending {
                self.by_relay.remove(&relay);
                self.out.push_back(Output::EndCall { relay });
            } else {
                c.relay = Some(relay);
            }
        }
        // The peer that sent the INVITE is the next hop back (a record-routing proxy, or the
        // caller itself).
        let c = self.calls.get(id).expect("present");
        let to = c.peer;
        self.send(to, bytes);
    }

    /// A request of ours in call `id`'s dialog with CSeq `cseq`, `extra` header lines and
    /// an optional SDP body.
    pub(super) fn dialog_request(
        &mut self,
        id: &str,
        method: &str,
        cseq: u32,
        extra: &[String],
        sdp: Option<&str>,
    ) -> Option<Vec<u8>> {
        let branch = self.branch();
        let c = self.calls.get(id)?;
        let contact = self.contact(c.peer);
        let (transport, local) = match (c.peer.transport, self.cfg.tls_local) {
            (Transport::Udp, _) => ("UDP", self.cfg.local),
            (Transport::Tcp(_), _) => ("TCP", self.cfg.local),
            (Transport::Tls(_), at) => ("TLS", at.unwrap_or(self.cfg.local)),
        };
        let target = c
            .invite
            .contact
            .clone()
            .unwrap_or_else(|| format!("sip:{}", c.peer.addr));
        let mut s = format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/{transport} {local};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: {};tag={}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {method}\r\n",
            c.invite.to_raw(),
            c.local_tag,
            c.invite.from_raw(),
            c.invite.call_id,
            cseq,
        );
        for rr in &c.invite.record_route {
            s.push_str(&format!("Route: {rr}\r\n"));
        }
        for h in extra {
            s.push_str(h);
            s.push_str("\r\n");
        }
        // BYE and ACK need no Contact; the requests that may change the target do.
        if !matches!(method, "BYE" | "ACK") && !extra.iter().any(|h| h.starts_with("Contact")) {
            s.push_str(&format!("{contact}\r\n"));
        }
        s.push_str("Server: tonegate\r\n");
        match sdp {
            Some(b) => s.push_str(&format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None => s.push_str("Content-Length: 0\r\n\r\n"),
        }
        Some(s.into_bytes())
    }

    /// The call is over: its relay call ends; it is kept 64×T1 for retransmissions.
    pub(super) fn finish(&mut self, now: Instant, id: &str) {
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        c.state = State::Done;
        c.retx = None;
        c.ring_until = None;
        c.session = None;
        c.refresh = None;
        c.until = Some(now + T64);
        if let Some(relay) = c.relay.take() {
            self.by_relay.remove(&relay);
            self.out.push_back(Output::EndCall { relay });
        }
    }

    /// tonegate is stopping: a BYE in every call that is up (or answered, ACK or not) and
    /// `503` to every INVITE not yet answered; new INVITEs get `503` from now on. The shell
    /// waits (briefly) for [`hanging_up`](Self::hanging_up) to reach 0.
    pub fn shut_down(&mut self, now: Instant) {
        self.stopping = true;
        let ids: Vec<String> = self.calls.keys().cloned().collect();
        for id in ids {
            match self.calls[&id].state {
                State::SettingUp | State::Ringing => {
                    let extra = ["Retry-After: 5".to_string()];
                    self.refuse_pending(now, &id, 503, "Service Unavailable", &extra);
                }
                State::Answered | State::Confirmed | State::Referring => self.send_bye(now, &id),
                State::Ending | State::Cancelled | State::Done => {}
            }
        }
    }

    /// Ends call `id`, not yet answered, with a final `code` to its INVITE (and its relay
    /// call, if it has one).
    pub(super) fn refuse_pending(
        &mut self,
        now: Instant,
        id: &str,
        code: u16,
        reason: &str,
        extra: &[String],
    ) {
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        let b = c
            .invite
            .response(code, reason, Some(&c.local_tag.clone()), extra, None);
        c.ring_until = None;
        if let Some(relay) = c.relay.take() {
            self.by_relay.remove(&relay);
            self.out.push_back(Output::EndCall { relay });
        }
        self.final_to_invite(now, id, b, State::Cancelled);
    }

    pub(super) fn remember(&mut self, r: &Request, b: Vec<u8>) {
        if let Some(c) = self.calls.get_mut(&r.call_id) {
            // Bounded: a dialog's repeated requests cannot grow it without end.
            if c.answered.len() >= 16 {
                c.answered.remove(0);
            }
            c.answered.push((r.branch.clone(), b));
        }
    }
}
