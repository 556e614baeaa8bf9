//! SIP messages in and out: [`parse`] (the one entry point for bytes from the network) reads a
//! message with ezk-sip-types' line parser and typed headers into the few fields the fallback
//! number acts on; [`Request::response`] writes an answer that copies what RFC 3261 §8.2.6.2
//! says it must (Via, From, To, Call-ID, CSeq). Sans-IO, and bounded: a message over
//! [`MAX_MESSAGE`] or with more than [`MAX_HEADERS`] header lines is refused before any header
//! is decoded.

use std::fmt::Write as _;

use bytes::Bytes;
use ezk_sip_types::header::typed::{CSeq, CallID, Contact, FromTo, SessionExpires, Via};
use ezk_sip_types::msg::{Line, MessageLine, PullParser};
use ezk_sip_types::parse::Parse;
use ezk_sip_types::print::AppendCtx;
use ezk_sip_types::uri::SipUriUserPart;
use ezk_sip_types::{Headers, Name};
use thiserror::Error;

/// Largest message accepted, head and body (a SIP offer is a few hundred bytes to a few KiB).
pub const MAX_MESSAGE: usize = 16 * 1024;
/// Most header lines in one message.
pub const MAX_HEADERS: usize = 64;
/// Longest value kept from a caller-controlled header we echo or key on (Call-ID, tags).
const MAX_ID: usize = 256;

/// Why bytes are not a message tonegate acts on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// Over [`MAX_MESSAGE`] bytes or [`MAX_HEADERS`] lines (answered 513 where possible).
    #[error("message too large")]
    TooLarge(Option<Box<Echo>>),
    /// Not a SIP message, or one missing what a response needs (answered 400 where the
    /// headers a response copies are there).
    #[error("malformed SIP message: {reason}")]
    Malformed {
        /// What is wrong, for the 400's reason phrase (never a header value).
        reason: &'static str,
        /// The headers a 400 copies, when they could be read.
        echo: Option<Box<Echo>>,
    },
}

/// The raw header values a response copies (Via, From, To, Call-ID, CSeq).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Echo {
    vias: Vec<String>,
    from: String,
    to: String,
    call_id: String,
    cseq: String,
}

impl Echo {
    /// A response with `code` and `reason` and no body, or `None` for a response or an ACK
    /// (neither is ever answered).
    pub fn response(&self, code: u16, reason: &str) -> Option<Vec<u8>> {
        if self.cseq.trim_end().ends_with("ACK") {
            return None;
        }
        let mut s = format!("SIP/2.0 {code} {reason}\r\n");
        for v in &self.vias {
            let _ = write!(s, "Via: {v}\r\n");
        }
        let _ = write!(
            s,
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\nServer: tonegate\r\nContent-Length: 0\r\n\r\n",
            self.from, self.to, self.call_id, self.cseq
        );
        Some(s.into_bytes())
    }

    fn of(headers: &Headers) -> Option<Echo> {
        let one = |n: &Name| headers.get_raw(n).next().map(|v| v.to_string());
        let vias: Vec<String> = headers.get_raw(&Name::VIA).map(|v| v.to_string()).collect();
        (!vias.is_empty()).then_some(())?;
        Some(Echo {
            vias,
            from: one(&Name::FROM)?,
            to: one(&Name::TO)?,
            call_id: one(&Name::CALL_ID)?,
            cseq: one(&Name::CSEQ)?,
        })
    }
}

/// Who refreshes a session (RFC 4028).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The caller.
    Uac,
    /// tonegate.
    Uas,
    /// Not said.
    Unspecified,
}

