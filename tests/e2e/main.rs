//! End-to-end suite: a real Kafka broker (started by `make test`), the five services in
//! this process on loopback ports, and a real HTTP receiver.

mod api;
mod delivery;
mod support;
