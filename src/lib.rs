//! mdgate: a reverse-proxy sidecar that lets self-hosted access.md servers
//! federate with no third party in between.
//!
//! The modules follow the parts of the design:
//!
//! * [`config`]: the TOML file, validated once into runtime types.
//! * [`tls`]: server and client TLS configs, peer identity, reloads.
//! * [`dns`]: peer keys published in DNS: records, resolver, cache, DNSSEC.
//! * [`proxy`]: pass-through forwarding, header hygiene, limits, errors.
//! * [`upstream`]: the access.md client, sign-in, and the upstream accounts
//!   mdgate reads and appends through.
//! * [`federation`]: the server-to-server listener (`/federation/v1/`).
//! * [`policy`]: which federation requests a grant lets through, and as
//!   what upstream request (pure decision code).
//! * [`store`]: durable state (SQLite by default), SQL lives only here.
//! * [`token`]: Ed25519 keys, EdDSA-only JWS, the key document.
//! * [`admin`]: `/live`, `/ready`, `/metrics`.
//! * [`serve`]: wires listeners, workers, signals and shutdown together.
//! * [`web`]: the patient's and the doctor's pages, and WebFinger.
//! * [`emulator`]: an in-memory access.md emulator for tests and the demo.

pub mod admin;
pub mod audit;
pub mod config;
pub mod demo;
pub mod dns;
pub mod emulator;
pub mod error;
pub mod federation;
pub mod logging;
pub mod notify;
pub mod policy;
pub mod proxy;
pub mod serve;
pub mod store;
pub mod tls;
pub mod token;
pub mod transfer;
pub mod upstream;
pub mod web;
