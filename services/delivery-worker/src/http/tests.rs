//! Egress safety of one attempt, against real HTTP servers on loopback: the allow-list admits
//! 127.0.0.1 alone; refused literals and rebound names get no connection; redirects are not
//! followed; a hanging endpoint times out; a 1 GiB response is cut at the cap.
//!
//! Only 127.0.0.0/8 and ::1 are ever dialled or bound.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hookline_config::Config;
use hookline_egress::{EgressPolicy, GuardedResolver, Lookup, LookupFuture};
use hookline_signing::WebhookSecret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{EGRESS_DENIED, Outgoing, Sender};

fn config(timeout: &str) -> Config {
    Config {
        egress_allow: "127.0.0.1/32".into(),
        http_timeout: timeout.into(),
        response_body_limit: 64 * 1024,
        ..Config::default()
    }
}

async fn post(sender: &Sender, url: &str) -> super::AttemptResult {
    let secrets = [WebhookSecret::generate()];
    sender
        .send(Outgoing {
            url,
            delivery_id: "d-1",
            body: br#"{"type":"ACCOUNT.CREATED"}"#.to_vec(),
            secrets: &secrets,
            traceparent: "",
            headers: &[],
            svix_id: None,
            both_header_sets: false,
        })
        .await
}

/// Reads one request (head and `content-length` body) from `stream`.
async fn read_request(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "client closed before the request was complete");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if buf.len() >= end + 4 + length {
            return buf;
        }
    }
}

/// A server on `listener` answering every request with `response`; counts requests.
fn serve(listener: TcpListener, response: String) -> Arc<AtomicUsize> {
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            read_request(&mut stream).await;
            counter.fetch_add(1, Ordering::SeqCst);
            stream.write_all(response.as_bytes()).await.unwrap();
        }
    });
    requests
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";

async fn receiver(addr: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(addr).await.unwrap();
    let local = listener.local_addr().unwrap();
    (local, serve(listener, OK.into()))
}

/// A listener that must never see a connection; see [`assert_untouched`].
fn untouched(addr: &str) -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    listener
}

/// The kernel completes a TCP handshake into the backlog before `accept`, so any connection
/// made during the attempt is waiting here now.
fn assert_untouched(listener: &std::net::TcpListener) {
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!(
            "{} accepted a connection from {peer}",
            listener.local_addr().unwrap()
        ),
        Err(e) => panic!("accept: {e}"),
    }
}

fn answering(ips: &'static [&'static str]) -> Arc<dyn Lookup> {
    Arc::new(move |_: &str| -> LookupFuture {
        Box::pin(async move { Ok(ips.iter().map(|s| s.parse().unwrap()).collect()) })
    })
}

