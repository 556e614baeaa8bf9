//! RTP (RFC 3550) and telephone-event (RFC 4733) packets: validation, fields, in-place rewrites.
//!
//! Parsing is rtp-rs's `RtpReader`, which checks version, CSRC list, extension and padding
//! against the buffer length before any field is read. Rewrites touch the fixed header in place.

use thiserror::Error;

/// Largest datagram the relay accepts (Ethernet MTU); anything longer is dropped.
pub const MAX_DATAGRAM: usize = 1500;

/// Why a datagram is not a usable RTP packet.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RtpError {
    /// Shorter than a fixed RTP header, or headers run past the end.
    #[error("truncated RTP packet")]
    Truncated,
    /// Version other than 2.
    #[error("RTP version {0} (need 2)")]
    Version(u8),
    /// Padding length inconsistent with the packet.
    #[error("invalid RTP padding")]
    Padding,
    /// Longer than [`MAX_DATAGRAM`].
    #[error("datagram of {0} bytes exceeds {MAX_DATAGRAM}")]
    Oversize(usize),
}

/// The fields of a validated RTP packet the relay uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Payload type (7 bits).
    pub payload_type: u8,
    /// Marker bit.
    pub marker: bool,
    /// Sequence number.
    pub seq: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Byte offset of the payload.
    pub payload_start: usize,
    /// Byte offset just past the payload (padding excluded).
    pub payload_end: usize,
}

impl RtpHeader {
    /// Validates `buf` as an RTP packet and reads its header.
    pub fn parse(buf: &[u8]) -> Result<RtpHeader, RtpError> {
        if buf.len() > MAX_DATAGRAM {
            return Err(RtpError::Oversize(buf.len()));
        }
        let r = rtp_rs::RtpReader::new(buf).map_err(|e| match e {
            rtp_rs::RtpReaderError::UnsupportedVersion(v) => RtpError::Version(v),
            rtp_rs::RtpReaderError::PaddingLengthInvalid(_) => RtpError::Padding,
            _ => RtpError::Truncated,
        })?;
        let payload_start = r.payload_offset();
        Ok(RtpHeader {
            payload_type: r.payload_type(),
            marker: r.mark(),
            seq: u16::from(r.sequence_number()),
            timestamp: r.timestamp(),
            ssrc: r.ssrc(),
            payload_start,
            payload_end: payload_start + r.payload().len(),
        })
    }
}

/// Writes a new sequence number into an RTP packet's fixed header.
pub fn set_seq(buf: &mut [u8], seq: u16) {
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
}

/// Whether a datagram on an rtcp-mux port is RTCP (RFC 5761 §4: second byte 192-223).
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 2 && (192..=223).contains(&buf[1])
}

/// Checks that a datagram looks like an RTCP compound packet: version 2, and its length fields
/// tile the datagram exactly (RFC 3550 §6.1).
pub fn valid_rtcp(buf: &[u8]) -> bool {
    if buf.len() < 4 || buf.len() > MAX_DATAGRAM {
        return false;
    }
    let mut at = 0;
    while at < buf.len() {
        if buf.len() - at < 4 || buf[at] >> 6 != 2 {
            return false;
        }
        let words = u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize;
        at += (words + 1) * 4;
    }
    at == buf.len()
}

/// One RFC 4733 §2.3 named-event block.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0-15 are the DTMF keys).
    pub code: u8,
    /// End bit: the last packet(s) of the event.
    pub end: bool,
    /// Volume, 0 to -63 dBm0 as a positive number.
    pub volume: u8,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

impl core::fmt::Debug for TelephoneEvent {
    // The code is a key the caller pressed: never shown.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TelephoneEvent")
            .field("code", &"<redacted>")
            .field("end", &self.end)
            .field("duration", &self.duration)
            .finish()
    }
}

impl TelephoneEvent {
    /// Reads the first event block of a telephone-event payload (RFC 4733 allows more than one
    /// only for redundancy of earlier events, which the first block's timestamp supersedes).
    pub fn parse(payload: &[u8]) -> Option<TelephoneEvent> {
        if payload.len() < 4 {
            return None;
        }
        Some(TelephoneEvent {
            code: payload[0],
            end: payload[1] & 0x80 != 0,
            volume: payload[1] & 0x3F,
            duration: u16::from_be_bytes([payload[2], payload[3]]),
        })
    }

