//! Ed25519 signatures (Standard Webhooks `v1a`): a secret made to sign so, deliveries signed
//! with it, verified by an independent library (Python `cryptography`) with the `whpk_`
//! public key the API serves; a rotation from HMAC to ed25519 signs with both during the
//! overlap; a `signing` that is not how the secret signs is refused, in both dialects.

use std::io::Write as _;
use std::process::{Command, Stdio};

use reqwest::Method as M;
use serde_json::{Value, json};

use crate::support::receiver::{Received, Receiver};
use crate::support::{Stack, TENANT_A, TOKEN_A};

const SECRETS: &str = "/api/v1/event-deliveries/secrets";
const SUBS: &str = "/api/v1/event-deliveries/subscriptions";

/// Verifies the `v1a` signatures of `got` with `public_key` (`whpk_…`) in Python
/// `cryptography`: true when one of them verifies over `id.timestamp.body`.
fn python_verifies(public_key: &str, got: &Received) -> bool {
    const VERIFY: &str = r#"
import base64, json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.exceptions import InvalidSignature
req = json.load(sys.stdin)
key = Ed25519PublicKey.from_public_bytes(base64.b64decode(req["key"].removeprefix("whpk_")))
signed = f'{req["id"]}.{req["ts"]}.'.encode() + base64.b64decode(req["body"])
for part in req["header"].split():
    version, _, sig = part.partition(",")
    if version != "v1a":
        continue
    try:
        key.verify(base64.b64decode(sig), signed)
        sys.exit(0)
    except InvalidSignature:
        pass
sys.exit(1)
"#;
    use base64::Engine as _;
    let input = json!({
        "key": public_key,
        "id": got.header("webhook-id"),
        "ts": got.header("webhook-timestamp"),
        "body": base64::engine::general_purpose::STANDARD.encode(&got.body),
        "header": got.header("webhook-signature"),
    });
    let mut child = Command::new("python3")
        .args(["-c", VERIFY])
        .stdin(Stdio::piped())
        .spawn()
        .expect("python3 (with `cryptography`, installed by `make test`)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    child.wait().unwrap().success()
}

fn event(id: &str) -> Value {
    json!({"type": "ACCOUNT.CREATED", "time": "2026-04-14T09:54:45.040Z",
        "tenant": TENANT_A, "data": {"id": id}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ed25519_deliveries_verify_with_the_served_public_key() {
    let stack = Stack::start(|_| {}).await;
    let api = stack.api.clone();
    let events = stack.config.topic_events.clone();

    // Fynapse: an ed25519 secret, a subscription naming it.
    let receiver = Receiver::start(&[], 200).await;
    let (status, secret) = stack
        .call(
            M::POST,
            &format!("{api}{SECRETS}"),
            TOKEN_A,
            Some(json!({"name": "ed", "signing": "ed25519"})),
        )
        .await;
    assert_eq!(status, 201, "{secret}");
    assert!(secret["value"].as_str().unwrap().starts_with("whsk_"));
    assert_eq!(secret["signing"], "ed25519");
    let public = secret["publicKey"].as_str().unwrap().to_owned();
    assert!(public.starts_with("whpk_"), "{secret}");
    // A `signing` the named secret does not sign with: 409 naming the field.
    let (status, refused) = stack
        .call(
            M::POST,
            &format!("{api}{SUBS}"),
            TOKEN_A,
            Some(json!({"name": "mismatch", "endpointUrl": receiver.url,
                "secretRef": "ed", "signing": "hmac-sha256"})),
        )
        .await;
    assert_eq!(
        (status, refused["field"].as_str()),
        (409, Some("signing")),
        "{refused}"
    );
    let (status, sub) = stack
        .call(
            M::POST,
            &format!("{api}{SUBS}"),
            TOKEN_A,
            Some(json!({"name": "signed-ed", "endpointUrl": receiver.url,
                "secretRef": "ed", "signing": "ed25519"})),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    assert_eq!(sub["signing"], "ed25519");
    stack.publish_json(&events, "acc-1", &event("acc-1")).await;
    let got = receiver.wait_for(1, 60).await;
    let header = got[0].header("webhook-signature");
    assert!(
        header.starts_with("v1a,") && !header.contains("v1,"),
        "{header}"
    );
    assert!(
        python_verifies(&public, &got[0]),
        "v1a does not verify: {header}"
    );
    let other = hookline_signing::WebhookSecret::generate_for(hookline_signing::Scheme::Ed25519);
    assert!(
        !python_verifies(&other.public_key().unwrap(), &got[0]),
        "the verifier accepts any key"
    );

    // HMAC to ed25519 by rotation: both sign during the overlap.
    let rotating = Receiver::start(&[], 200).await;
    let (_, old) = stack
        .fynapse_subscription("rotating", &rotating.url, json!([]))
        .await;
    let (status, rotated) = stack
        .call(
            M::POST,
            &format!("{api}{SECRETS}/rotating/rotate"),
            TOKEN_A,
            Some(json!({"signing": "ed25519"})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new_public = rotated["publicKey"].as_str().unwrap().to_owned();
    stack.publish_json(&events, "acc-2", &event("acc-2")).await;
    let got = rotating.wait_for(1, 60).await;
    let header = got[0].header("webhook-signature");
    assert_eq!(header.split(' ').count(), 2, "{header}");
    assert!(python_verifies(&new_public, &got[0]), "{header}");
    standardwebhooks::Webhook::new(&old)
        .unwrap()
        .verify(&got[0].body, &got[0].headers)
        .expect("the old HMAC secret still verifies during the overlap");

    // Synctera: an ed25519 webhook; its secret route serves the public key.
    let hooked = Receiver::start(&[], 200).await;
    let (status, hook) = stack
        .call(
            M::POST,
            &format!("{api}/v2/webhooks"),
            TOKEN_A,
            Some(json!({"enabled_events": ["ACCOUNT.*"], "is_enabled": true,
                "url": hooked.url, "signing": "ed25519"})),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    assert!(hook["secret"].as_str().unwrap().starts_with("whsk_"));
    let hook_url = format!("{api}/v2/webhooks/{}", hook["id"].as_str().unwrap());
    let (_, hook_secret) = stack
        .call(M::GET, &format!("{hook_url}/secret"), TOKEN_A, None)
        .await;
    let hook_public = hook_secret["public_key"].as_str().unwrap().to_owned();
    let (status, refused) = stack
        .call(
            M::PATCH,
            &hook_url,
            TOKEN_A,
            Some(json!({"signing": "hmac-sha256"})),
        )
        .await;
    assert_eq!(
        (status, refused["field"].as_str()),
        (409, Some("signing")),
        "{refused}"
    );
    stack.publish_json(&events, "acc-3", &event("acc-3")).await;
    let got = hooked.wait_for(1, 60).await;
    assert!(python_verifies(&hook_public, &got[0]));
    stack.stop().await;
}