#[tokio::test]
async fn the_allow_listed_address_is_delivered_to() {
    let (addr, requests) = receiver("127.0.0.1:0").await;
    let sender = Sender::new(&config("10s")).unwrap();
    let result = post(&sender, &format!("http://{addr}/hook")).await;
    assert_eq!((result.status, result.error_class), (Some(200), ""));
    assert_eq!(result.body, b"ok");
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn refused_literals_get_no_connection_in_any_spelling() {
    let v4 = untouched("127.0.0.2:0");
    let port = v4.local_addr().unwrap().port();
    let v6 = std::net::TcpListener::bind("[::1]:0").ok();
    let sender = Sender::new(&config("10s")).unwrap();
    let mut urls = vec![
        (format!("http://127.0.0.2:{port}/"), "127.0.0.2"),
        (format!("http://2130706434:{port}/"), "127.0.0.2"), // decimal
        (format!("http://0177.0.0.2:{port}/"), "127.0.0.2"), // octal
        (format!("http://0x7f.2:{port}/"), "127.0.0.2"),     // hex, short
        (
            format!("http://[::ffff:127.0.0.2]:{port}/"),
            "::ffff:127.0.0.2",
        ),
    ];
    match &v6 {
        Some(l) => {
            l.set_nonblocking(true).unwrap();
            let port6 = l.local_addr().unwrap().port();
            urls.push((format!("http://[::1]:{port6}/"), "::1"));
        }
        // No IPv6 loopback here: the refusal still happens before any connect.
        None => urls.push((format!("http://[::1]:{port}/"), "::1")),
    }
    for (url, ip) in &urls {
        let result = post(&sender, url).await;
        assert_eq!(result.error_class, EGRESS_DENIED, "{url}: {result:?}");
        assert!(
            result
                .error
                .starts_with(&format!("egress denied: {ip} is loopback")),
            "{url}: {}",
            result.error
        );
        assert_eq!(result.status, None);
    }
    assert_untouched(&v4);
    if let Some(l) = &v6 {
        assert_untouched(l);
    }
}

#[tokio::test]
async fn refused_resolver_answers_are_dropped_and_the_permitted_one_dialled() {
    let (addr, requests) = receiver("127.0.0.1:0").await;
    let refused = untouched(&format!("127.0.0.2:{}", addr.port()));
    let lookup = answering(&["127.0.0.2", "::1", "127.0.0.1"]);
    let sender = Sender::with_lookup(&config("10s"), lookup).unwrap();
    let url = format!("http://receiver.test:{}/hook", addr.port());
    let result = post(&sender, &url).await;
    assert_eq!((result.status, result.error_class), (Some(200), ""));
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    assert_untouched(&refused);
}

#[tokio::test]
async fn a_name_rebound_to_a_refused_address_gets_no_connection() {
    let rebound = untouched("127.0.0.2:0");
    let port = rebound.local_addr().unwrap().port();
    let lookups = Arc::new(AtomicUsize::new(0));
    let counter = lookups.clone();
    // 127.0.0.1 when the subscription is validated, 127.0.0.2 when the worker connects.
    let rebinding: Arc<dyn Lookup> = Arc::new(move |_: &str| -> LookupFuture {
        let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
        let ip = if first { "127.0.0.1" } else { "127.0.0.2" };
        Box::pin(async move { Ok(vec![ip.parse().unwrap()]) })
    });
    let config = config("10s");
    let policy = Arc::new(EgressPolicy::new(config.egress_allow().unwrap()));
    let validation = GuardedResolver::new(policy, rebinding.clone());
    let validated = validation.resolve_permitted("receiver.test").await.unwrap();
    assert_eq!(
        validated,
        ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
    );

    let sender = Sender::with_lookup(&config, rebinding).unwrap();
    let result = post(&sender, &format!("http://receiver.test:{port}/hook")).await;
    assert_eq!(result.error_class, EGRESS_DENIED, "{result:?}");
    assert_eq!(result.error, "egress denied: 127.0.0.2 is loopback");
    assert_eq!(lookups.load(Ordering::SeqCst), 2);
    assert_untouched(&rebound);
}

#[tokio::test]
async fn the_same_rebound_name_is_dialled_once_allow_listed() {
    // The counterpart of the rebinding test: what the guard stops does reach the listener.
    let (addr, requests) = receiver("127.0.0.2:0").await;
    let config = Config {
        egress_allow: "127.0.0.1/32,127.0.0.2/32".into(),
        ..config("10s")
    };
    let sender = Sender::with_lookup(&config, answering(&["127.0.0.2"])).unwrap();
    let url = format!("http://receiver.test:{}/hook", addr.port());
    let result = post(&sender, &url).await;
    assert_eq!((result.status, result.error_class), (Some(200), ""));
    assert_eq!(requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_redirect_is_a_failed_attempt_and_its_target_gets_no_request() {
    let allowed_target = untouched("127.0.0.1:0");
    let refused_target = untouched("127.0.0.2:0");
    let sender = Sender::new(&config("10s")).unwrap();
    for target in [&allowed_target, &refused_target] {
        let location = format!("http://{}/internal", target.local_addr().unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let response = format!(
            "HTTP/1.1 302 Found\r\nlocation: {location}\r\n\
             content-length: 0\r\nconnection: close\r\n\r\n"
        );
        let requests = serve(listener, response);
        let result = post(&sender, &format!("http://{addr}/hook")).await;
        assert_eq!(result.status, Some(302), "{result:?}");
        assert_eq!(result.error_class, "redirect");
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }
    assert_untouched(&allowed_target);
    assert_untouched(&refused_target);
}

#[tokio::test]
async fn a_hanging_endpoint_is_aborted_at_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sender = Sender::new(&config("1s")).unwrap();
    let hold = async {
        // Accept and keep the connection open without a byte in reply.
        let (stream, _) = listener.accept().await.unwrap();
        stream
    };
    let url = format!("http://{addr}/hook");
    let (result, _held) = tokio::join!(post(&sender, &url), hold);
    assert_eq!(result.error_class, "timeout", "{result:?}");
    assert_eq!(result.status, None);
}

/// Peak resident memory of this process (`VmHWM`), in KiB; `None` off Linux.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn a_1_gib_response_is_cut_at_the_cap_and_the_connection_dropped() {
    const GIB: u64 = 1 << 30;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_request(&mut stream).await;
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {GIB}\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        let mut written = 0u64;
        while written < GIB {
            let n = chunk.len().min((GIB - written) as usize);
            match stream.write(&chunk[..n]).await {
                Ok(n) => written += n as u64,
                // The client hung up: what was written so far is all it could have read.
                Err(_) => return (written, true),
            }
        }
        (written, false)
    });
    let peak_before = peak_rss_kib();
    let sender = Sender::new(&config("60s")).unwrap();
    let result = post(&sender, &format!("http://{addr}/hook")).await;
    assert_eq!((result.status, result.error_class), (Some(200), ""));
    assert_eq!(result.body.len(), 64 * 1024);
    drop(result);

    // Bounded so a client that kept reading fails the test instead of hanging it.
    let (written, hung_up) = tokio::time::timeout(Duration::from_secs(120), server)
        .await
        .expect("the server is still writing: the client kept the connection")
        .unwrap();
    assert!(hung_up, "the server wrote all {written} bytes");
    assert!(written < GIB / 16, "the server wrote {written} bytes");
    if let (Some(before), Some(after)) = (peak_before, peak_rss_kib()) {
        // The whole body would add 1 GiB; the cap and socket buffers are a few MiB.
        assert!(
            after.saturating_sub(before) < 256 * 1024,
            "peak RSS grew from {before} KiB to {after} KiB"
        );
    }
}

