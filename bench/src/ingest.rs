//! The open-loop HTTP generator of Svix messages: `POST {base}/api/v1/app/{app}/msg` at a
//! target rate whatever the server does, on one thread of its own (a current-thread runtime
//! with its own connection pool), so its CPU is measured apart from the receiver's.
//!
//! Every millisecond it sends what the schedule says is due without awaiting earlier
//! requests. Each message belongs to one of `keys` ordering keys, spread over the
//! applications; a key has at most one request in flight (a key's messages are accepted in
//! their sequence order, so the receiver's order check means something), and at most
//! `max_in_flight` requests are out at once (HTTP/1.1: one connection each; more would
//! overflow the server's listen backlog and measure SYN retries). A message due while every
//! key is busy or that many are out is not sent and counted (`skipped_busy`: the server is
//! too slow for the rate). The payload carries the run, the key, its sequence
//! number and the send time, as the Kafka generator's events do.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::receiver::now_us;

/// Where the messages go and how.
#[derive(Clone, Debug)]
pub struct Target {
    /// `http://host:port` of a Svix-compatible server.
    pub base: String,
    pub token: String,
    /// Application ids the messages are spread over.
    pub apps: Vec<String>,
    /// Send Hookline's `orderingKey` extension (each key its own order); Svix has no such
    /// field and orders nothing.
    pub ordering_key: bool,
}

pub struct Load<'a> {
    pub run: &'a str,
    pub rate: f64,
    pub duration: Duration,
    /// Ordering keys, key `i` in application `i % apps`.
    pub keys: usize,
    /// Approximate size of each request body.
    pub body_bytes: usize,
    /// Requests out at once, at most (connections).
    pub max_in_flight: usize,
}

/// What one load phase sent and how the server answered.
#[derive(Debug, Serialize)]
pub struct Sent {
    pub offered: u64,
    /// Answered 2xx.
    pub accepted: u64,
    /// Answered otherwise, by status.
    pub refused: BTreeMap<u16, u64>,
    /// No answer: connection errors and timeouts.
    pub transport_errors: u64,
    /// Due while every key had a request in flight, or `max_in_flight` were out; not sent.
    pub skipped_busy: u64,
    /// From the first request to the last answer.
    #[serde(skip)]
    pub span: Duration,
    /// When sending began, µs since the epoch.
    pub started_us: u64,
    /// Request sent to answer received, µs, of accepted messages.
    #[serde(skip)]
    pub ack_us: Histogram<u64>,
    /// CPU time of the generator's thread (requests, connections, JSON), ms.
    pub generator_cpu_ms: f64,
    pub first_error: Option<String>,
}

impl Sent {
    pub fn errors(&self) -> u64 {
        self.refused.values().sum::<u64>() + self.transport_errors
    }
}

/// CPU time of the calling thread, µs (`/proc/thread-self/stat`).
fn thread_cpu_us() -> u64 {
    let ticks = 100; // USER_HZ on Linux
    std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|stat| {
            let after = stat[stat.rfind(')')? + 1..].to_owned();
            let f: Vec<&str> = after.split_whitespace().collect();
            let utime: u64 = f.get(11)?.parse().ok()?;
            let stime: u64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) * 1_000_000 / ticks)
        })
        .unwrap_or(0)
}

fn body(load: &Load<'_>, target: &Target, key: usize, seq: u64, sent_us: u64) -> String {
    let k = format!("k{key}");
    let ordering = if target.ordering_key {
        format!(r#","orderingKey":"{k}""#)
    } else {
        String::new()
    };
    let head = format!(
        r#"{{"eventType":"bench.ingest"{ordering},"payload":{{"run":"{}","k":"{k}","seq":{seq},"t":{sent_us},"pad":""#,
        load.run
    );
    let pad = load.body_bytes.saturating_sub(head.len() + 3).min(4096);
    let mut s = head;
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}}");
    s
}

/// Sends `load` to `target` on a thread of its own and waits for every answer.
pub async fn run(target: &Target, load: Load<'_>) -> anyhow::Result<Sent> {
    let (target, run, keys) = (target.clone(), load.run.to_owned(), load.keys);
    let (rate, duration, body_bytes) = (load.rate, load.duration, load.body_bytes);
    let max_in_flight = load.max_in_flight;
    let thread = std::thread::spawn(move || -> anyhow::Result<Sent> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let load = Load {
            run: &run,
            rate,
            duration,
            keys,
            body_bytes,
            max_in_flight,
        };
        let cpu_before = thread_cpu_us();
        let mut sent = runtime.block_on(send(&target, &load))?;
        drop(runtime);
        sent.generator_cpu_ms = thread_cpu_us().saturating_sub(cpu_before) as f64 / 1000.0;
        Ok(sent)
    });
    tokio::task::spawn_blocking(move || thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the HTTP generator panicked"))?
}

