//! The Svix-compatible face (`/api/v1/app…`): driven by the official Svix SDKs, unchanged
//! (Python: tests/sdk/svix_flow.py; JavaScript: tests/sdk/svix_flow.mjs; installed by
//! `scripts/svix-sdk.sh`), each against a full stack of its own; and its shapes and routing
//! checked here over plain HTTP.

use std::path::PathBuf;
use std::process::Command;

use axum::http::HeaderMap;
use reqwest::Method as M;
use serde_json::json;

use crate::support::receiver::Receiver;
use crate::support::{Stack, TENANT_A, TOKEN_A, TOKEN_ADMIN, TOKEN_B, call, client};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
        .to_owned()
}

/// Where an SDK is: `var` (`make test` sets it), else what `scripts/svix-sdk.sh how` prints
/// (installing it on first use).
fn sdk(var: &str, how: &str) -> String {
    if let Ok(p) = std::env::var(var) {
        return p;
    }
    let out = Command::new(repo().join("scripts/svix-sdk.sh"))
        .arg(how)
        .output()
        .expect("run scripts/svix-sdk.sh");
    assert!(
        out.status.success(),
        "scripts/svix-sdk.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_official_python_sdk_works_unchanged() {
    let python = sdk("HOOKLINE_SVIX_PYTHON", "ensure");
    sdk_flow(&python, "tests/sdk/svix_flow.py", "svix sdk flow: ok", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_official_javascript_sdk_works_unchanged() {
    let npm = sdk("HOOKLINE_SVIX_NPM", "ensure-npm");
    sdk_flow(
        "node",
        "tests/sdk/svix_flow.mjs",
        "svix npm flow: ok",
        Some(npm),
    )
    .await;
}

/// Runs an SDK flow script with `program` against a stack of its own.
async fn sdk_flow(program: &str, script: &str, ok: &str, npm: Option<String>) {
    let stack = Stack::start(|_| {}).await;
    let api = stack.api.clone();
    let (program, script) = (program.to_owned(), repo().join(script));
    let run = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(program);
        if let Some(dir) = npm {
            command.env("HOOKLINE_SVIX_NPM", dir);
        }
        command
            .arg(script)
            .env("HOOKLINE_API_URL", api)
            .env("HOOKLINE_TOKEN", TOKEN_A)
            .env("HOOKLINE_OTHER_TOKEN", TOKEN_B)
            .env("HOOKLINE_ADMIN_TOKEN", TOKEN_ADMIN)
            .env("NO_PROXY", "127.0.0.1")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .output()
            .expect("run the SDK flow")
    });
    let out = run.await.unwrap();
    stack.stop().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the SDK flow failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(ok), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn svix_shapes_and_application_scoped_routing() {
    let stack = Stack::start(|_| {}).await;
    let api = &stack.api;
    // Health and the document need no token; errors take Svix's shapes.
    let health = client()
        .get(format!("{api}/api/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 204);
    let (status, doc) = call(M::GET, &format!("{api}/api/v1/openapi.json"), "", None).await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/api/v1/app/{app_id}/msg"]["post"].is_object());
    let (status, body) = call(M::GET, &format!("{api}/api/v1/app"), "nope", None).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthorized", "{body}");
    assert!(body["detail"].is_string(), "{body}");
    let (status, body) = call(
        M::POST,
        &format!("{api}/api/v1/app"),
        TOKEN_A,
        Some(json!({"name": ""})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["detail"][0]["loc"], json!(["body", "name"]), "{body}");
    let (status, body) = call(
        M::POST,
        &format!("{api}/api/v1/app"),
        TOKEN_A,
        Some(json!({"name": "x", "throttleRate": "fast"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = call(
        M::GET,
        &format!("{api}/api/v1/app/app_x/endpoint/ep_x/stats"),
        TOKEN_A,
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (501, Some("not_implemented"))
    );
    // Nothing was created by the refusals.
    let (_, list) = call(M::GET, &format!("{api}/api/v1/app"), TOKEN_A, None).await;
    assert_eq!(list["data"], json!([]), "{list}");
    assert_eq!(list["done"], true);

    // An application's endpoint gets its messages only; a tenant-wide subscription gets
    // the tenant's events only (an event naming an application is for that one alone).
    let (status, app) = call(
        M::POST,
        &format!("{api}/api/v1/app"),
        TOKEN_A,
        Some(json!({"name": "routing", "rateLimit": 50})),
    )
    .await;
    assert_eq!(status, 201, "{app}");
    assert_eq!(app["throttleRate"], 50, "the older name is read: {app}");
    let app_id = app["id"].as_str().unwrap();
    let svix_receiver = Receiver::start(&[], 200).await;
    let (status, ep) = call(
        M::POST,
        &format!("{api}/api/v1/app/{app_id}/endpoint"),
        TOKEN_A,
        Some(
            json!({"url": svix_receiver.url, "filterTypes": ["ACCOUNT.CREATED"],
            "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "webhookHeaders": true}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{ep}");
    assert_eq!(ep["eventTypes"], json!(["ACCOUNT.CREATED"]), "{ep}");
    assert_eq!(ep["webhookHeaders"], true, "{ep}");
    let wide_receiver = Receiver::start(&[], 200).await;
    stack
        .fynapse_subscription("wide", &wide_receiver.url, json!(["*"]))
        .await;
    // Sent as text: the payload's key order and number spelling are to reach the endpoint.
    let sent = client()
        .post(format!("{api}/api/v1/app/{app_id}/msg"))
        .bearer_auth(TOKEN_A)
        .header("content-type", "application/json")
        .body(r#"{"eventType": "ACCOUNT.CREATED", "payload": {"b": 2, "a": 1.50}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202);
    let msg: serde_json::Value = sent.json().await.unwrap();
    stack
        .publish_json(
            &stack.config.topic_events,
            "k",
            &json!({"id": "wide-1", "type": "ACCOUNT.CREATED", "tenant": TENANT_A, "data": {}}),
        )
        .await;
    let got = svix_receiver.wait_for(1, 60).await;
    assert_eq!(got[0].header("svix-id"), msg["id"].as_str().unwrap());
    assert_eq!(
        &got[0].body[..],
        br#"{"b": 2, "a": 1.50}"#,
        "the payload verbatim"
    );
    standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .unwrap()
        .verify(&got[0].body, &svix_as_standard(&got[0].headers))
        .expect("signed with the secret the endpoint was given");
    // It asked for the Standard Webhooks set too: a Standard Webhooks library verifies the
    // delivery as it came.
    assert_eq!(got[0].header("webhook-id"), got[0].header("svix-id"));
    standardwebhooks::Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .unwrap()
        .verify(&got[0].body, &got[0].headers)
        .expect("the webhook-* set verifies");
    let wide = wide_receiver.wait_for(1, 60).await;
    assert_eq!(wide[0].json()["event_id"], "wide-1");
    // Both are quiet after their one delivery: a later message and event change nothing.
    let (status, _) = call(
        M::POST,
        &format!("{api}/api/v1/app/{app_id}/msg"),
        TOKEN_A,
        Some(json!({"eventType": "ACCOUNT.CREATED", "payload": {"second": true}})),
    )
    .await;
    assert_eq!(status, 202);
    svix_receiver.wait_for(2, 60).await;
    assert_eq!(
        wide_receiver.received().len(),
        1,
        "the tenant-wide subscription"
    );
    assert_eq!(
        svix_receiver.received().len(),
        2,
        "the application's endpoint"
    );

    // An event type's schemas: checked when stored, and a message of the type is checked
    // against the newest version before anything is published.
    let types = format!("{api}/api/v1/event-type");
    let (status, body) = call(
        M::POST,
        &types,
        TOKEN_ADMIN,
        Some(json!({"name": "card.issued", "description": "d",
            "schemas": {"1": {"type": "object", "properties": {"id": {"type": "wat"}}}}})),
    )
    .await;
    assert_eq!(status, 422, "a schema that is no JSON Schema: {body}");
    assert_eq!(
        body["detail"][0]["loc"],
        json!(["body", "schemas"]),
        "{body}"
    );
    let (status, body) = call(
        M::POST,
        &types,
        TOKEN_ADMIN,
        Some(
            json!({"name": "card.issued", "description": "d", "schemas": {
            "1": {"type": "object"},
            "2": {"type": "object", "required": ["card"], "properties": {"card": {"type": "object",
                "required": ["id"], "properties": {"id": {"type": "string"}}}}}}}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, ep2) = call(
        M::POST,
        &format!("{api}/api/v1/app/{app_id}/endpoint"),
        TOKEN_A,
        Some(json!({"url": svix_receiver.url, "eventTypes": ["card.issued"]})),
    )
    .await;
    assert_eq!(status, 201, "{ep2}");
    let msgs = format!("{api}/api/v1/app/{app_id}/msg");
    for (payload, loc) in [
        (json!({"id": "c1"}), json!(["body", "payload"])),
        (
            json!({"card": {"id": 7}}),
            json!(["body", "payload", "card", "id"]),
        ),
    ] {
        let (status, body) = call(
            M::POST,
            &msgs,
            TOKEN_A,
            Some(json!({"eventType": "card.issued", "payload": payload})),
        )
        .await;
        assert_eq!(status, 422, "{payload}: {body}");
        assert_eq!(body["detail"][0]["loc"], loc, "{body}");
    }
    let (status, ok) = call(
        M::POST,
        &msgs,
        TOKEN_A,
        Some(json!({"eventType": "card.issued", "payload": {"card": {"id": "c1"}}})),
    )
    .await;
    assert_eq!(status, 202, "{ok}");
    let got = svix_receiver.wait_for(3, 60).await;
    assert_eq!(
        got[2].header("svix-id"),
        ok["id"].as_str().unwrap(),
        "only the message that matched was published"
    );
    let (_, list) = call(M::GET, &msgs, TOKEN_A, None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3, "{list}");
    stack.stop().await;
}

/// The `svix-*` headers under their Standard Webhooks names (the same scheme).
fn svix_as_standard(h: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (from, to) in [
        ("svix-id", "webhook-id"),
        ("svix-timestamp", "webhook-timestamp"),
        ("svix-signature", "webhook-signature"),
    ] {
        out.insert(to, h.get(from).expect("a svix header").clone());
    }
    out
}
