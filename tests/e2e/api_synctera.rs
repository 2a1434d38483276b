//! Synctera dialect: the seed's round trip, the event-type catalog and its admin route,
//! tenants, limits, pagination, and a delivery in the `WebhookRequest` shape.

use reqwest::Method as M;
use serde_json::{Value, json};

use crate::api_support::{Api, TOKEN_VIEWER_A, api_config, assert_refused};
use crate::support::receiver::Receiver;
use crate::support::{Stack, TENANT_A, TENANT_B, TOKEN_A, TOKEN_ADMIN, TOKEN_B};

const HOOKS: &str = "/v2/webhooks";
const TYPES: &str = "/admin/v1/event-types";

fn webhook(events: Value) -> Value {
    json!({"enabled_events": events, "is_enabled": true, "url": "https://example.com/hook"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_round_trip_as_in_the_seed() {
    let config = api_config().await;
    let api = Api::start(&config).await;
    let body = json!({"enabled_events": ["ACCOUNT.*", "CARD.CREATED", "balance.extracted"],
        "is_enabled": true, "url": "https://example.com/hook", "description": "cards",
        "metadata": "m=1", "tenant": TENANT_A});
    let (status, created) = api.call(M::POST, HOOKS, TOKEN_A, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    uuid::Uuid::parse_str(id).expect("id is a uuid");
    hookline_signing::WebhookSecret::parse(created["secret"].as_str().unwrap())
        .expect("a generated whsec_ signing secret, shown once");
    hookline_events::time_fmt::parse_rfc3339(created["last_updated"].as_str().unwrap())
        .expect("last_updated is RFC 3339");
    let one = format!("{HOOKS}/{id}");
    let (status, got) = api.call(M::GET, &one, TOKEN_A, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        got,
        json!({"enabled_events": ["ACCOUNT.*", "CARD.CREATED", "balance.extracted"],
            "is_enabled": true, "url": "https://example.com/hook", "description": "cards",
            "id": id, "last_updated": created["last_updated"], "metadata": "m=1",
            "tenant": TENANT_A}),
        "the seed's fields, and no secret after the create"
    );

    let patch = json!({"is_enabled": false, "metadata": null, "enabled_events": ["CASE.*"]});
    let (status, got) = api.call(M::PATCH, &one, TOKEN_A, Some(patch)).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["is_enabled"], false);
    assert!(got.get("metadata").is_none(), "{got}");
    assert_eq!(got["enabled_events"], json!(["CASE.*"]));
    assert_eq!(got["description"], "cards");
    assert_eq!(api.call(M::GET, &one, TOKEN_A, None).await.1, got);

    // Isolation: tenant B and a viewer of A.
    assert_eq!(api.call(M::GET, &one, TOKEN_B, None).await.0, 404);
    assert_eq!(
        api.call(M::PATCH, &one, TOKEN_B, Some(json!({"is_enabled": true})))
            .await
            .0,
        404
    );
    assert_eq!(api.call(M::DELETE, &one, TOKEN_B, None).await.0, 404);
    assert_eq!(
        api.call(M::GET, HOOKS, TOKEN_B, None).await.1,
        json!({"webhooks": []})
    );
    assert_eq!(api.call(M::GET, &one, TOKEN_VIEWER_A, None).await.0, 200);
    assert_eq!(api.call(M::DELETE, &one, TOKEN_VIEWER_A, None).await.0, 403);
    let post = api
        .call(
            M::POST,
            HOOKS,
            TOKEN_VIEWER_A,
            Some(webhook(json!(["CASE.*"]))),
        )
        .await;
    assert_eq!(post.0, 403);

    // `tenant` must be the caller's, unless the caller is an admin.
    let mut other = webhook(json!(["CASE.CREATED"]));
    other["tenant"] = json!(TENANT_B);
    let got = api.call(M::POST, HOOKS, TOKEN_A, Some(other.clone())).await;
    assert_refused(&got, 403, "tenant", "another tenant");
    let (status, for_b) = api.call(M::POST, HOOKS, TOKEN_ADMIN, Some(other)).await;
    assert_eq!(status, 201, "{for_b}");
    assert_eq!(for_b["tenant"], TENANT_B);
    let b_hook = format!("{HOOKS}/{}", for_b["id"].as_str().unwrap());
    assert_eq!(api.call(M::GET, &b_hook, TOKEN_B, None).await.0, 200);
    assert_eq!(api.call(M::GET, &b_hook, TOKEN_A, None).await.0, 404);
    let move_it = api
        .call(
            M::PATCH,
            &b_hook,
            TOKEN_ADMIN,
            Some(json!({"tenant": TENANT_A})),
        )
        .await;
    assert_refused(&move_it, 409, "tenant", "tenant change");

    assert_eq!(api.call(M::DELETE, &one, TOKEN_A, None).await.0, 204);
    assert_eq!(api.call(M::GET, &one, TOKEN_A, None).await.0, 404);
    let secret = format!("/api/v1/event-deliveries/secrets/webhook-{id}");
    assert_eq!(
        api.call(M::GET, &secret, TOKEN_A, None).await.0,
        404,
        "its secret went with it"
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_catalog_decides_which_events_and_patterns_are_valid() {
    let config = api_config().await;
    let api = Api::start(&config).await;
    for events in [
        json!(["balance.extracted"]),
        json!(["PAYMENT_SCHEDULE.*"]),
        json!(["CARD.THREE_DS.*"]),
    ] {
        let (status, got) = api
            .call(M::POST, HOOKS, TOKEN_A, Some(webhook(events)))
            .await;
        assert_eq!(status, 201, "{got}");
    }
    for (events, value) in [
        (json!(["ACCOUNT.DELETED"]), "ACCOUNT.DELETED"),
        (json!(["ACCOUNT.CREATED", "NOPE.*"]), "NOPE.*"),
        (json!(["ACCOUNT.CREATED.*"]), "ACCOUNT.CREATED.*"),
        (json!(["*"]), "*"),
    ] {
        let got = api
            .call(M::POST, HOOKS, TOKEN_A, Some(webhook(events)))
            .await;
        assert_refused(&got, 400, "enabled_events", value);
        assert!(
            got.1["message"].as_str().unwrap().contains(value),
            "{}",
            got.1
        );
    }

    // An admin registers a type; editors may not; then it and its prefix are valid.
    let register = json!({"name": "LOAN.APPROVED", "description": "a loan was approved"});
    assert_eq!(
        api.call(M::POST, TYPES, TOKEN_A, Some(register.clone()))
            .await
            .0,
        403
    );
    let (status, got) = api
        .call(M::POST, TYPES, TOKEN_ADMIN, Some(register.clone()))
        .await;
    assert_eq!(status, 201, "{got}");
    assert_refused(
        &api.call(M::POST, TYPES, TOKEN_ADMIN, Some(register)).await,
        409,
        "name",
        "again",
    );
    let seed_type = json!({"name": "ACCOUNT.CREATED"});
    assert_refused(
        &api.call(M::POST, TYPES, TOKEN_ADMIN, Some(seed_type)).await,
        409,
        "name",
        "seed",
    );
    let bad = json!({"name": "not a type"});
    assert_refused(
        &api.call(M::POST, TYPES, TOKEN_ADMIN, Some(bad)).await,
        400,
        "name",
        "bad type",
    );
    for events in [json!(["LOAN.APPROVED"]), json!(["LOAN.*"])] {
        let (status, got) = api
            .call(M::POST, HOOKS, TOKEN_A, Some(webhook(events)))
            .await;
        assert_eq!(status, 201, "{got}");
    }
    let (status, catalog) = api.call(M::GET, TYPES, TOKEN_VIEWER_A, None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = catalog["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names.len(),
        62 + 1 + 3 + 1,
        "the seed's 62, balance.extracted, the operational types and LOAN.APPROVED"
    );
    assert!(names.contains(&"hookline.delivery.exhausted"));
    assert!(names.contains(&"balance.extracted") && names.contains(&"LOAN.APPROVED"));
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_limits_and_pages() {
    let config = api_config().await;
    let api = Api::start(&config).await;
    let url_of = |len: usize| format!("https://e.com/{}", "u".repeat(len - "https://e.com/".len()));
    let with = |k: &str, v: Value| {
        let mut b = webhook(json!(["CASE.CREATED"]));
        b[k] = v;
        b
    };
    let ok = [
        with("url", json!(url_of(1000))),
        with("metadata", json!("m".repeat(1024))),
        with("description", json!("d".repeat(1024))),
        with("enabled_events", json!(vec!["CASE.CREATED"; 100])),
    ];
    for body in ok {
        let (status, got) = api.call(M::POST, HOOKS, TOKEN_A, Some(body)).await;
        assert_eq!(status, 201, "{got}");
    }
    let bad = [
        (with("url", json!(url_of(1001))), "url"),
        (with("url", json!("not a uri")), "url"),
        (with("metadata", json!("m".repeat(1025))), "metadata"),
        (with("description", json!("d".repeat(1025))), "description"),
        (
            with("enabled_events", json!(vec!["CASE.CREATED"; 101])),
            "enabled_events",
        ),
        (with("is_enabled", json!("yes")), "is_enabled"),
        (with("tenant", json!("a/b")), "tenant"),
        (
            with("id", json!("3c90c3cc-0d44-4b50-8888-8dd25736052a")),
            "id",
        ),
        (
            json!({"enabled_events": ["CASE.CREATED"], "url": "https://e.com"}),
            "is_enabled",
        ),
        (
            json!({"is_enabled": true, "url": "https://e.com"}),
            "enabled_events",
        ),
        (
            json!({"enabled_events": ["CASE.CREATED"], "is_enabled": true}),
            "url",
        ),
    ];
    for (body, field) in bad {
        let got = api.call(M::POST, HOOKS, TOKEN_A, Some(body.clone())).await;
        assert_refused(&got, 400, field, &body.to_string());
    }

    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut url = format!("{HOOKS}?limit=3");
        if let Some(t) = &token {
            url.push_str(&format!("&page_token={t}"));
        }
        let (status, page) = api.call(M::GET, &url, TOKEN_A, None).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["webhooks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["id"].clone()),
        );
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4, "every webhook once");
    let (_, all) = api.call(M::GET, HOOKS, TOKEN_A, None).await;
    let all: Vec<Value> = all["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].clone())
        .collect();
    assert_eq!(seen, all, "pages follow the one stable order");
    let got = api
        .call(M::GET, &format!("{HOOKS}?cursor=x"), TOKEN_A, None)
        .await;
    assert_refused(&got, 400, "cursor", "Synctera pages take page_token");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn synctera_deliveries_are_webhook_requests_signed_with_the_generated_secret() {
    let stack = Stack::start(|_| {}).await;
    let receiver = Receiver::start(&[], 200).await;
    let body = json!({"enabled_events": ["ACCOUNT.*"], "is_enabled": true,
        "url": receiver.url, "metadata": "customer-42"});
    let (status, created) = stack
        .call(
            M::POST,
            &format!("{}{HOOKS}", stack.api),
            TOKEN_A,
            Some(body),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    let event = json!({"id": "8f1d3c1e-4c1b-4b7e-9a51-6a1f2a0b9c10", "type": "ACCOUNT.CREATED",
        "time": "2026-04-14T09:54:45.040Z", "tenant": TENANT_A, "data": {"id": "acc-1"}});
    let events = stack.config.topic_events.clone();
    stack.publish_json(&events, "acc-1", &event).await;
    let got = receiver.wait_for(1, 60).await;
    let request = got[0].json();
    assert_eq!(request["type"], "ACCOUNT.CREATED");
    assert_eq!(request["metadata"], "customer-42");
    assert_eq!(request["webhook_id"], created["id"]);
    assert_eq!(request["url"], receiver.url.as_str());
    assert_eq!(request["event_resource"], r#"{"id":"acc-1"}"#);
    standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(&got[0].body, &got[0].headers)
        .expect("signed with the secret returned at creation");
    stack.stop().await;
}