#[tokio::test]
async fn retry_after_is_read_in_both_forms() {
    let sender = Sender::new(&config("10s")).unwrap();
    let at = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
    for (header, low, high) in [
        ("7".to_owned(), 7, 7),
        // Whole seconds on the wire, and a clock read between the two: 118-120 s.
        (at, 118, 120),
    ] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        serve(
            listener,
            format!(
                "HTTP/1.1 503 Service Unavailable\r\nretry-after: {header}\r\n\
                 content-length: 0\r\nconnection: close\r\n\r\n"
            ),
        );
        let result = post(&sender, &format!("http://{addr}/hook")).await;
        assert_eq!(result.status, Some(503));
        let asked = result.retry_after.expect("Retry-After read").as_secs();
        assert!((low..=high).contains(&asked), "{header}: {asked} s");
    }
}

#[test]
fn recorded_headers_mask_signatures_and_are_capped() {
    assert_eq!(
        super::masked_signature("v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= v1,abc="),
        "v1,**** v1,****"
    );
    assert_eq!(super::masked_signature("garbage"), "****");
    let long = "é".repeat(400);
    let kept = super::capped(&long);
    assert!(kept.len() <= super::RECORDED_HEADER_VALUE && long.starts_with(&kept));
}

/// The head of one request a Svix endpoint with `both` header sets receives, lowercased.
async fn svix_request(both: bool) -> (String, super::AttemptResult) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let head = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let request = read_request(&mut stream).await;
        stream.write_all(OK.as_bytes()).await.unwrap();
        String::from_utf8_lossy(&request).to_lowercase()
    });
    let secrets = [WebhookSecret::generate()];
    let result = Sender::new(&config("10s"))
        .unwrap()
        .send(Outgoing {
            url: &format!("http://{addr}/hook"),
            delivery_id: "d-1",
            body: br#"{"a":1}"#.to_vec(),
            secrets: &secrets,
            traceparent: "",
            headers: &[],
            svix_id: Some("msg_1"),
            both_header_sets: both,
        })
        .await;
    (head.await.unwrap(), result)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
}

#[tokio::test]
async fn a_svix_endpoint_gets_the_webhook_set_too_when_it_asks() {
    let (head, result) = svix_request(false).await;
    assert_eq!(result.status, Some(200));
    assert_eq!(header(&head, "svix-id"), Some("msg_1"));
    assert_eq!(header(&head, "webhook-id"), None, "{head}");
    let (head, result) = svix_request(true).await;
    assert_eq!(result.status, Some(200));
    for (svix, webhook) in [
        ("svix-id", "webhook-id"),
        ("svix-timestamp", "webhook-timestamp"),
        ("svix-signature", "webhook-signature"),
    ] {
        assert!(header(&head, svix).is_some(), "{svix}: {head}");
        assert_eq!(
            header(&head, svix),
            header(&head, webhook),
            "{webhook}: {head}"
        );
    }
    let recorded: Vec<&str> = result
        .request_headers
        .iter()
        .filter(|(k, _)| k.ends_with("-signature"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(recorded, ["v1,****", "v1,****"], "both signatures masked");
}
