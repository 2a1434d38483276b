//! The subscription API's foundation: secrets and Fynapse subscriptions, stored as events.

use serde_json::json;

use crate::support::{Stack, TOKEN_A, TOKEN_B};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_and_subscriptions_round_trip_per_tenant() {
    let stack = Stack::start(|_| {}).await;
    let secrets = format!("{}/api/v1/event-deliveries/secrets", stack.api);
    let subs = format!("{}/api/v1/event-deliveries/subscriptions", stack.api);
    use reqwest::Method as M;

    let (status, body) = stack
        .call(
            M::POST,
            &secrets,
            TOKEN_A,
            Some(json!({"name": "webhook-signing-secret"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let value = body["value"].as_str().unwrap();
    assert!(value.starts_with("whsec_"));
    hookline_signing::WebhookSecret::parse(value).expect("a valid whsec_ secret");

    // The value is shown once: reads never carry it.
    let (status, body) = stack
        .call(
            M::GET,
            &format!("{secrets}/webhook-signing-secret"),
            TOKEN_A,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(body.get("value").is_none(), "{body}");
    let (_, list) = stack.call(M::GET, &secrets, TOKEN_A, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert!(list["items"][0].get("value").is_none());
    let (status, _) = stack
        .call(
            M::POST,
            &secrets,
            TOKEN_A,
            Some(json!({"name": "webhook-signing-secret"})),
        )
        .await;
    assert_eq!(status, 409);

    let create = json!({"name": "Balance Webhook", "endpointUrl": "https://example.com/webhooks/orders",
                        "secretRef": "webhook-signing-secret", "eventTypes": ["balance.extracted"],
                        "description": "balances"});
    let (status, created) = stack.call(M::POST, &subs, TOKEN_A, Some(create)).await;
    assert_eq!(status, 201, "{created}");
    assert!(
        created.get("secret").is_none(),
        "no secret is created when secretRef is given"
    );
    let id = created["id"].as_str().unwrap();
    // A GET right after the write sees it.
    let (status, got) = stack
        .call(M::GET, &format!("{subs}/{id}"), TOKEN_A, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(got["name"], "Balance Webhook");
    assert_eq!(got["endpointUrl"], "https://example.com/webhooks/orders");
    assert_eq!(got["secretRef"], "webhook-signing-secret");
    assert_eq!(got["eventTypes"], json!(["balance.extracted"]));
    assert_eq!(got["description"], "balances");

    // Tenant B sees none of tenant A's resources.
    let (status, _) = stack
        .call(M::GET, &format!("{subs}/{id}"), TOKEN_B, None)
        .await;
    assert_eq!(status, 404);
    let (_, list) = stack.call(M::GET, &subs, TOKEN_B, None).await;
    assert_eq!(list, json!({"items": []}));
    let (status, _) = stack
        .call(
            M::GET,
            &format!("{secrets}/webhook-signing-secret"),
            TOKEN_B,
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Omitting secretRef auto-creates a secret named after the subscription.
    let (status, auto) = stack
        .call(
            M::POST,
            &subs,
            TOKEN_A,
            Some(json!({"name": "auto", "endpointUrl": "http://127.0.0.1:9/x"})),
        )
        .await;
    assert_eq!(status, 201, "{auto}");
    assert_eq!(auto["secretRef"], "auto");
    assert!(
        auto["secret"]["value"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    assert_eq!(auto["eventTypes"], json!([]));

    // Name uniqueness per tenant; another tenant may reuse the name.
    let dup = json!({"name": "auto", "endpointUrl": "http://127.0.0.1:9/y"});
    let (status, _) = stack.call(M::POST, &subs, TOKEN_A, Some(dup.clone())).await;
    assert_eq!(status, 409);
    let (status, _) = stack.call(M::POST, &subs, TOKEN_B, Some(dup)).await;
    assert_eq!(status, 201);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_are_refused_with_the_field_named() {
    let stack = Stack::start(|_| {}).await;
    let subs = format!("{}/api/v1/event-deliveries/subscriptions", stack.api);
    use reqwest::Method as M;
    let long = "x".repeat(256);
    let cases = [
        (json!({"name": "", "endpointUrl": "https://e.com"}), "name"),
        (
            json!({"name": long, "endpointUrl": "https://e.com"}),
            "name",
        ),
        (
            json!({"name": "n", "endpointUrl": "not a url"}),
            "endpointUrl",
        ),
        (
            json!({"name": "n", "endpointUrl": "ftp://e.com/x"}),
            "endpointUrl",
        ),
        (
            json!({"name": "n", "endpointUrl": "https://e.com", "eventTypes": ["BAD..TYPE"]}),
            "eventTypes",
        ),
        (
            json!({"name": "n", "endpointUrl": "https://e.com", "description": "d".repeat(1025)}),
            "description",
        ),
        (
            json!({"name": "n", "endpointUrl": "https://e.com", "colour": "red"}),
            "colour",
        ),
        (json!({"endpointUrl": "https://e.com"}), "name"),
        (json!({"name": 5, "endpointUrl": "https://e.com"}), "name"),
    ];
    for (body, field) in cases {
        let (status, err) = stack
            .call(M::POST, &subs, TOKEN_A, Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body} -> {err}");
        assert_eq!(err["field"], field, "{body} -> {err}");
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Limits at the boundary are accepted.
    let ok = json!({"name": "y".repeat(255), "endpointUrl": "https://e.com", "description": "d".repeat(1024)});
    let (status, body) = stack.call(M::POST, &subs, TOKEN_A, Some(ok)).await;
    assert_eq!(status, 201, "{body}");

    let resp = crate::support::client()
        .post(&subs)
        .bearer_auth(TOKEN_A)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let err: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(err["code"], "malformed_json");

    let (status, err) = stack
        .call(M::GET, &subs, "unknown-token-0123456789", None)
        .await;
    assert_eq!(status, 401, "{err}");
    let resp = crate::support::client().get(&subs).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // Nothing was stored by the refused requests.
    let (_, list) = stack.call(M::GET, &subs, TOKEN_A, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_rotation_deliveries_carry_both_signatures() {
    let stack = Stack::start(|_| {}).await;
    let receiver = crate::support::receiver::Receiver::start(&[], 200).await;
    let (_, old) = stack
        .fynapse_subscription("rotating", &receiver.url, json!([]))
        .await;
    let (status, rotated) = stack
        .call(
            reqwest::Method::POST,
            &format!(
                "{}/api/v1/event-deliveries/secrets/rotating/rotate",
                stack.api
            ),
            TOKEN_A,
            None,
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["value"].as_str().unwrap();
    let event = json!({"type": "ACCOUNT.CREATED", "time": "2026-04-14T09:54:45.040Z",
        "tenant": crate::support::TENANT_A, "data": {"id": "acc-9"}});
    let events = stack.config.topic_events.clone();
    stack.publish_json(&events, "acc-9", &event).await;
    let got = receiver.wait_for(1, 60).await;
    let signatures = got[0].header("webhook-signature");
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    for secret in [old.as_str(), new] {
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(&got[0].body, &got[0].headers)
            .expect("both the old and the new secret verify during the overlap");
    }
    stack.stop().await;
}
