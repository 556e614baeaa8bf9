"""INVITE -> 200 times for scripts/sip-load, in microseconds (sipp's own trace counts whole
milliseconds): one call to the fallback number every 1/RATE s for SECONDS, each 200 ACKed and
tonegate's BYE answered. Prints "p50_ms p99_ms answered/sent".

    python3 scripts/sip-load-probe.py SIP_PORT RATE SECONDS
"""
import socket
import sys
import threading
import time

port, rate, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
me = "127.0.0.1:%d" % s.getsockname()[1]
sent, got, done = {}, {}, False
SDP = ("v=0\r\no=p 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def msg(first, cid, cseq, extra="", body=""):
    return (f"{first}\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{cid}-{cseq.split()[1]}\r\n"
            f"From: <sip:p@{me}>;tag=p{cid}\r\n{extra}Call-ID: {cid}\r\nCSeq: {cseq}\r\n"
            f"Max-Forwards: 70\r\nContact: <sip:p@{me}>\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


def receive():
    s.settimeout(0.5)
    while not done:
        try:
            b, peer = s.recvfrom(65536)
        except socket.timeout:
            continue
        t = time.perf_counter()
        lines = b.decode(errors="replace").split("\r\n")
        hdr = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
        cid = hdr.get("call-id", "")
        if lines[0].startswith("SIP/2.0 200") and hdr.get("cseq", "").endswith("INVITE"):
            got.setdefault(cid, t)
            ack = msg("ACK sip:tonegate@127.0.0.1:%d SIP/2.0" % port, cid, "1 ACK", "To: %s\r\n" % hdr["to"])
            s.sendto(ack, peer)
        elif lines[0].startswith("BYE "):
            keep = ("via", "from", "to", "call-id", "cseq")
            echo = "\r\n".join(l for l in lines[1:] if l.split(":")[0].lower() in keep)
            s.sendto(("SIP/2.0 200 OK\r\n" + echo + "\r\nContent-Length: 0\r\n\r\n").encode(), peer)


threading.Thread(target=receive, daemon=True).start()
start, n = time.perf_counter(), int(rate * seconds)
for i in range(n):
    while time.perf_counter() < start + i / rate:
        time.sleep(0.0005)
    cid = "probe-%d" % i
    sent[cid] = time.perf_counter()
    invite = msg("INVITE sip:+442079460000@127.0.0.1:%d SIP/2.0" % port, cid, "1 INVITE",
                 "To: <sip:+442079460000@127.0.0.1>\r\nContent-Type: application/sdp\r\n", SDP)
    s.sendto(invite, ("127.0.0.1", port))
time.sleep(2)
done = True
lat = sorted((got[c] - sent[c]) * 1000 for c in got)
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
print("%.2f %.2f %d/%d" % (pct(0.5), pct(0.99), len(lat), n))
