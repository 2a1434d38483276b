//! Delivery controls every dialect shares: the rate limit and the in-flight limit. Their
//! bounds and checks live here once (called by `subscriptions::validate` and by the dialects
//! when they read a request); a dialect only brings the JSON names of the fields, through a
//! shape made by [`rate_limit_shape!`] and its [`Face`].
//!
//! The worker enforces both (see ARCHITECTURE.md, "The delivery worker").

use hookline_proto::v1::{RateLimit, Subscription};
use hookline_runtime::ApiError;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};

use crate::store::Store;
use crate::subscriptions::{Face, HeadersIn};

/// Highest `perSecond`.
pub const PER_SECOND_MAX: u32 = 10_000;
/// Highest `perMinute`.
pub const PER_MINUTE_MAX: u32 = 600_000;
/// Highest `maxInFlight` (the worker caps it further at its `subscription_in_flight`).
pub const MAX_IN_FLIGHT_MAX: u32 = 100;

/// A rate limit as a request gave it: exactly one of the two keys, each within its bounds.
pub fn rate_limit(
    face: &Face,
    per_second: Option<u32>,
    per_minute: Option<u32>,
) -> Result<RateLimit, ApiError> {
    let (ps, pm) = (face.per_second, face.per_minute);
    let rl = face.rate_limit;
    match (per_second, per_minute) {
        (Some(_), Some(_)) | (None, None) => Err(ApiError::invalid(
            rl,
            format!("`{rl}` takes exactly one of `{ps}` and `{pm}`"),
        )),
        (Some(n), None) => {
            check_rate(&format!("{rl}.{ps}"), n, PER_SECOND_MAX)?;
            Ok(RateLimit {
                per_second: n,
                per_minute: 0,
            })
        }
        (None, Some(n)) => {
            check_rate(&format!("{rl}.{pm}"), n, PER_MINUTE_MAX)?;
            Ok(RateLimit {
                per_second: 0,
                per_minute: n,
            })
        }
    }
}

fn check_rate(field: &str, n: u32, max: u32) -> Result<(), ApiError> {
    if (1..=max).contains(&n) {
        return Ok(());
    }
    Err(ApiError::invalid(
        field,
        format!("`{field}` must be 1-{max}, got {n}"),
    ))
}

/// Checks the controls of a subscription as stored (whatever wrote them).
pub fn check(face: &Face, sub: &Subscription) -> Result<(), ApiError> {
    if let Some(r) = &sub.rate_limit {
        let given = |n: u32| (n > 0).then_some(n);
        let per_second = given(r.per_second);
        let per_minute = given(r.per_minute);
        rate_limit(face, per_second, per_minute)?;
    }
    if let Some(n) = sub.max_in_flight
        && !(1..=MAX_IN_FLIGHT_MAX).contains(&n)
    {
        let f = face.max_in_flight;
        return Err(ApiError::invalid(
            f,
            format!("`{f}` must be 1-{MAX_IN_FLIGHT_MAX}, got {n}"),
        ));
    }
    Ok(())
}

/// The OpenAPI schema of a rate limit: an object with exactly one of the two keys.
pub fn rate_limit_schema(per_second: &str, per_minute: &str) -> RefOr<Schema> {
    let one = |key: &str, max: u32, what: &str| {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::Object))
            .property(
                key,
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::Integer))
                    .minimum(Some(1))
                    .maximum(Some(max))
                    .description(Some(what)),
            )
            .required(key)
            .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
    };
    OneOfBuilder::new()
        .item(one(
            per_second,
            PER_SECOND_MAX,
            "Deliveries started per second",
        ))
        .item(one(
            per_minute,
            PER_MINUTE_MAX,
            "Deliveries started per minute",
        ))
        .description(Some(
            "Deliveries started per second or per minute (exactly one key), enforced by the \
             worker that owns the subscription; absent: unlimited. Waiting for the limit is \
             neither an attempt nor a failure and keeps per-key order.",
        ))
        .into()
}

