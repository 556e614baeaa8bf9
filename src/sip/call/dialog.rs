//! The dialog once the call is up: requests from the caller in it (BYE, re-INVITE, UPDATE,
//! NOTIFY), answers to tonegate's own (BYE, REFER), and how a call ends.

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
        let cfg_se = self.cfg.session_expires_s;
        let (seed, contact, caps) = (self.seed, self.contact(), self.capabilities());
        let c = self.calls.get_mut(&r.call_id).expect("checked");
        if c.state == State::Answered && r.method == "INVITE" {
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
        if let Some((s, _)) = c.session {
            let se = r.session_expires.map(|(s, _)| s).unwrap_or(s).max(90);
            c.session = Some((se, now + Duration::from_secs(se.into())));
            extra.push(format!("Session-Expires: {se};refresher=uac"));
            extra.push("Require: timer".into());
        } else if r.supports_timer() {
            let se = r.session_expires.map(|(s, _)| s).unwrap_or(cfg_se).max(90);
            c.session = Some((se, now + Duration::from_secs(se.into())));
            extra.push(format!("Session-Expires: {se};refresher=uac"));
            extra.push("Require: timer".into());
        }
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
        let branch = self.branch();
        let (local, contact) = (self.cfg.local, self.contact());
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        c.local_cseq = c.local_cseq.max(1) + 1;
        let target = c
            .invite
            .contact
            .clone()
            .unwrap_or_else(|| format!("sip:{}", c.peer.addr));
        let transport = if c.peer.reliable() { "TCP" } else { "UDP" };
        let mut s = format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/{transport} {local};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: {};tag={}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {method}\r\n",
            c.invite.to_raw(),
            c.local_tag,
            c.invite.from_raw(),
            c.invite.call_id,
            c.local_cseq,
        );
        for rr in &c.invite.record_route {
            s.push_str(&format!("Route: {rr}\r\n"));
        }
        for h in extra {
            s.push_str(h);
            s.push_str("\r\n");
        }
        if method != "BYE" && !extra.iter().any(|h| h.starts_with("Contact")) {
            s.push_str(&format!("{contact}\r\n"));
        }
        s.push_str("Server: tonegate\r\nContent-Length: 0\r\n\r\n");
        let bytes = s.into_bytes();
        c.state = state;
        c.session = None;
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

    /// The call is over: its relay call ends; it is kept 64×T1 for retransmissions.
    pub(super) fn finish(&mut self, now: Instant, id: &str) {
        let Some(c) = self.calls.get_mut(id) else {
            return;
        };
        c.state = State::Done;
        c.retx = None;
        c.ring_until = None;
        c.session = None;
        c.until = Some(now + T64);
        if let Some(relay) = c.relay.take() {
            self.by_relay.remove(&relay);
            self.out.push_back(Output::EndCall { relay });
        }
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
