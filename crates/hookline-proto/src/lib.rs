//! Protobuf messages of every Hookline topic (`proto/hookline/v1`).
//!
//! - [`v1::Subscription`] on `subscriptions`, [`v1::Secret`] on `secrets` (compacted state).
//! - [`v1::Event`] on `events`, [`v1::BalanceRow`] on `balances`, [`v1::ExtractRecord`] on `extracts`.
//! - [`v1::NameClaim`] on `claims`, [`v1::RegisteredEventType`] on `event-types` (subscription API).
//! - [`v1::DeliveryJob`] on `deliveries`, [`v1::Attempt`] on `attempts`, [`v1::DeadLetter`] on `dead-letters`.
#![forbid(unsafe_code)]

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    include!(concat!(env!("OUT_DIR"), "/hookline.v1.rs"));
}

pub use prost;
pub use prost::Message;