/// A request, as far as the fallback number reads it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method, upper case as sent (`INVITE`, `BYE`, ...).
    pub method: String,
    /// The Request-URI's user part (the dialled number), if any.
    pub user: Option<String>,
    /// The Request-URI's `tonegate-link-id` parameter, if any.
    pub uri_link_id: Option<String>,
    /// The top Via's branch.
    pub branch: String,
    /// The From tag.
    pub from_tag: Option<String>,
    /// The To tag (present: the request is within a dialog).
    pub to_tag: Option<String>,
    /// Call-ID.
    pub call_id: String,
    /// CSeq number.
    pub cseq: u32,
    /// The Contact URI, as written.
    pub contact: Option<String>,
    /// Record-Route values, in order (the route set of a dialog tonegate answers).
    pub record_route: Vec<String>,
    /// Content-Type, lower case, parameters dropped.
    pub content_type: Option<String>,
    /// Session-Expires, with who refreshes.
    pub session_expires: Option<(u32, Refresher)>,
    /// Option tags in Supported.
    pub supported: Vec<String>,
    /// Option tags in Require.
    pub require: Vec<String>,
    /// Methods in Allow (whether the caller takes UPDATE for a session refresh).
    pub allow: Vec<String>,
    /// `X-Tonegate-Link-Id`, if sent.
    pub header_link_id: Option<String>,
    /// The body.
    pub body: Bytes,
    echo: Echo,
}

/// A response to a request tonegate sent (BYE, REFER, NOTIFY's partner), as far as it matters.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub code: u16,
    /// Call-ID.
    pub call_id: String,
    /// CSeq number.
    pub cseq: u32,
    /// CSeq method.
    pub cseq_method: String,
    /// Session-Expires' interval (the answer to a session refresh), seconds.
    pub session_expires: Option<u32>,
}

/// One parsed message.
#[derive(Debug, Clone)]
pub enum Message {
    /// A request.
    Request(Box<Request>),
    /// A response.
    Response(Response),
    /// A CRLF keep-alive (RFC 5626): answered with a single CRLF over streams.
    KeepAlive,
}

impl Request {
    /// Whether it names the `timer` option tag in Supported or Require.
    pub fn supports_timer(&self) -> bool {
        self.supported
            .iter()
            .chain(&self.require)
            .any(|t| t.eq_ignore_ascii_case("timer"))
    }

    /// The link id the IVR passed, header first, then the URI parameter.
    pub fn link_id(&self) -> Option<&str> {
        self.header_link_id
            .as_deref()
            .or(self.uri_link_id.as_deref())
    }

    /// A response: `code reason`, the To tag added where the request had none, `extra` header
    /// lines (`Name: value`, no CRLF) and an optional SDP body.
    pub fn response(
        &self,
        code: u16,
        reason: &str,
        to_tag: Option<&str>,
        extra: &[String],
        sdp: Option<&str>,
    ) -> Vec<u8> {
        let e = &self.echo;
        let mut s = String::with_capacity(512 + sdp.map_or(0, str::len));
        let _ = write!(s, "SIP/2.0 {code} {reason}\r\n");
        for v in &e.vias {
            let _ = write!(s, "Via: {v}\r\n");
        }
        let _ = write!(s, "From: {}\r\nTo: {}", e.from, e.to);
        if let (None, Some(t), true) = (&self.to_tag, to_tag, code > 100) {
            let _ = write!(s, ";tag={t}");
        }
        let _ = write!(
            s,
            "\r\nCall-ID: {}\r\nCSeq: {}\r\nServer: tonegate\r\n",
            e.call_id, e.cseq
        );
        // A dialog-making answer carries the route set back (RFC 3261 §12.1.1), so the
        // caller's ACK and later requests pass the proxies that recorded it.
        if self.method == "INVITE" && (101..300).contains(&code) {
            for rr in &self.record_route {
                let _ = write!(s, "Record-Route: {rr}\r\n");
            }
        }
        for h in extra {
            let _ = write!(s, "{h}\r\n");
        }
        match sdp {
            Some(b) => {
                let _ = write!(
                    s,
                    "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
                    b.len()
                );
            }
            None => s.push_str("Content-Length: 0\r\n\r\n"),
        }
        s.into_bytes()
    }

