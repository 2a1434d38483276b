//! The Svix face's small operations: event-type `PATCH`, `health/ping`, and the reasoned
//! refusals (logout, deleting a message's or an attempt's content), over plain HTTP.

use reqwest::Method as M;
use serde_json::json;

use crate::support::{Stack, TOKEN_A, TOKEN_ADMIN, TOKEN_B, call, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn svix_event_type_patch_ping_and_refusals() {
    let stack = Stack::start(|_| {}).await;
    let api = &stack.api;

    // health/ping needs no token.
    let ping = client()
        .get(format!("{api}/api/v1/health/ping"))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), 204);

    // PATCH changes only the fields given; null clears schemas.
    let types = format!("{api}/api/v1/event-type");
    let (status, created) = call(
        M::POST,
        &types,
        TOKEN_ADMIN,
        Some(json!({"name": "invoice.paid", "description": "Paid",
            "schemas": {"1": {"type": "object"}}, "featureFlag": "beta"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let one = format!("{types}/invoice.paid");
    let (status, body) = call(M::PATCH, &one, TOKEN_A, Some(json!({"description": "x"}))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, patched) = call(
        M::PATCH,
        &one,
        TOKEN_ADMIN,
        Some(json!({"deprecated": true, "schemas": null})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["description"], "Paid", "{patched}");
    assert_eq!(patched["deprecated"], true, "{patched}");
    assert_eq!(patched["featureFlag"], "beta", "{patched}");
    assert!(patched["schemas"].is_null(), "{patched}");
    assert_eq!(patched["createdAt"], created["createdAt"]);
    let (_, read) = call(M::GET, &one, TOKEN_A, None).await;
    assert_eq!(read, patched, "what a reader sees");
    let (status, body) = call(
        M::PATCH,
        &format!("{types}/no.such.type"),
        TOKEN_ADMIN,
        Some(json!({"description": "x"})),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = call(
        M::PATCH,
        &format!("{types}/ACCOUNT.CREATED"),
        TOKEN_ADMIN,
        Some(json!({"description": "x"})),
    )
    .await;
    assert_eq!(status, 409, "a built-in type: {body}");
    let (status, body) = call(
        M::PATCH,
        &one,
        TOKEN_ADMIN,
        Some(json!({"description": "d".repeat(1025)})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["detail"][0]["loc"], json!(["body", "description"]));

    // Logout: a configured token is not a session; it says so and keeps working.
    let (status, body) = call(M::POST, &format!("{api}/api/v1/auth/logout"), TOKEN_A, None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["code"], "token_not_revocable", "{body}");
    let (status, _) = call(M::GET, &format!("{api}/api/v1/app"), TOKEN_A, None).await;
    assert_eq!(status, 200, "the token still works");
    let (status, _) = call(M::POST, &format!("{api}/api/v1/auth/logout"), "nope", None).await;
    assert_eq!(status, 401);

    // Content deletion: 404 for what does not exist, 409 naming the log for what does, and
    // the payload is still there.
    let (status, app) = call(
        M::POST,
        &format!("{api}/api/v1/app"),
        TOKEN_A,
        Some(json!({"name": "content"})),
    )
    .await;
    assert_eq!(status, 201, "{app}");
    let app_id = app["id"].as_str().unwrap();
    let (status, msg) = call(
        M::POST,
        &format!("{api}/api/v1/app/{app_id}/msg"),
        TOKEN_A,
        Some(json!({"eventType": "invoice.paid", "payload": {"card": "4111"}})),
    )
    .await;
    assert_eq!(status, 202, "{msg}");
    let msg_id = msg["id"].as_str().unwrap();
    let content = format!("{api}/api/v1/app/{app_id}/msg/{msg_id}/content");
    let attempt_content = format!("{api}/api/v1/app/{app_id}/msg/{msg_id}/attempt/atmpt_1/content");
    for url in [&content, &attempt_content] {
        let (status, body) = call(M::DELETE, url, TOKEN_A, None).await;
        assert_eq!(status, 409, "{url}: {body}");
        assert_eq!(body["code"], "content_immutable", "{body}");
        assert!(body["detail"].as_str().unwrap().contains("Kafka"), "{body}");
        let (status, body) = call(M::DELETE, url, TOKEN_B, None).await;
        assert_eq!(status, 404, "another tenant's: {body}");
    }
    let (status, body) = call(
        M::DELETE,
        &format!("{api}/api/v1/app/{app_id}/msg/msg_none/content"),
        TOKEN_A,
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (_, read) = call(
        M::GET,
        &format!("{api}/api/v1/app/{app_id}/msg/{msg_id}"),
        TOKEN_A,
        None,
    )
    .await;
    assert_eq!(read["payload"], json!({"card": "4111"}), "{read}");
    stack.stop().await;
}
