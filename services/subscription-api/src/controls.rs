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

use crate::subscriptions::Face;

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
    }
}