/// A dialect's JSON shape of a rate limit, `$ps` and `$pm` its names of the two keys.
macro_rules! rate_limit_shape {
    ($name:ident, $ps:literal, $pm:literal) => {
        #[derive(Debug, Clone, Copy, serde::Deserialize, serde::Serialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            #[serde(rename = $ps, default, skip_serializing_if = "Option::is_none")]
            pub per_second: Option<$crate::input::Int>,
            #[serde(rename = $pm, default, skip_serializing_if = "Option::is_none")]
            pub per_minute: Option<$crate::input::Int>,
        }

        impl $name {
            pub fn of(r: &hookline_proto::v1::RateLimit) -> Self {
                Self {
                    per_second: (r.per_second > 0).then_some($crate::input::Int(r.per_second)),
                    per_minute: (r.per_minute > 0).then_some($crate::input::Int(r.per_minute)),
                }
            }

            /// Checked by the shared rules, named as `face` names them.
            pub fn proto(
                self,
                face: &$crate::subscriptions::Face,
            ) -> Result<hookline_proto::v1::RateLimit, hookline_runtime::ApiError> {
                $crate::controls::rate_limit(
                    face,
                    self.per_second.map(|n| n.0),
                    self.per_minute.map(|n| n.0),
                )
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $crate::controls::rate_limit_schema($ps, $pm)
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}
pub(crate) use rate_limit_shape;

/// The delivery controls of a request body, checked and named as its dialect names them. Each
/// field: `None` absent (unchanged), `Some(None)` cleared, `Some(Some(v))` set.
pub struct Controls {
    pub headers: Option<Option<HeadersIn>>,
    pub rate_limit: Option<Option<RateLimit>>,
    pub max_in_flight: Option<Option<u32>>,
    pub filter: Option<Option<serde_json::Value>>,
}

impl Controls {
    /// As a full replacement (PUT) reads them: an absent rate limit, in-flight limit or filter
    /// is none; absent headers stay as they are (their values are never shown to send back).
    pub fn replacing(mut self) -> Self {
        self.rate_limit.get_or_insert(None);
        self.max_in_flight.get_or_insert(None);
        self.filter.get_or_insert(None);
        self
    }

    /// Sets what is present on `sub` (header values sealed).
    pub fn apply(self, store: &Store, face: &Face, sub: &mut Subscription) -> Result<(), ApiError> {
        if let Some(v) = self.rate_limit {
            sub.rate_limit = v;
        }
        if let Some(v) = self.max_in_flight {
            sub.max_in_flight = v;
        }
        if let Some(v) = self.filter {
            sub.filter = crate::filters::text(v);
        }
        match self.headers {
            Some(h) => crate::subscriptions::set_headers(store, face, sub, h),
            None => Ok(()),
        }
    }
}

/// Declares a dialect's request body (`create`: create or replace; `patch`) with the delivery
/// controls appended as extension fields (`headers`, `signing`, the rate limit of shape
/// `$rl`, the in-flight limit, `filter`; named by the struct's `rename_all`), and its
/// `controls` method, which takes them out checked.
macro_rules! with_controls {
    (@fields $rl:ident, $(#[$m:meta])* pub struct $name:ident { $($fields:tt)* }
        headers: $hdoc:literal, rate_limit: $rdoc:literal, max_in_flight: $mdoc:literal,
        filter: $fdoc:literal) => {
        $(#[$m])*
        pub struct $name {
            $($fields)*
            /// Custom headers sent with every delivery (an API key the receiver expects,
            /// say): at most 20, names case-insensitive, values stored encrypted and shown as
            /// `****`; a value of `****` keeps that header's current value. Reserved names
            /// (`webhook-*`, `svix-*`, `idempotency-key`, `content-type`, `content-length`,
            /// `host`, `traceparent`, `user-agent`, hop-by-hop headers) are refused.
            #[doc = $hdoc]
            #[serde(default, deserialize_with = "crate::input::present")]
            #[schema(schema_with = crate::subscriptions::headers_in_schema)]
            pub headers: Option<Option<crate::subscriptions::HeadersIn>>,
            /// `hmac-sha256` (default) or `ed25519` (Standard Webhooks `v1a`; receivers
            /// verify with the secret's `whpk_` public key). A new secret signs so; an
            /// existing one must already sign so (409 otherwise): the scheme changes by
            /// rotating the secret with `signing`. (A Hookline extension.)
            pub signing: Option<crate::secrets::Signing>,
            /// Deliveries started per second or minute.
            #[doc = $rdoc]
            #[serde(default, deserialize_with = "crate::input::present")]
            #[schema(value_type = Option<$rl>)]
            pub rate_limit: Option<Option<$rl>>,
            /// Attempts under way at once, 1-100 (capped by the worker's
            /// `subscription_in_flight`, 32 by default).
            #[doc = $mdoc]
            #[serde(default, deserialize_with = "crate::input::present")]
            #[schema(value_type = Option<u32>, minimum = 1, maximum = 100)]
            pub max_in_flight: Option<Option<crate::input::Int>>,
            /// A payload filter: only matching events are delivered. See the `Filter` schema.
            #[doc = $fdoc]
            #[serde(default, deserialize_with = "crate::input::present")]
            #[schema(value_type = Option<Object>)]
            pub filter: Option<Option<serde_json::Value>>,
        }

        impl $name {
            /// The controls of this body (left `None` here), checked as `face` names them.
            pub fn controls(
                &mut self,
                face: &crate::subscriptions::Face,
            ) -> Result<crate::controls::Controls, hookline_runtime::ApiError> {
                Ok(crate::controls::Controls {
                    headers: self.headers.take(),
                    rate_limit: self
                        .rate_limit
                        .take()
                        .map(|r| r.map(|r| r.proto(face)).transpose())
                        .transpose()?,
                    max_in_flight: self.max_in_flight.take().map(|n| n.map(|n| n.0)),
                    filter: self.filter.take(),
                })
            }
        }
    };
    (create $rl:ident, $($body:tt)*) => {
        $crate::controls::with_controls!(@fields $rl, $($body)*
            headers: " Absent on a replace: unchanged; `null`: none. (A Hookline extension.)",
            rate_limit: " Absent or `null`: unlimited. (A Hookline extension.)",
            max_in_flight: " Absent or `null`: that cap. (A Hookline extension.)",
            filter: " Absent or `null`: every event of the types. (A Hookline extension.)");
    };
    (patch $rl:ident, $($body:tt)*) => {
        $crate::controls::with_controls!(@fields $rl, $($body)*
            headers: " Replaces every custom header; `null` removes them all.",
            rate_limit: " `null`: unlimited.",
            max_in_flight: " `null`: the worker's cap.",
            filter: " `null` removes it.");
    };
}
pub(crate) use with_controls;

/// Declares a dialect's view of a subscription's delivery controls, `$rl` its rate-limit
/// shape and `$case` its `rename_all`, for a response body to flatten.
macro_rules! controls_out {
    ($name:ident, $rl:ident, $case:tt) => {
        #[derive(serde::Serialize, utoipa::ToSchema)]
        #[serde(rename_all = $case)]
        pub struct $name {
            /// Custom header names, each value shown as `****`; absent when there are none.
            #[serde(skip_serializing_if = "crate::subscriptions::HeadersIn::is_empty")]
            #[schema(schema_with = crate::subscriptions::headers_out_schema)]
            pub headers: crate::subscriptions::HeadersIn,
            /// How deliveries are signed (absent: `hmac-sha256`, the default), as the secret's
            /// newest version signs.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub signing: Option<crate::secrets::Signing>,
            /// Absent: unlimited.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub rate_limit: Option<$rl>,
            /// Absent: the worker's cap.
            #[serde(skip_serializing_if = "Option::is_none")]
            #[schema(minimum = 1, maximum = 100)]
            pub max_in_flight: Option<u32>,
            /// The payload filter, keys sorted; absent: none.
            #[serde(skip_serializing_if = "Option::is_none")]
            #[schema(value_type = Option<Object>)]
            pub filter: Option<serde_json::Value>,
        }

        impl $name {
            pub fn of(store: &crate::store::Store, s: &hookline_proto::v1::Subscription) -> Self {
                Self {
                    headers: crate::subscriptions::masked_headers(s),
                    signing: Some(crate::subscriptions::signing_of(store, s))
                        .filter(|s| *s != crate::secrets::Signing::HmacSha256),
                    rate_limit: s.rate_limit.as_ref().map($rl::of),
                    max_in_flight: s.max_in_flight,
                    filter: crate::filters::out(s),
                }
            }
        }
    };
}
pub(crate) use controls_out;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fynapse::FACE;

    #[test]
    fn exactly_one_key_within_bounds_named_by_the_face() {
        assert_eq!(rate_limit(&FACE, Some(10), None).unwrap().per_second, 10);
        assert_eq!(
            rate_limit(&FACE, None, Some(600_000)).unwrap().per_minute,
            600_000
        );
        let field = |r: Result<RateLimit, ApiError>| r.unwrap_err().field.unwrap();
        assert_eq!(
            field(rate_limit(&FACE, Some(0), None)),
            "rateLimit.perSecond"
        );
        assert_eq!(
            field(rate_limit(&FACE, Some(10_001), None)),
            "rateLimit.perSecond"
        );
        assert_eq!(
            field(rate_limit(&FACE, None, Some(0))),
            "rateLimit.perMinute"
        );
        assert_eq!(field(rate_limit(&FACE, Some(1), Some(1))), "rateLimit");
        assert_eq!(field(rate_limit(&FACE, None, None)), "rateLimit");
        let sub = Subscription {
            max_in_flight: Some(0),
            ..Subscription::default()
        };
        assert_eq!(
            check(&FACE, &sub).unwrap_err().field.unwrap(),
            "maxInFlight"
        );
        let sub = Subscription {
            max_in_flight: Some(MAX_IN_FLIGHT_MAX),
            rate_limit: Some(RateLimit {
                per_second: 5,
                per_minute: 0,
            }),
            ..Subscription::default()
        };
        assert!(check(&FACE, &sub).is_ok());
    }

    #[test]
    fn the_document_has_each_dialects_shape_with_its_bounds() {
        use utoipa::OpenApi as _;
        let doc = serde_json::to_value(crate::ApiDoc::openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        for (name, key) in [
            ("RateLimitBody", "perSecond"),
            ("WebhookRateLimit", "per_second"),
        ] {
            let first = &schemas[name]["oneOf"][0];
            assert_eq!(first["required"][0], key, "{name}: {}", schemas[name]);
            assert_eq!(first["properties"][key]["maximum"], PER_SECOND_MAX);
            assert_eq!(first["additionalProperties"], false);
        }
        let max = &schemas["CreateSubscription"]["properties"]["maxInFlight"];
        assert_eq!(max["maximum"], MAX_IN_FLIGHT_MAX, "{max}");
        // Shapes declared by macros carry their dialect's casing into the document.
        for (schema, field) in [
            ("SubscriptionControls", "maxInFlight"),
            ("WebhookControls", "max_in_flight"),
            ("ExampleOut", "deliveryId"),
            ("WebhookExampleOut", "delivery_id"),
            ("SendExample", "eventType"),
            ("WebhookSendExample", "event_type"),
        ] {
            assert!(
                schemas[schema]["properties"][field].is_object(),
                "{schema}.{field}: {}",
                schemas[schema]
            );
        }
    }
}
