//! Fault suite: Kafka brokers killed with SIGKILL under load. Each test starts its own
//! brokers with `scripts/kafka.sh` (a folder under `.hookline/`, removed afterwards), the five
//! Hookline services as real processes (`target/debug/hookline-*`: build the workspace
//! first), a real HTTP receiver and a subscription, publishes keyed events, and checks what
//! the receiver got: every event (guarantee 1), one delivery id per event (2), per-key order
//! of first arrivals (3, 9), and no service exited. The tests run one at a time.
//!
//! `cargo build --workspace --locked && cargo test -p hookline-tests --test faults -- --nocapture`

#[path = "../shared/binaries.rs"]
mod binaries;
mod broker;
mod cluster;
mod nemesis;
mod readiness;
mod routers;
mod support;
