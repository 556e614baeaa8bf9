//! Integration tests, one binary per area (link time grows with every binary): The gateway as a process and a listener: serve, config, TLS, systemd, limits under attack, the OpenAPI document and its fuzzing, the crate graph.
//! Each file here is a module; helpers shared by every area are in `tests/common/`.

#[path = "../common/mod.rs"]
mod common;

mod crate_graph;
mod hostile;
mod openapi;
mod schemathesis;
mod serve;
mod systemd;
