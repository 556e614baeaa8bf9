//! Integration tests, one binary per area (link time grows with every binary): The web pages in headless Chromium: the agent payment UI and the hosted payment page.
//! Each file here is a module; helpers shared by every area are in `tests/common/`.

// flock, kill, geteuid and getpwnam through libc (child processes, port locks, a PostgreSQL
// run as nobody): std has no safe wrappers.
#[allow(unsafe_code)]
#[path = "../common/mod.rs"]
mod common;

mod web;
