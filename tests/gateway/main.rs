//! Integration tests, one binary per area (link time grows with every binary): The gateway as a process and a listener: serve, config, TLS, systemd, limits under attack, the OpenAPI document and its fuzzing, the crate graph.
//! Each file here is a module; helpers shared by every area are in `tests/common/`.

// flock, kill, geteuid and getpwnam through libc (child processes, port locks, a PostgreSQL
// run as nobody): std has no safe wrappers.
#[allow(unsafe_code)]
#[path = "../common/mod.rs"]
mod common;

mod crate_graph;
#[allow(unsafe_code)] // SIGTERM to a child gateway through libc::kill
mod hostile;
mod openapi;
mod schemathesis;
#[allow(unsafe_code)] // signals to child gateways (libc::kill) and getuid
mod serve;
mod systemd;