    /// The raw From value (for requests tonegate sends in the dialog, as their To).
    pub fn from_raw(&self) -> &str {
        &self.echo.from
    }

    /// The raw To value (for requests tonegate sends in the dialog, as their From).
    pub fn to_raw(&self) -> &str {
        &self.echo.to
    }
}

/// Reads one message (a UDP datagram, or one framed from a stream). See the module docs.
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    if bytes.iter().all(|b| matches!(b, b'\r' | b'\n')) && !bytes.is_empty() {
        return Ok(Message::KeepAlive);
    }
    let buffer = Bytes::copy_from_slice(bytes);
    let mut parser = PullParser::new(&buffer, 0);
    let mut first: Option<&str> = None;
    let mut headers = Headers::new();
    let mut lines = 0;
    let mut bad_header = false;
    for item in &mut parser {
        let Ok(line) = item else {
            return Err(malformed("incomplete message head", None));
        };
        let Ok(line) = std::str::from_utf8(line) else {
            return Err(malformed("header line is not UTF-8", None));
        };
        if first.is_none() {
            first = Some(line);
            continue;
        }
        lines += 1;
        if lines > MAX_HEADERS {
            return Err(ParseError::TooLarge(Echo::of(&headers).map(Box::new)));
        }
        match Line::parse(&buffer, line) {
            Ok((_, l)) => headers.insert(l.name, l.value),
            Err(_) => bad_header = true,
        }
    }
    let echo = Echo::of(&headers).map(Box::new);
    if bytes.len() > MAX_MESSAGE {
        return Err(ParseError::TooLarge(echo));
    }
    let Some(first) = first else {
        return Err(malformed("empty message", None));
    };
    let line = match MessageLine::parse(&buffer)(first) {
        Ok((rest, l)) if rest.trim().is_empty() => l,
        _ => return Err(malformed("bad request line", echo)),
    };
    if bad_header {
        return Err(malformed("bad header line", echo));
    }
    let head_end = parser.head_end();
    let body = match headers.get_raw(&Name::CONTENT_LENGTH).next() {
        Some(v) => {
            let Ok(n) = v.trim().parse::<usize>() else {
                return Err(malformed("bad Content-Length", echo));
            };
            if head_end + n > buffer.len() {
                return Err(malformed("body shorter than Content-Length", echo));
            }
            buffer.slice(head_end..head_end + n)
        }
        None => buffer.slice(head_end..),
    };
    let call_id = match headers.get_named::<CallID>() {
        Ok(c) if !c.0.is_empty() && c.0.len() <= MAX_ID => c.0.to_string(),
        _ => return Err(malformed("bad Call-ID", echo)),
    };
    let Ok(cseq) = headers.get_named::<CSeq>() else {
        return Err(malformed("bad CSeq", echo));
    };
    match line {
        MessageLine::Response(status) => Ok(Message::Response(Response {
            code: status.code.into_u16(),
            call_id,
            cseq: cseq.cseq,
            cseq_method: cseq.method.to_string(),
            session_expires: headers
                .try_get_named::<SessionExpires>()
                .and_then(Result::ok)
                .map(|se| se.delta_secs),
        })),
        MessageLine::Request(rl) => {
            let Some(echo) = echo else {
                return Err(malformed("missing Via, From, To, Call-ID or CSeq", None));
            };
            let method = rl.method.to_string().to_ascii_uppercase();
            if !method.eq_ignore_ascii_case(&cseq.method.to_string()) {
                return Err(malformed("CSeq method differs", Some(echo)));
            }
            let Ok(via) = headers.get_named::<Via>() else {
                return Err(malformed("bad Via", Some(echo)));
            };
            let branch = via
                .params
                .get_val("branch")
                .map(|b| b.to_string())
                .unwrap_or_default();
            let (Ok(from), Ok(to)) = (
                headers.get::<FromTo>(Name::FROM),
                headers.get::<FromTo>(Name::TO),
            ) else {
                return Err(malformed("bad From or To", Some(echo)));
            };
            let tag = |t: Option<bytesstr::BytesStr>| {
                t.map(|t| t.to_string()).filter(|t| t.len() <= MAX_ID)
            };
            let user = match &rl.uri.user_part {
                SipUriUserPart::User(u) => Some(u.to_string()),
                _ => None,
            };
            let uri_link_id = rl
                .uri
                .uri_params
                .get_val("tonegate-link-id")
                .map(|v| v.to_string());
            let contact = headers
                .get_named::<Contact>()
                .ok()
                .map(|c| c.uri.uri.default_print_ctx().to_string());
            let tokens = |n: &Name| -> Vec<String> {
                headers
                    .get_raw(n)
                    .flat_map(|v| v.split(','))
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .collect()
            };
            let session_expires = match headers.try_get_named::<SessionExpires>() {
                None => None,
                Some(Ok(se)) => Some((
                    se.delta_secs,
                    match se.refresher {
                        ezk_sip_types::header::typed::Refresher::Uac => Refresher::Uac,
                        ezk_sip_types::header::typed::Refresher::Uas => Refresher::Uas,
                        ezk_sip_types::header::typed::Refresher::Unspecified => {
                            Refresher::Unspecified
                        }
                    },
                )),
                Some(Err(_)) => return Err(malformed("bad Session-Expires", Some(echo))),
            };
            let x_link = Name::custom("X-Tonegate-Link-Id", &["x-tonegate-link-id"]);
            let header_link_id = headers
                .get_raw(&x_link)
                .next()
                .map(|v| v.trim().to_string());
            Ok(Message::Request(Box::new(Request {
                method,
                user,
                uri_link_id,
                branch,
                from_tag: tag(from.tag),
                to_tag: tag(to.tag),
                call_id,
                cseq: cseq.cseq,
                contact,
                record_route: headers
                    .get_raw(&Name::RECORD_ROUTE)
                    .map(|v| v.to_string())
                    .collect(),
                content_type: headers.get_raw(&Name::CONTENT_TYPE).next().map(|v| {
                    v.split(';')
                        .next()
                        .unwrap_or_default()
                        .trim()
                        .to_ascii_lowercase()
                }),
                session_expires,
                supported: tokens(&Name::SUPPORTED),
                require: tokens(&Name::REQUIRE),
                allow: tokens(&Name::ALLOW),
                header_link_id,
                body,
                echo: *echo,
            })))
        }
    }
}

