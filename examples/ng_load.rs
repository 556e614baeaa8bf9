//! ng control-protocol load: offers (each followed by its answer and delete) at a fixed rate
//! against an ng listener on loopback — tonegate's, or rtpengine's for comparison — and the
//! reply latency per command; then as many call set-ups per second as the node sustains.
//!
//! ```sh
//! cargo run --release --example ng_load -- --target 127.0.0.1:2223 --rate 200 --seconds 10
//! ```
//!
//! Bounded by count and time: at most `rate × seconds` calls in the paced run, and `seconds`
//! of closed-loop set-ups.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tonegate::ng::bencode::{decode, Value};

struct Args {
    target: SocketAddr,
    rate: u32,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        target: "127.0.0.1:2223".parse().unwrap(),
        rate: 200,
        seconds: 10,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let val = v.get(i + 1).cloned().unwrap_or_default();
        match v[i].as_str() {
            "--target" => a.target = val.parse().expect("--target HOST:PORT"),
            "--rate" => a.rate = val.parse().expect("--rate N"),
            "--seconds" => a.seconds = val.parse().expect("--seconds N"),
            other => panic!("unknown argument {other} (--target, --rate, --seconds)"),
        }
        i += 2;
    }
    assert!(a.target.ip().is_loopback(), "loopback targets only");
    assert!(a.rate > 0 && a.rate <= 5000 && a.seconds <= 600);
    a
}

fn sdp(port: u16) -> Value {
    Value::str(&format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    ))
}

struct Client {
    sock: UdpSocket,
    target: SocketAddr,
    n: u64,
}

impl Client {
    /// One request; its reply latency, and whether the result was ok.
    fn request(&mut self, pairs: Vec<(&str, Value)>) -> (Duration, bool) {
        self.n += 1;
        let cookie = format!("load{}", self.n);
        let mut d = cookie.clone().into_bytes();
        d.push(b' ');
        d.extend(Value::dict(pairs).encode());
        let t = Instant::now();
        self.sock.send_to(&d, self.target).unwrap();
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                return (t.elapsed(), false);
            };
            if buf[..n].starts_with(cookie.as_bytes()) {
                let ok = decode(&buf[cookie.len() + 1..n])
                    .ok()
                    .and_then(|v| match v {
                        Value::Dict(d) => d
                            .into_iter()
                            .find(|(k, _)| k == b"result")
                            .and_then(|(_, v)| v.as_str().map(|s| s == "ok")),
                        _ => None,
                    })
                    .unwrap_or(false);
                return (t.elapsed(), ok);
            }
        }
    }

    /// offer, answer, delete of one call; the three latencies.
    fn call(&mut self, i: u64) -> Option<[Duration; 3]> {
        let id = Value::str(&format!("load-{}-{i}", std::process::id()));
        let (o, ok1) = self.request(vec![
            ("command", Value::str("offer")),
            ("call-id", id.clone()),
            ("from-tag", Value::str("a")),
            ("sdp", sdp(20000 + (i % 20000) as u16)),
            ("flags", Value::List(vec![Value::str("trust-address")])),
        ]);
        let (a, ok2) = self.request(vec![
            ("command", Value::str("answer")),
            ("call-id", id.clone()),
            ("from-tag", Value::str("a")),
            ("to-tag", Value::str("b")),
            ("sdp", sdp(40000 + (i % 20000) as u16)),
            ("flags", Value::List(vec![Value::str("trust-address")])),
        ]);
        let (d, ok3) = self.request(vec![
            ("command", Value::str("delete")),
            ("call-id", id),
            ("from-tag", Value::str("a")),
        ]);
        (ok1 && ok2 && ok3).then_some([o, a, d])
    }
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

fn main() {
    let a = args();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut c = Client {
        sock,
        target: a.target,
        n: 0,
    };
    // Paced: one call every 1/rate s.
    let total = a.rate as u64 * a.seconds;
    let gap = Duration::from_secs_f64(1.0 / a.rate as f64);
    let start = Instant::now();
    let (mut lat, mut failed) = ([Vec::new(), Vec::new(), Vec::new()], 0u64);
    for i in 0..total {
        let due = start + gap * i as u32;
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        match c.call(i) {
            Some(l) => {
                for (v, d) in lat.iter_mut().zip(l) {
                    v.push(d);
                }
            }
            None => failed += 1,
        }
        if start.elapsed() > Duration::from_secs(a.seconds * 2 + 5) {
            break;
        }
    }
    println!(
        "| target | offers/s | calls | failed | offer p50 / p99 ms | answer p50 / p99 ms | delete p50 / p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    let [mut o, mut an, mut d] = lat;
    println!(
        "| {} | {} | {} | {} | {:.3} / {:.3} | {:.3} / {:.3} | {:.3} / {:.3} |",
        a.target,
        a.rate,
        o.len(),
        failed,
        pct(&mut o, 0.5),
        pct(&mut o, 0.99),
        pct(&mut an, 0.5),
        pct(&mut an, 0.99),
        pct(&mut d, 0.5),
        pct(&mut d, 0.99)
    );
    // Closed loop: set-ups (offer + answer + delete) back to back.
    let start = Instant::now();
    let mut done = 0u64;
    let mut i = total;
    while start.elapsed() < Duration::from_secs(a.seconds) {
        if c.call(i).is_some() {
            done += 1;
        }
        i += 1;
    }
    println!(
        "closed loop: {:.0} call set-ups (offer + answer + delete) per second",
        done as f64 / start.elapsed().as_secs_f64()
    );
}
