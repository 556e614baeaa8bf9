//! Integration tests, one binary per area (link time grows with every binary): Calls through the relay: RTP in and out, masking, capture, the ng protocol, Kamailio and sipp in the call path, the leak battery's cases, the detector CLI.
//! Each file here is a module; helpers shared by every area are in `tests/common/`.

// flock, kill, geteuid and getpwnam through libc (child processes, port locks, a PostgreSQL
// run as nobody): std has no safe wrappers.
#[allow(unsafe_code)]
#[path = "../common/mod.rs"]
mod common;

mod baresip;
mod detect_cli;
mod kamailio;
// Kamailio, sipp, three nodes on PostgreSQL and Chromium: the kamailio test group too.
mod kamailio_nodes;
mod leak;
mod ng;
mod relay;
#[allow(unsafe_code)] // libc::kill on sipp's process group
mod sip;