fn malformed(reason: &'static str, echo: Option<Box<Echo>>) -> ParseError {
    ParseError::Malformed { reason, echo }
}

/// How long the message at the start of `buf` (from a stream) is, once it is all there:
/// `Ok(None)` while more is needed; an error when its head or body would pass [`MAX_MESSAGE`].
pub fn framed_len(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    // Keep-alive CRLFs between messages.
    let lead = buf
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    if lead == buf.len() {
        return Ok(if lead >= 4 { Some(lead) } else { None });
    }
    if lead > 0 {
        return Ok(Some(lead));
    }
    let Some(head) = memfind(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_MESSAGE {
            return Err(ParseError::TooLarge(None));
        }
        return Ok(None);
    };
    let head_end = head + 4;
    let head_text = String::from_utf8_lossy(&buf[..head]);
    let mut len = None;
    for l in head_text.split("\r\n") {
        if let Some((n, v)) = l.split_once(':') {
            let n = n.trim();
            if n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("l") {
                len = v.trim().parse::<usize>().ok();
                if len.is_none() {
                    return Err(malformed("bad Content-Length", None));
                }
            }
        }
    }
    // Over a stream the length is required (RFC 3261 §18.3).
    let Some(len) = len else {
        return Err(malformed("no Content-Length on a stream", None));
    };
    if head_end + len > MAX_MESSAGE {
        return Err(ParseError::TooLarge(None));
    }
    Ok((buf.len() >= head_end + len).then_some(head_end + len))
}

fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests;
