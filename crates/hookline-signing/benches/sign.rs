//! The CPU cost of one delivery's signature over a 1 KB body: HMAC-SHA256 (`v1`) against
//! ed25519 (`v1a`), and both during a rotation. `cargo bench -p hookline-signing`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hookline_signing::{Scheme, WebhookSecret, sign};

fn signing(c: &mut Criterion) {
    let body = vec![b'x'; 1024];
    let id = "0d9c6a4e-2f0b-5c1e-9a3d-7b6f4e2a1c08";
    let hmac = [WebhookSecret::generate_for(Scheme::HmacSha256)];
    let ed = [WebhookSecret::generate_for(Scheme::Ed25519)];
    let both = [ed[0].clone(), hmac[0].clone()];
    for (name, secrets) in [
        ("hmac-sha256", &hmac[..]),
        ("ed25519", &ed[..]),
        ("rotation", &both[..]),
    ] {
        c.bench_function(&format!("sign 1 KB {name}"), |b| {
            b.iter(|| sign(black_box(secrets), id, 1_765_000_000, black_box(&body)))
        });
        // As the worker signs today: the secret parsed from its text form for each attempt.
        let texts: Vec<String> = secrets.iter().map(WebhookSecret::expose).collect();
        c.bench_function(&format!("parse and sign 1 KB {name}"), |b| {
            b.iter(|| {
                let parsed: Vec<WebhookSecret> = texts
                    .iter()
                    .map(|t| WebhookSecret::parse(black_box(t)).unwrap())
                    .collect();
                sign(&parsed, id, 1_765_000_000, black_box(&body))
            })
        });
    }
}

criterion_group!(benches, signing);
criterion_main!(benches);
