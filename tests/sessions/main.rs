//! Integration tests, one binary per area (link time grows with every binary): The GlobalPCI session service: agent and self-service sessions, tenancy, the PSPs (sandbox, localstripe), SMS links, ApiInteraction definitions, the demo, the store suite (SQLite and PostgreSQL).
//! Each file here is a module; helpers shared by every area are in `tests/common/`.

// flock, kill, geteuid and getpwnam through libc (child processes, port locks, a PostgreSQL
// run as nobody): std has no safe wrappers.
#[allow(unsafe_code)]
#[path = "../common/mod.rs"]
mod common;

mod demo;
mod globalpci;
mod interaction;
mod messaging;
mod nodes;
mod psp;
mod selfservice;
mod store;
mod tenancy;
