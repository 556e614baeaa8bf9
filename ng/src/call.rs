//! One ng call as the protocol sees it: its two parties (by tag), their labels and where their
//! media comes from. The rule for whose SDP an offer or answer carries is here, once.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use crate::command::{Named, Signal};
use crate::sdp::Sdp;
use crate::NgError;

/// A party of an ng call. The offerer (the first offer's `from-tag`) is the caller, whose keys
/// are masked toward the answerer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The first offer's `from-tag`: the caller.
    Offerer,
    /// The other tag: the agent's side.
    Answerer,
}

impl Party {
    /// Index into per-party arrays (offerer 0).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The other party.
    pub fn other(self) -> Party {
        match self {
            Party::Offerer => Party::Answerer,
            Party::Answerer => Party::Offerer,
        }
    }
}

/// One ng call (one SIP Call-ID), over one relay call.
#[derive(Debug, Clone)]
pub struct NgCall {
    /// The relay call carrying its media.
    pub relay_id: String,
    /// The first offer's `from-tag`: the caller, whose keys are masked.
    pub offerer: String,
    /// The other party's tag, once a signal named it.
    pub answerer: Option<String>,
    /// Labels by tag.
    pub labels: HashMap<String, String>,
    /// The relay's addresses facing each party.
    pub locals: [SocketAddr; 2],
    /// Each party's media host, from its SDP.
    pub hosts: [Option<IpAddr>; 2],
    /// Each party's media address, from its SDP.
    pub remotes: [Option<SocketAddr>; 2],
    /// When the first offer came (Unix seconds).
    pub created: u64,
    /// When the last offer or answer came (Unix seconds).
    pub last_signal: u64,
}

/// What an offer or answer on a live call changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The party whose media moved, and where to (the relay must send there and latch within
    /// that host); `None` when unchanged or on hold.
    pub moved: Option<(Party, SocketAddr)>,
    /// The SDP rewritten for the other party: media to the relay leg facing it.
    pub sdp: String,
}

impl NgCall {
    /// The call a first offer sets up: `locals` are the relay's addresses facing the offerer
    /// and the answerer; the offer's SDP named `host` (with its port in `remote`).
    pub fn new(
        relay_id: String,
        offer: &Signal,
        locals: [SocketAddr; 2],
        host: Option<IpAddr>,
        remote: Option<SocketAddr>,
        now: u64,
    ) -> NgCall {
        let mut call = NgCall {
            relay_id,
            offerer: offer.tag.clone(),
            answerer: None,
            labels: HashMap::new(),
            locals,
            hosts: [host, None],
            remotes: [
                remote.map(|r| SocketAddr::new(host.unwrap_or(r.ip()), r.port())),
                None,
            ],
            created: now,
            last_signal: now,
        };
        call.label(offer);
        call
    }

    /// The offer's SDP rewritten for the answerer (the first offer of a call).
    pub fn offer_sdp(&self, offer: &Signal, sdp: &Sdp) -> String {
        sdp.rewrite(self.locals[Party::Answerer.index()], offer.replace_origin)
    }

    /// A later offer (re-invite, hold) or an answer: the party whose SDP it is (the offerer's
    /// tag, else the answerer, named by the first signal that is not the offerer's), where its
    /// media now comes from, and the SDP for the other party.
    pub fn apply(&mut self, signal: &Signal, sdp: &Sdp, now: u64) -> Applied {
        let party = if signal.tag == self.offerer {
            Party::Offerer
        } else {
            self.answerer.get_or_insert_with(|| signal.tag.clone());
            Party::Answerer
        };
        let host = signal.media_host(sdp.stream());
        let port = sdp.stream().remote.map(|r| r.port());
        let moved = match (host, port) {
            (Some(host), Some(port)) => {
                let to = SocketAddr::new(host, port);
                (self.remotes[party.index()] != Some(to)).then(|| {
                    self.hosts[party.index()] = Some(host);
                    self.remotes[party.index()] = Some(to);
                    (party, to)
                })
            }
            _ => None,
        };
        self.label(signal);
        self.last_signal = now;
        Applied {
            moved,
            sdp: sdp.rewrite(self.locals[party.other().index()], signal.replace_origin),
        }
    }