async fn send(target: &Target, load: &Load<'_>) -> anyhow::Result<Sent> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(usize::MAX)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let urls: Vec<String> = target
        .apps
        .iter()
        .map(|a| format!("{}/api/v1/app/{a}/msg?with_content=false", target.base))
        .collect();
    let auth = format!("Bearer {}", target.token);
    let mut sent = Sent {
        offered: 0,
        accepted: 0,
        refused: BTreeMap::new(),
        transport_errors: 0,
        skipped_busy: 0,
        span: Duration::ZERO,
        started_us: now_us(),
        ack_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)?,
        generator_cpu_ms: 0.0,
        first_error: None,
    };
    let keys = load.keys.max(1);
    let mut seqs = vec![0u64; keys];
    let mut busy = vec![false; keys];
    let mut cursor = 0usize;
    let mut in_flight = FuturesUnordered::new();
    let started = Instant::now();
    let period_ms = (1000.0 / load.rate.max(1.0)).clamp(1.0, 50.0) as u64;
    let mut tick = tokio::time::interval(Duration::from_millis(period_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let total = (load.rate * load.duration.as_secs_f64()).round() as u64;
    while sent.offered < total || !in_flight.is_empty() {
        tokio::select! {
            _ = tick.tick(), if sent.offered < total => {
                let due = ((started.elapsed().as_secs_f64() * load.rate) as u64).min(total);
                while sent.offered < due {
                    sent.offered += 1;
                    if in_flight.len() >= load.max_in_flight {
                        sent.skipped_busy += 1;
                        continue;
                    }
                    let Some(key) = (0..keys).map(|i| (cursor + i) % keys).find(|k| !busy[*k])
                    else {
                        sent.skipped_busy += 1;
                        continue;
                    };
                    cursor = (key + 1) % keys;
                    busy[key] = true;
                    let t = now_us();
                    let request = client
                        .post(&urls[key % urls.len()])
                        .header("authorization", &auth)
                        .header("content-type", "application/json")
                        .body(body(load, target, key, seqs[key], t));
                    seqs[key] += 1;
                    let at = Instant::now();
                    in_flight.push(async move {
                        let answer = match request.send().await {
                            Ok(r) => {
                                let status = r.status();
                                // Read the body so the connection goes back to the pool.
                                let text = r.text().await.unwrap_or_default();
                                Ok((status, text))
                            }
                            Err(e) => Err(e.to_string()),
                        };
                        (key, at.elapsed(), answer)
                    });
                }
            }
            Some((key, took, answer)) = in_flight.next(), if !in_flight.is_empty() => {
                busy[key] = false;
                match answer {
                    Ok((status, _)) if status.is_success() => {
                        sent.accepted += 1;
                        let _ = sent.ack_us.record((took.as_micros() as u64).max(1));
                    }
                    Ok((status, text)) => {
                        *sent.refused.entry(status.as_u16()).or_default() += 1;
                        sent.first_error.get_or_insert_with(|| format!("{status}: {text}"));
                    }
                    Err(e) => {
                        sent.transport_errors += 1;
                        sent.first_error.get_or_insert(e);
                    }
                }
            }
        }
    }
    sent.span = started.elapsed();
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_body_is_a_svix_message_of_about_the_size_asked() {
        let target = Target {
            base: String::new(),
            token: String::new(),
            apps: vec!["app_1".into()],
            ordering_key: true,
        };
        let load = Load {
            run: "s8-500",
            rate: 1.0,
            duration: Duration::ZERO,
            keys: 1,
            body_bytes: 1024,
            max_in_flight: 1,
        };
        let text = body(&load, &target, 7, 3, 42);
        assert_eq!(text.len(), 1024);
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["eventType"], "bench.ingest");
        assert_eq!(v["orderingKey"], "k7");
        let p = &v["payload"];
        assert_eq!(
            (&p["run"], &p["k"], &p["seq"], &p["t"]),
            (&"s8-500".into(), &"k7".into(), &3.into(), &42.into())
        );
        let svix = Target {
            ordering_key: false,
            ..target
        };
        let v: serde_json::Value = serde_json::from_str(&body(&load, &svix, 7, 3, 42)).unwrap();
        assert!(v.get("orderingKey").is_none(), "Svix has no such field");
    }
}
