//! Delivery controls over both dialects: the rate limit and the in-flight limit set on
//! create, PUT and PATCH, returned by GET, cleared with `null`; bad values refused with a 400
//! naming the field as the dialect names it, changing nothing.

use reqwest::Method as M;
use serde_json::{Value, json};

use crate::api_support::{Api, api_config, assert_refused};
use crate::support::TOKEN_A;

const SUBS: &str = "/api/v1/event-deliveries/subscriptions";
const HOOKS: &str = "/v2/webhooks";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_fynapse_rate_limit_and_max_in_flight() {
    let config = api_config().await;
    let api = Api::start(&config).await;
    let base = json!({"name": "limited", "endpointUrl": "https://e.com/1"});
    let with = |extra: Value| {
        let mut b = base.clone();
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    for (extra, field) in [
        (
            json!({"rateLimit": {"perSecond": 0}}),
            "rateLimit.perSecond",
        ),
        (
            json!({"rateLimit": {"perSecond": 10_001}}),
            "rateLimit.perSecond",
        ),
        (
            json!({"rateLimit": {"perMinute": 600_001}}),
            "rateLimit.perMinute",
        ),
        (
            json!({"rateLimit": {"perSecond": -1}}),
            "rateLimit.perSecond",
        ),
        (
            json!({"rateLimit": {"perSecond": 1, "perMinute": 60}}),
            "rateLimit",
        ),
        (json!({"rateLimit": {}}), "rateLimit"),
        (json!({"rateLimit": {"perHour": 5}}), "rateLimit.perHour"),
        (json!({"maxInFlight": 0}), "maxInFlight"),
        (json!({"maxInFlight": 101}), "maxInFlight"),
        (json!({"maxInFlight": "3"}), "maxInFlight"),
    ] {
        let got = api
            .call(M::POST, SUBS, TOKEN_A, Some(with(extra.clone())))
            .await;
        assert_refused(&got, 400, field, &format!("create with {extra}"));
    }
    let (_, list) = api.call(M::GET, SUBS, TOKEN_A, None).await;
    assert_eq!(list["items"], json!([]), "nothing created");

    let (status, sub) = api
        .call(
            M::POST,
            SUBS,
            TOKEN_A,
            Some(with(
                json!({"rateLimit": {"perSecond": 50}, "maxInFlight": 4}),
            )),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    assert_eq!(sub["rateLimit"], json!({"perSecond": 50}));
    assert_eq!(sub["maxInFlight"], 4);
    let one = format!("{SUBS}/{}", sub["id"].as_str().unwrap());

    // Bad PATCHes change nothing.
    for (patch, field) in [
        (
            json!({"rateLimit": {"perMinute": 0}}),
            "rateLimit.perMinute",
        ),
        (json!({"maxInFlight": 1000}), "maxInFlight"),
        (
            json!({"description": "x", "rateLimit": {"perSecond": 1, "perMinute": 1}}),
            "rateLimit",
        ),
    ] {
        let got = api.call(M::PATCH, &one, TOKEN_A, Some(patch.clone())).await;
        assert_refused(&got, 400, field, &format!("patch {patch}"));
    }
    let (_, now) = api.call(M::GET, &one, TOKEN_A, None).await;
    assert_eq!(now["rateLimit"], json!({"perSecond": 50}));
    assert_eq!(now["maxInFlight"], 4);
    assert!(now.get("description").is_none(), "{now}");

    // PATCH: a new value replaces, absent keeps, `null` clears.
    let (status, now) = api
        .call(
            M::PATCH,
            &one,
            TOKEN_A,
            Some(json!({"rateLimit": {"perMinute": 90}})),
        )
        .await;
    assert_eq!(status, 200, "{now}");
    assert_eq!(now["rateLimit"], json!({"perMinute": 90}));
    assert_eq!(now["maxInFlight"], 4);
    let (status, now) = api
        .call(
            M::PATCH,
            &one,
            TOKEN_A,
            Some(json!({"rateLimit": null, "maxInFlight": null})),
        )
        .await;
    assert_eq!(status, 200, "{now}");
    assert!(
        now.get("rateLimit").is_none() && now.get("maxInFlight").is_none(),
        "{now}"
    );

    // PUT replaces: given, set; absent, unlimited.
    let (status, now) = api
        .call(
            M::PUT,
            &one,
            TOKEN_A,
            Some(with(json!({"maxInFlight": 100}))),
        )
        .await;
    assert_eq!(status, 200, "{now}");
    assert_eq!(now["maxInFlight"], 100);
    let got = api
        .call(
            M::PUT,
            &one,
            TOKEN_A,
            Some(with(json!({"rateLimit": {"perSecond": 0}}))),
        )
        .await;
    assert_refused(&got, 400, "rateLimit.perSecond", "PUT with a zero rate");
    let (_, now) = api.call(M::GET, &one, TOKEN_A, None).await;
    assert_eq!(now["maxInFlight"], 100);
    assert!(now.get("rateLimit").is_none(), "{now}");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_synctera_rate_limit_and_max_in_flight() {
    let config = api_config().await;
    let api = Api::start(&config).await;
    let base = json!({"enabled_events": [], "is_enabled": true, "url": "https://e.com/hook"});
    let with = |extra: Value| {
        let mut b = base.clone();
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    for (extra, field) in [
        (
            json!({"rate_limit": {"per_second": 0}}),
            "rate_limit.per_second",
        ),
        (
            json!({"rate_limit": {"per_minute": 600_001}}),
            "rate_limit.per_minute",
        ),
        (
            json!({"rate_limit": {"perSecond": 5}}),
            "rate_limit.perSecond",
        ),
        (
            json!({"rate_limit": {"per_second": 1, "per_minute": 1}}),
            "rate_limit",
        ),
        (json!({"max_in_flight": 0}), "max_in_flight"),
        (json!({"max_in_flight": 101}), "max_in_flight"),
    ] {
        let got = api
            .call(M::POST, HOOKS, TOKEN_A, Some(with(extra.clone())))
            .await;
        assert_refused(&got, 400, field, &format!("create with {extra}"));
    }
    let (_, list) = api.call(M::GET, HOOKS, TOKEN_A, None).await;
    assert_eq!(list["webhooks"], json!([]), "nothing created");

    let (status, hook) = api
        .call(
            M::POST,
            HOOKS,
            TOKEN_A,
            Some(with(
                json!({"rate_limit": {"per_minute": 120}, "max_in_flight": 1}),
            )),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    assert_eq!(hook["rate_limit"], json!({"per_minute": 120}));
    assert_eq!(hook["max_in_flight"], 1);
    let one = format!("{HOOKS}/{}", hook["id"].as_str().unwrap());
    let got = api
        .call(
            M::PATCH,
            &one,
            TOKEN_A,
            Some(json!({"max_in_flight": 0, "is_enabled": false})),
        )
        .await;
    assert_refused(&got, 400, "max_in_flight", "patch a zero in-flight limit");
    let (_, now) = api.call(M::GET, &one, TOKEN_A, None).await;
    assert_eq!(now["max_in_flight"], 1);
    assert_eq!(now["is_enabled"], true, "nothing changed");

    let (status, now) = api
        .call(
            M::PATCH,
            &one,
            TOKEN_A,
            Some(json!({"rate_limit": {"per_second": 7}, "max_in_flight": null})),
        )
        .await;
    assert_eq!(status, 200, "{now}");
    assert_eq!(now["rate_limit"], json!({"per_second": 7}));
    assert!(now.get("max_in_flight").is_none(), "{now}");
    let (_, now) = api.call(M::GET, &one, TOKEN_A, None).await;
    assert_eq!(now["rate_limit"], json!({"per_second": 7}));
    api.stop().await;
}