    /// The party a `block`/`unblock` names: `Some(party)`, or `None` for the whole call.
    pub fn party(&self, named: &Named) -> Result<Option<Party>, NgError> {
        let of_tag = |tag: &str| {
            if tag == self.offerer {
                Ok(Some(Party::Offerer))
            } else if self.answerer.as_deref() == Some(tag) {
                Ok(Some(Party::Answerer))
            } else {
                Err(NgError::UnknownTag)
            }
        };
        match named {
            Named::Everyone => Ok(None),
            Named::Label(label) => {
                let tag = self
                    .labels
                    .iter()
                    .find(|(_, l)| *l == label)
                    .map(|(t, _)| t.as_str())
                    .ok_or(NgError::UnknownLabel)?;
                of_tag(tag)
            }
            Named::Address(addr) => match self.hosts.iter().position(|h| *h == Some(*addr)) {
                Some(0) => Ok(Some(Party::Offerer)),
                Some(_) => Ok(Some(Party::Answerer)),
                None => Err(NgError::UnknownAddress),
            },
            Named::Tag(tag) => of_tag(tag),
        }
    }

    /// The answerer's tag (empty until a signal named it).
    pub fn answerer_tag(&self) -> &str {
        self.answerer.as_deref().unwrap_or_default()
    }

    fn label(&mut self, signal: &Signal) {
        if let Some(l) = &signal.label {
            self.labels.insert(signal.tag.clone(), l.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Incoming};

    fn signal(d: &str) -> Signal {
        match Incoming::read(format!("c d{d}e").as_bytes())
            .command
            .unwrap()
        {
            Command::Offer(s) | Command::Answer(s) => s,
            other => panic!("{other:?}"),
        }
    }

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

    fn with_sdp(head: &str, sdp: &str) -> Signal {
        signal(&format!("{head}3:sdp{}:{sdp}", sdp.len()))
    }

    #[test]
    fn the_first_other_tag_is_the_answerer_whatever_the_command() {
        let locals = [
            "127.0.0.1:30000".parse().unwrap(),
            "127.0.0.1:30002".parse().unwrap(),
        ];
        let offer = with_sdp(
            "7:command5:offer7:call-id1:x8:from-tag1:a5:label6:caller",
            SDP,
        );
        let sdp = offer.sdp().unwrap();
        let host = offer.media_host(sdp.stream());
        let mut call = NgCall::new("r".into(), &offer, locals, host, sdp.stream().remote, 1);
        assert!(call.offer_sdp(&offer, &sdp).contains("m=audio 30002 "));
        assert_eq!(
            call.party(&Named::Label("caller".into())),
            Ok(Some(Party::Offerer))
        );
        // The answer's SDP is the to-tag party's: its media moves, the offerer gets the SDP.
        let answer_sdp = SDP.replace("10.0.0.1", "10.0.0.2").replace("4000", "5000");
        let answer = with_sdp("7:command6:answer7:call-id1:x6:to-tag1:b", &answer_sdp);
        let a = call.apply(&answer, &answer.sdp().unwrap(), 2);
        assert_eq!(
            a.moved,
            Some((Party::Answerer, "10.0.0.2:5000".parse().unwrap()))
        );
        assert!(a.sdp.contains("m=audio 30000 "));
        assert_eq!((call.answerer_tag(), call.last_signal), ("b", 2));
        // The same answer again moves nothing; a re-offer from the answerer is the answerer's.
        assert_eq!(call.apply(&answer, &answer.sdp().unwrap(), 3).moved, None);
        let reoffer = with_sdp("7:command5:offer7:call-id1:x8:from-tag1:b", SDP);
        let r = call.apply(&reoffer, &reoffer.sdp().unwrap(), 4);
        assert_eq!(
            r.moved,
            Some((Party::Answerer, "10.0.0.1:4000".parse().unwrap()))
        );
        assert_eq!(
            call.party(&Named::Tag("b".into())),
            Ok(Some(Party::Answerer))
        );
        assert_eq!(
            call.party(&Named::Tag("z".into())),
            Err(NgError::UnknownTag)
        );
        assert_eq!(
            call.party(&Named::Address("10.9.9.9".parse().unwrap())),
            Err(NgError::UnknownAddress)
        );
        assert_eq!(call.party(&Named::Everyone), Ok(None));
    }
}
