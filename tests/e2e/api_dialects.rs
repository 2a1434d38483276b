//! Both dialects as their seeds say: one event catalog, Synctera's empty `enabled_events`,
//! `secretRef: null`, each dialect's secrets kept to itself, and the body of a delivery whose
//! producer gave a non-UUID id and an offset time.

use reqwest::Method as M;
use serde_json::{Value, json};

use crate::api_support::{Api, api_config, assert_refused};
use crate::support::receiver::Receiver;
use crate::support::{Stack, TENANT_A, TOKEN_A, TOKEN_B};

const SECRETS: &str = "/api/v1/event-deliveries/secrets";
const SUBS: &str = "/api/v1/event-deliveries/subscriptions";
const HOOKS: &str = "/v2/webhooks";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_catalog_for_both_dialects() {
    let config = api_config().await;
    let api = Api::start(&config).await;
    for (i, types) in [
        json!([
            "balance.extracted",
            "ACCOUNT.*",
            "hookline.subscription.disabled"
        ]),
        json!(["*"]),
        json!(["hookline.*"]),
        json!([]),
        Value::Null,
    ]
    .into_iter()
    .enumerate()
    {
        let body = json!({"name": format!("ok-{i}"), "endpointUrl": "https://e.com",
            "eventTypes": types});
        let (status, got) = api.call(M::POST, SUBS, TOKEN_A, Some(body)).await;
        assert_eq!(status, 201, "{got}");
    }
    for (types, value) in [
        (json!(["ORDER.CREATED"]), "ORDER.CREATED"),
        (json!(["balance.extracted", "NOPE.*"]), "NOPE.*"),
        (json!(["hookline.delivery.lost"]), "hookline.delivery.lost"),
    ] {
        let body = json!({"name": "unknown", "endpointUrl": "https://e.com", "eventTypes": types});
        let got = api.call(M::POST, SUBS, TOKEN_A, Some(body.clone())).await;
        assert_refused(&got, 400, "eventTypes", &body.to_string());
        assert!(
            got.1["message"].as_str().unwrap().contains(value),
            "{}",
            got.1
        );
        let hook = json!({"enabled_events": types, "is_enabled": true, "url": "https://e.com"});
        let got = api.call(M::POST, HOOKS, TOKEN_A, Some(hook)).await;
        assert_refused(&got, 400, "enabled_events", value);
    }
    let (_, list) = api.call(M::GET, SUBS, TOKEN_A, None).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        5,
        "refusals created nothing"
    );

    // The seed's own example: enabled for no events.
    let hook = json!({"enabled_events": [], "is_enabled": true, "url": "https://e.com",
        "description": "<string>", "metadata": "<string>", "tenant": TENANT_A});
    let (status, got) = api.call(M::POST, HOOKS, TOKEN_A, Some(hook)).await;
    assert_eq!(status, 201, "{got}");
    assert_eq!(got["enabled_events"], json!([]));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secret_ref_null_keeps_the_secret_and_auto_creates_on_create() {
    let config = api_config().await;
    let api = Api::start(&config).await;
    let body = json!({"name": "nulls", "endpointUrl": "https://e.com", "secretRef": null});
    let (status, created) = api.call(M::POST, SUBS, TOKEN_A, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["secretRef"], "nulls", "null on create auto-creates");
    assert!(created["secret"]["value"].is_string());
    let one = format!("{SUBS}/{}", created["id"].as_str().unwrap());
    let (status, got) = api
        .call(
            M::PATCH,
            &one,
            TOKEN_A,
            Some(json!({"secretRef": null, "description": "d"})),
        )
        .await;
    assert_eq!((status, &got["secretRef"]), (200, &json!("nulls")), "{got}");
    let put = json!({"name": "nulls", "endpointUrl": "https://e.com/2", "secretRef": null});
    let (status, got) = api.call(M::PUT, &one, TOKEN_A, Some(put)).await;
    assert_eq!((status, &got["secretRef"]), (200, &json!("nulls")), "{got}");
    assert_eq!(got["endpointUrl"], "https://e.com/2");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_dialect_keeps_its_secrets_to_itself() {
    let config = api_config().await;
    let api = Api::start(&config).await;
    let (status, fynapse) = api
        .call(M::POST, SECRETS, TOKEN_A, Some(json!({"name": "mine"})))
        .await;
    assert_eq!(status, 201, "{fynapse}");
    let hook = json!({"enabled_events": ["ACCOUNT.*"], "is_enabled": true, "url": "https://e.com"});
    let (status, created) = api.call(M::POST, HOOKS, TOKEN_A, Some(hook)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let webhook_secret = format!("webhook-{id}");

    // The Fynapse routes neither list nor reach the webhook's secret.
    let (_, list) = api.call(M::GET, SECRETS, TOKEN_A, None).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mine"]);
    let theirs = format!("{SECRETS}/{webhook_secret}");
    assert_eq!(api.call(M::GET, &theirs, TOKEN_A, None).await.0, 404);
    assert_eq!(
        api.call(M::POST, &format!("{theirs}/rotate"), TOKEN_A, None)
            .await
            .0,
        404
    );
    assert_eq!(api.call(M::DELETE, &theirs, TOKEN_A, None).await.0, 404);
    let borrow = json!({"name": "borrow", "endpointUrl": "https://e.com",
        "secretRef": webhook_secret});
    let got = api.call(M::POST, SUBS, TOKEN_A, Some(borrow)).await;
    assert_refused(&got, 409, "secretRef", "a webhook's secret");

    // The Synctera dialect's own: read (no value) and rotate (value once).
    let own = format!("{HOOKS}/{id}/secret");
    let (status, got) = api.call(M::GET, &own, TOKEN_A, None).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["webhook_id"], id);
    assert!(got.get("secret").is_none(), "{got}");
    assert_eq!(got["versions"].as_array().unwrap().len(), 1);
    let (status, rolled) = api.call(M::PUT, &own, TOKEN_A, Some(json!({}))).await;
    assert_eq!(status, 200, "{rolled}");
    let value = rolled["secret"].as_str().unwrap();
    hookline_signing::WebhookSecret::parse(value).expect("a whsec_ value");
    assert_ne!(value, created["secret"].as_str().unwrap());
    assert_eq!(
        rolled["versions"].as_array().unwrap().len(),
        2,
        "rolling: both sign"
    );
    assert!(rolled["versions"][1]["expires_at"].is_string());
    let (status, cut) = api
        .call(
            M::PUT,
            &own,
            TOKEN_A,
            Some(json!({"is_rolling_secret": false})),
        )
        .await;
    assert_eq!(status, 200, "{cut}");
    assert_eq!(
        cut["versions"].as_array().unwrap().len(),
        1,
        "not rolling: only the new one"
    );
    assert_eq!(
        api.call(M::GET, &own, TOKEN_A, None).await.1["versions"],
        cut["versions"]
    );
    let bad = api
        .call(
            M::PUT,
            &own,
            TOKEN_A,
            Some(json!({"is_rolling_secret": "yes"})),
        )
        .await;
    assert_refused(&bad, 400, "is_rolling_secret", "not a boolean");
    assert_eq!(
        api.call(M::GET, &own, TOKEN_B, None).await.0,
        404,
        "tenant B"
    );
    assert_eq!(
        api.call(M::PUT, &own, TOKEN_B, Some(json!({}))).await.0,
        404,
        "tenant B"
    );
    // A Fynapse secret is not a webhook's: the Fynapse secret is untouched by all this.
    let (_, mine) = api
        .call(M::GET, &format!("{SECRETS}/mine"), TOKEN_A, None)
        .await;
    assert_eq!(mine["versions"].as_array().unwrap().len(), 1);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_carry_uuid_ids_and_utc_millisecond_times_and_empty_webhooks_get_nothing() {
    let stack = Stack::start(|_| {}).await;
    let receiver = Receiver::start(&[], 200).await;
    let silent = Receiver::start(&[], 200).await;
    let hooks = format!("{}{HOOKS}", stack.api);
    for (events, url) in [
        (json!(["ACCOUNT.*"]), &receiver.url),
        (json!([]), &silent.url),
    ] {
        let body = json!({"enabled_events": events, "is_enabled": true, "url": url});
        let (status, created) = stack.call(M::POST, &hooks, TOKEN_A, Some(body)).await;
        assert_eq!(status, 201, "{created}");
    }
    let event = json!({"id": "order-42", "type": "ACCOUNT.CREATED",
        "time": "2026-04-14T11:54:45.04099+02:00", "tenant": TENANT_A, "data": {"id": "acc-1"}});
    let events = stack.config.topic_events.clone();
    stack.publish_json(&events, "acc-1", &event).await;
    let got = receiver.wait_for(1, 60).await;
    let request = got[0].json();
    assert_eq!(request["id"], hookline_events::body_event_id("order-42"));
    let id = uuid::Uuid::parse_str(request["id"].as_str().unwrap()).expect("a UUID");
    assert_eq!(id.get_version_num(), 5);
    assert_eq!(request["event_time"], "2026-04-14T09:54:45.040Z");
    // Both webhooks' jobs come from the same routing of the event: the one enabled for no
    // events got none.
    assert!(
        silent.received().is_empty(),
        "enabled for no events receives nothing"
    );
    stack.stop().await;
}
