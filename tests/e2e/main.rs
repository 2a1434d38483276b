//! End-to-end suite: a real Kafka broker (started by `make test`), the five services in
//! this process on loopback ports, and a real HTTP receiver.

mod api;
mod api_controls;
mod api_dialects;
mod api_examples;
mod api_fynapse;
mod api_headers;
mod api_openapi;
mod api_plaintext;
mod api_replicas;
mod api_signing;
mod api_support;
mod api_synctera;
#[path = "../shared/binaries.rs"]
mod binaries;
mod delivery;
mod egress;
mod extracts;
mod extracts_kill;
mod filters;
mod observability;
mod operational;
mod operations;
mod operations_order;
mod router;
mod support;
mod svix_messages;
mod svix_sdk;
mod svix_small;
mod traces;
mod worker;
mod worker_limits;
mod worker_scale;
