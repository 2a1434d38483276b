//! Fynapse dialect beyond create/get: PUT, PATCH, DELETE, secret rotation and deletion,
//! roles, pagination, limits at and past their boundaries, and the body size limit.

use reqwest::Method as M;
use serde_json::{Value, json};

use crate::api_support::{Api, TOKEN_VIEWER_A, api_config, assert_refused};
use crate::support::{TOKEN_A, TOKEN_ADMIN, TOKEN_B, client};

const SECRETS: &str = "/api/v1/event-deliveries/secrets";
const SUBS: &str = "/api/v1/event-deliveries/subscriptions";

async fn create_sub(api: &Api, body: Value) -> Value {
    let (status, created) = api.call(M::POST, SUBS, TOKEN_A, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriptions_update_rename_and_delete() {
    let config = api_config().await;
    let api = Api::start(&config).await;
    let (status, _) = api
        .call(M::POST, SECRETS, TOKEN_A, Some(json!({"name": "s1"})))
        .await;
    assert_eq!(status, 201);
    let sub = create_sub(
        &api,
        json!({"name": "one", "endpointUrl": "https://e.com/1", "secretRef": "s1"}),
    )
    .await;
    let one = format!("{SUBS}/{}", sub["id"].as_str().unwrap());

    // Roles: a viewer reads but may not write; another tenant does not see it; admin does.
    assert_eq!(api.call(M::GET, &one, TOKEN_VIEWER_A, None).await.0, 200);
    let patch = Some(json!({"description": "d"}));
    assert_eq!(
        api.call(M::PATCH, &one, TOKEN_VIEWER_A, patch.clone())
            .await
            .0,
        403
    );
    assert_eq!(api.call(M::DELETE, &one, TOKEN_VIEWER_A, None).await.0, 403);
    let viewer_post = json!({"name": "v", "endpointUrl": "https://e.com"});
    assert_eq!(
        api.call(M::POST, SUBS, TOKEN_VIEWER_A, Some(viewer_post))
            .await
            .0,
        403
    );
    assert_eq!(api.call(M::GET, &one, TOKEN_B, None).await.0, 404);
    assert_eq!(
        api.call(M::PATCH, &one, TOKEN_B, patch.clone()).await.0,
        404
    );
    assert_eq!(api.call(M::DELETE, &one, TOKEN_B, None).await.0, 404);
    assert_eq!(api.call(M::GET, &one, TOKEN_ADMIN, None).await.0, 200);

    // PATCH changes only what is present; null clears.
    let (status, got) = api.call(M::PATCH, &one, TOKEN_A, patch).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["description"], "d");
    assert_eq!(got["endpointUrl"], "https://e.com/1");
    let types = json!({"eventTypes": ["ACCOUNT.*", "balance.extracted"]});
    let (_, got) = api.call(M::PATCH, &one, TOKEN_A, Some(types)).await;
    assert_eq!(got["eventTypes"], json!(["ACCOUNT.*", "balance.extracted"]));
    assert_eq!(got["description"], "d");
    let clear = json!({"description": null, "eventTypes": null});
    let (_, got) = api.call(M::PATCH, &one, TOKEN_A, Some(clear)).await;
    assert!(got.get("description").is_none(), "{got}");
    assert_eq!(got["eventTypes"], json!([]));
    for (body, field) in [
        (json!({"name": null}), "name"),
        (json!({"endpointUrl": "nope"}), "endpointUrl"),
        (json!({"colour": "red"}), "colour"),
        (json!({"description": "d".repeat(1025)}), "description"),
    ] {
        let got = api.call(M::PATCH, &one, TOKEN_A, Some(body.clone())).await;
        assert_refused(&got, 400, field, &body.to_string());
    }
    // A secret that does not exist: valid by the document, a conflict with the state.
    let missing = json!({"secretRef": "missing"});
    let got = api.call(M::PATCH, &one, TOKEN_A, Some(missing)).await;
    assert_refused(&got, 409, "secretRef", "missing secret");
    let (_, unchanged) = api.call(M::GET, &one, TOKEN_A, None).await;
    assert_eq!(
        unchanged["endpointUrl"], "https://e.com/1",
        "refused PATCHes changed nothing"
    );

    // PUT replaces: an omitted secretRef keeps the secret, an omitted description clears.
    let put = json!({"name": "one-renamed", "endpointUrl": "https://e.com/2", "description": "x"});
    let (status, got) = api.call(M::PUT, &one, TOKEN_A, Some(put)).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["secretRef"], "s1");
    let put = json!({"name": "one-renamed", "endpointUrl": "https://e.com/3"});
    let (_, got) = api.call(M::PUT, &one, TOKEN_A, Some(put)).await;
    assert!(got.get("description").is_none(), "{got}");
    assert_eq!(
        api.call(M::GET, &one, TOKEN_A, None).await.1["endpointUrl"],
        "https://e.com/3"
    );

    // The old name is free again, the new one is taken, renaming onto a taken name is 409.
    let other = create_sub(&api, json!({"name": "one", "endpointUrl": "https://e.com"})).await;
    let dup = json!({"name": "one-renamed", "endpointUrl": "https://e.com"});
    assert_refused(
        &api.call(M::POST, SUBS, TOKEN_A, Some(dup)).await,
        409,
        "name",
        "dup",
    );
    let onto = json!({"name": "one-renamed"});
    let other_url = format!("{SUBS}/{}", other["id"].as_str().unwrap());
    assert_refused(
        &api.call(M::PATCH, &other_url, TOKEN_A, Some(onto)).await,
        409,
        "name",
        "rename",
    );

    // A secret in use cannot be deleted; once unused it can, and its name is free again.
    let in_use = api
        .call(M::DELETE, &format!("{SECRETS}/s1"), TOKEN_A, None)
        .await;
    assert_refused(&in_use, 409, "name", "secret in use");
    assert_eq!(api.call(M::DELETE, &one, TOKEN_A, None).await.0, 204);
    assert_eq!(api.call(M::GET, &one, TOKEN_A, None).await.0, 404);
    assert_eq!(api.call(M::DELETE, &one, TOKEN_A, None).await.0, 404);
    assert_eq!(
        api.call(M::DELETE, &format!("{SECRETS}/s1"), TOKEN_A, None)
            .await
            .0,
        204
    );
    assert_eq!(
        api.call(M::GET, &format!("{SECRETS}/s1"), TOKEN_A, None)
            .await
            .0,
        404
    );
    let again = api
        .call(M::POST, SECRETS, TOKEN_A, Some(json!({"name": "s1"})))
        .await;
    assert_eq!(again.0, 201, "{}", again.1);
    let renamed = create_sub(
        &api,
        json!({"name": "one-renamed", "endpointUrl": "https://e.com"}),
    );
    assert!(
        renamed.await["id"].is_string(),
        "a deleted subscription's name is free"
    );
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secrets_rotate_with_an_overlap() {
    let config = api_config().await;
    let api = Api::start(&config).await;
    let (_, created) = api
        .call(M::POST, SECRETS, TOKEN_A, Some(json!({"name": "rot"})))
        .await;
    let first = created["value"].as_str().unwrap().to_owned();
    let rotate = format!("{SECRETS}/rot/rotate");
    assert_eq!(
        api.call(M::POST, &rotate, TOKEN_VIEWER_A, None).await.0,
        403
    );
    assert_eq!(api.call(M::POST, &rotate, TOKEN_B, None).await.0, 404);
    let (status, rotated) = api.call(M::POST, &rotate, TOKEN_A, None).await;
    assert_eq!(status, 200, "{rotated}");
    let second = rotated["value"].as_str().unwrap();
    hookline_signing::WebhookSecret::parse(second).expect("a whsec_ value");
    assert_ne!(second, first);
    let versions = rotated["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{rotated}");
    assert!(
        versions[0].get("expiresAt").is_none(),
        "the new version does not expire"
    );
    assert!(
        versions[1]["expiresAt"].is_string(),
        "the old one signs until the overlap ends"
    );
    let (_, got) = api
        .call(M::GET, &format!("{SECRETS}/rot"), TOKEN_A, None)
        .await;
    assert!(got.get("value").is_none(), "{got}");
    assert_eq!(got["versions"].as_array().unwrap().len(), 2);
    let missing = format!("{SECRETS}/nope/rotate");
    assert_eq!(api.call(M::POST, &missing, TOKEN_A, None).await.0, 404);
    api.stop().await;
}

/// Walks every page of `path` (a Fynapse list) with `limit`; returns the items' `key`s.
async fn walk(api: &Api, path: &str, limit: usize, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{path}?limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = api.call(M::GET, &url, TOKEN_A, None).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= limit);
        out.extend(items.iter().map(|i| i[key].as_str().unwrap().to_owned()));
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lists_paginate_in_a_stable_order() {
    let config = api_config().await;
    let api = Api::start(&config).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let body = json!({"name": format!("sub-{i}"), "endpointUrl": "https://e.com"});
        ids.push(
            create_sub(&api, body).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(
        walk(&api, SUBS, 3, "id").await,
        ids,
        "creation order, each once"
    );
    assert_eq!(walk(&api, SUBS, 100, "id").await, ids);
    let mut names: Vec<String> = (0..7).map(|i| format!("sub-{i}")).collect();
    names.sort();
    assert_eq!(
        walk(&api, SECRETS, 2, "name").await,
        names,
        "secrets by name"
    );

    // A page boundary survives a deletion before it.
    let (_, page) = api
        .call(M::GET, &format!("{SUBS}?limit=3"), TOKEN_A, None)
        .await;
    let cursor = page["nextCursor"].as_str().unwrap().to_owned();
    assert_eq!(
        api.call(M::DELETE, &format!("{SUBS}/{}", ids[0]), TOKEN_A, None)
            .await
            .0,
        204
    );
    let (_, next) = api
        .call(
            M::GET,
            &format!("{SUBS}?limit=3&cursor={cursor}"),
            TOKEN_A,
            None,
        )
        .await;
    assert_eq!(next["items"][0]["id"], ids[3].as_str());

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("cursor=%25%25", "cursor"),
        ("page=2", "page"),
    ] {
        let got = api
            .call(M::GET, &format!("{SUBS}?{query}"), TOKEN_A, None)
            .await;
        assert_refused(&got, 400, field, query);
    }
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_hold_at_their_boundaries() {
    let config = api_config().await;
    let api = Api::start(&config).await;
    let url_of = |len: usize| format!("https://e.com/{}", "u".repeat(len - "https://e.com/".len()));
    let types = |n: usize| {
        (0..n)
            .map(|i| ["ACCOUNT.CREATED", "CARD.*"][i % 2])
            .collect::<Vec<_>>()
    };
    let ok = [
        json!({"name": "u", "endpointUrl": url_of(1000)}),
        json!({"name": "t", "endpointUrl": "https://e.com", "eventTypes": types(100)}),
        json!({"name": "n".repeat(255), "endpointUrl": "https://e.com"}),
    ];
    for body in ok {
        let (status, got) = api.call(M::POST, SUBS, TOKEN_A, Some(body)).await;
        assert_eq!(status, 201, "{got}");
    }
    let bad = [
        (
            json!({"name": "u2", "endpointUrl": url_of(1001)}),
            "endpointUrl",
        ),
        (
            json!({"name": "t2", "endpointUrl": "https://e.com", "eventTypes": types(101)}),
            "eventTypes",
        ),
        (
            json!({"name": "t3", "endpointUrl": "https://e.com", "eventTypes": "A.B"}),
            "eventTypes",
        ),
        (
            json!({"name": "t4", "endpointUrl": "https://e.com", "secretRef": "s".repeat(256)}),
            "secretRef",
        ),
        (
            json!({"name": "n".repeat(256), "endpointUrl": "https://e.com"}),
            "name",
        ),
    ];
    for (body, field) in bad {
        let got = api.call(M::POST, SUBS, TOKEN_A, Some(body.clone())).await;
        assert_refused(&got, 400, field, &body.to_string());
    }
    let secret = |name: String| Some(json!({"name": name}));
    assert_eq!(
        api.call(M::POST, SECRETS, TOKEN_A, secret("s".repeat(255)))
            .await
            .0,
        201
    );
    let got = api
        .call(M::POST, SECRETS, TOKEN_A, secret("s".repeat(256)))
        .await;
    assert_refused(&got, 400, "name", "secret name 256");

    // The body limit (default 64 KiB): exactly at it is read, one byte more is 413.
    let limit = config.api_body_limit;
    let padded = |len: usize| {
        let head = r#"{"name": "padded", "endpointUrl": "https://e.com""#;
        format!("{head}{}}}", " ".repeat(len - head.len() - 1))
    };
    let send = |body: String| {
        client()
            .post(format!("{}{SUBS}", api.url))
            .bearer_auth(TOKEN_A)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let resp = send(padded(limit + 1)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["code"], "body_too_large", "{err}");
    let resp = send(padded(limit)).await.unwrap();
    assert_eq!(
        resp.status().as_u16(),
        201,
        "{}",
        resp.text().await.unwrap()
    );

    // Unknown routes and methods answer JSON too.
    let (status, err) = api
        .call(M::GET, "/api/v1/nothing-here", TOKEN_A, None)
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some("unknown_route")),
        "{err}"
    );
    let (status, err) = api.call(M::PUT, SUBS, TOKEN_A, None).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (405, Some("method_not_allowed")),
        "{err}"
    );
    api.stop().await;
}
