//! The integration suite: one test binary, one module per feature.
//!
//! Tests that talk to access.md start the in-process emulator unless
//! `MDGATE_TEST_UPSTREAM` names a real server (see `support`).

mod access;
mod admin;
mod audit;
mod browser;
mod emulator;
mod fake;
mod fed;
mod federation_listener;
mod gate;
mod peers;
mod peertools;
mod process;
mod proxy;
mod support;
mod transfer;
mod upstream;
mod web;