    /// Writes this event into the first four bytes of `payload`.
    pub fn write(&self, payload: &mut [u8]) {
        payload[0] = self.code;
        payload[1] = (if self.end { 0x80 } else { 0 }) | (self.volume & 0x3F);
        payload[2..4].copy_from_slice(&self.duration.to_be_bytes());
    }
}

/// Builds an RTP packet into `out`; returns its length. For tests, prompts and the load tool.
#[allow(clippy::too_many_arguments)]
pub fn write_packet(
    out: &mut [u8],
    pt: u8,
    marker: bool,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: &[u8],
) -> usize {
    out[0] = 0x80;
    out[1] = (if marker { 0x80 } else { 0 }) | (pt & 0x7F);
    out[2..4].copy_from_slice(&seq.to_be_bytes());
    out[4..8].copy_from_slice(&ts.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.to_be_bytes());
    out[12..12 + payload.len()].copy_from_slice(payload);
    12 + payload.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_and_rewrites_fields() {
        let mut buf = [0u8; 64];
        let n = write_packet(&mut buf, 0, true, 65535, 0xDEAD_BEEF, 42, &[0xFF; 20]);
        let h = RtpHeader::parse(&buf[..n]).unwrap();
        assert_eq!(
            (h.payload_type, h.marker, h.seq, h.timestamp, h.ssrc),
            (0, true, 65535, 0xDEAD_BEEF, 42)
        );
        assert_eq!((h.payload_start, h.payload_end), (12, 32));
        set_seq(&mut buf, 7);
        assert_eq!(RtpHeader::parse(&buf[..n]).unwrap().seq, 7);
    }

    #[test]
    fn rejects_bad_packets() {
        assert_eq!(RtpHeader::parse(&[0x80; 11]), Err(RtpError::Truncated));
        let mut v1 = [0u8; 20];
        v1[0] = 0x40;
        assert_eq!(RtpHeader::parse(&v1), Err(RtpError::Version(1)));
        // CSRC count of 15 but no CSRCs.
        let mut cc = [0u8; 20];
        cc[0] = 0x8F;
        assert_eq!(RtpHeader::parse(&cc), Err(RtpError::Truncated));
        // Padding flag with a padding length past the packet.
        let mut pad = [0u8; 20];
        pad[0] = 0xA0;
        pad[19] = 200;
        assert_eq!(RtpHeader::parse(&pad), Err(RtpError::Padding));
        assert_eq!(
            RtpHeader::parse(&[0x80; 1600]),
            Err(RtpError::Oversize(1600))
        );
    }

    #[test]
    fn rtcp_demux_and_validation() {
        // A minimal receiver report: V=2, RC=0, PT=201, length 1 (8 bytes).
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        assert!(is_rtcp(&rr) && valid_rtcp(&rr));
        assert!(!is_rtcp(&[0x80, 0, 0, 0]));
        assert!(!valid_rtcp(&[0x80, 201, 0, 5, 0, 0, 0, 1]));
        assert!(!valid_rtcp(&[0x40, 201, 0, 1, 0, 0, 0, 1]));
    }

    #[test]
    fn telephone_event_round_trip() {
        let e = TelephoneEvent {
            code: 11,
            end: true,
            volume: 10,
            duration: 800,
        };
        let mut p = [0u8; 4];
        e.write(&mut p);
        assert_eq!(p, [11, 0x8A, 0x03, 0x20]);
        assert_eq!(TelephoneEvent::parse(&p), Some(e));
        assert_eq!(TelephoneEvent::parse(&p[..3]), None);
        assert!(!format!("{e:?}").contains("11"));
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..1600)) {
            if let Ok(h) = RtpHeader::parse(&data) {
                prop_assert!(h.payload_start <= h.payload_end && h.payload_end <= data.len());
            }
            let _ = valid_rtcp(&data);
            let _ = TelephoneEvent::parse(&data);
        }
    }
}
