//! End-to-end tests of the real `lienthong` binary over loopback sockets.

#[allow(dead_code)] // each test module uses a different part of it
mod common;

mod admin;
mod cli;
mod dkim;
mod load;
mod run;
mod trace;
