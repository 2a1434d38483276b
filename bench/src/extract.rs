//! Scenario 5: one extract of 1,000,000 balance rows, delivered end to end. The rows are
//! published to the balances topic first (not measured); then the extract runs
//! (`?wait=true`) and every `balance.extracted` delivery is awaited at the receiver. The
//! report gives the emission rate and the extract producer's peak RSS.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::producer::FutureRecord;
use serde_json::json;

use crate::Bench;
use crate::phase::{Latency, PhaseResult, tracing_note};
use crate::scenarios::{ScenarioResult, TENANTS, correct};

/// Produces `rows` balance rows of `node`, many in flight; returns how many were acknowledged.
async fn publish_rows(bench: &Bench, node: &str, rows: u64) -> anyhow::Result<u64> {
    let topic = bench.stack.value("HOOKLINE_TOPIC_BALANCES").to_owned();
    let mut acks = FuturesUnordered::new();
    let mut acked = 0;
    for i in 0..rows {
        let key = format!("{node}/a{i}/Current/GBP");
        let row = format!(
            r#"{{"node":"{node}","account":"a{i}","productName":"Current","transactionCurrency":"GBP","balance":"{}.{:02}"}}"#,
            i % 100_000,
            i % 100
        );
        loop {
            match bench
                .producer
                .send_result(FutureRecord::to(&topic).key(&key).payload(&row))
            {
                Ok(ack) => {
                    acks.push(ack);
                    break;
                }
                Err(_) => {
                    // Queue full: let acknowledgements come back first.
                    if let Some(Ok(Ok(_))) = acks.next().await {
                        acked += 1;
                    }
                }
            }
        }
        if acks.len() >= 100_000
            && let Some(Ok(Ok(_))) = acks.next().await
        {
            acked += 1;
        }
    }
    while let Some(r) = acks.next().await {
        if matches!(r, Ok(Ok(_))) {
            acked += 1;
        }
    }
    Ok(acked)
}

fn parse_ms(text: &str) -> Option<f64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e6)
}

pub async fn million_rows(bench: &mut Bench) -> anyhow::Result<ScenarioResult> {
    let tenant = TENANTS[4];
    let rows: u64 = if bench.quick { 20_000 } else { 1_000_000 };
    bench
        .subscribe(tenant, &[(vec!["balance.extracted".into()], false)])
        .await?;
    let node = format!("bench-node-{}", crate::receiver::now_us());
    tracing_note(&format!("s5: publishing {rows} balance rows"));
    let publish_started = Instant::now();
    let published = publish_rows(bench, &node, rows).await?;
    let publish_s = publish_started.elapsed().as_secs_f64();
    let token = bench.token(tenant).to_owned();
    let name = "bench-extract";
    bench.extracts.extract(&token, name, &node).await?;

    let window = bench.monitor.begin();
    let run_started = Instant::now();
    tracing_note("s5: running the extract");
    let run = bench.extracts.run_extract(&token, name).await?;
    let run_call_s = run_started.elapsed().as_secs_f64();
    let emitted = run["rowsEmitted"].as_u64().unwrap_or(0);
    let emit_s = match (
        run["startedOn"].as_str().and_then(parse_ms),
        run["finishedOn"].as_str().and_then(parse_ms),
    ) {
        (Some(a), Some(b)) if b > a => (b - a) / 1000.0,
        _ => run_call_s,
    };
    let emit_rate = emitted as f64 / emit_s.max(1e-3);
    tracing_note(&format!(
        "s5: run {} emitted {emitted} in {emit_s:.1} s ({emit_rate:.0} rows/s); awaiting deliveries",
        run["status"]
    ));
    let run_name = format!("extract:{node}");
    let (mut last, mut last_change) = (u64::MAX, Instant::now());
    let stall = Duration::from_secs(60);
    let backlog_at_emit_end = emitted.saturating_sub(bench.receiver.delivered(&run_name));
    loop {
        let delivered = bench.receiver.delivered(&run_name);
        if delivered >= emitted {
            break;
        }
        if delivered != last {
            (last, last_change) = (delivered, Instant::now());
        } else if last_change.elapsed() > stall {
            tracing_note(&format!("s5: {delivered} of {emitted} delivered; stalled"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let total_s = run_started.elapsed().as_secs_f64();
    let delivered = bench.receiver.delivered(&run_name);
    let processes = bench.monitor.end(&window, delivered);
    let extract_rss_mb = processes
        .iter()
        .find(|p| p.name.contains("extract"))
        .map_or(0.0, |p| p.peak_rss_mb);
    let mut phase = PhaseResult {
        run: run_name.clone(),
        duration_s: total_s,
        events_acked: emitted,
        events_per_s_in: emit_rate,
        expected_deliveries: rows,
        delivered,
        deliveries_per_s_out: delivered as f64 / total_s.max(1e-3),
        backlog_at_end_of_load: backlog_at_emit_end,
        lost: rows.saturating_sub(delivered),
        processes,
        ..PhaseResult::default()
    };
    bench.receiver.with_stats(&run_name, "ok", |s| {
        phase.duplicates = s.duplicates;
        phase.latency = Latency::of(&s.latency_us);
    });
    bench.receiver.forget(&run_name);
    let summary = format!(
        "{emitted} rows emitted at {emit_rate:.0}/s (goal >= 50,000/s), extract producer peak \
         RSS {extract_rss_mb:.0} MB (goal < 200 MB); {delivered} of {rows} delivered in \
         {total_s:.1} s ({:.0}/s)",
        phase.deliveries_per_s_out
    );
    let phases = vec![phase];
    Ok(ScenarioResult {
        id: 5,
        title: format!("One extract of {rows} balance rows, delivered end to end"),
        summary,
        correct: correct(&phases) && emitted == rows,
        figures: BTreeMap::from([
            ("rows".into(), json!(rows)),
            ("rows_published".into(), json!(published)),
            ("rows_publish_s".into(), json!(publish_s)),
            ("rows_emitted".into(), json!(emitted)),
            ("emit_s".into(), json!(emit_s)),
            ("emit_rows_per_s".into(), json!(emit_rate)),
            ("extract_producer_peak_rss_mb".into(), json!(extract_rss_mb)),
            ("run_call_s".into(), json!(run_call_s)),
            ("end_to_end_s".into(), json!(total_s)),
            ("run".into(), run),
        ]),
        notes: vec![
            "One Fynapse subscription to `balance.extracted`. Emission rate from the run's \
             startedOn/finishedOn; latency from each event's `event_timestamp` (set when the \
             extract emits it, millisecond precision) to its receipt. Dead letters are not \
             counted for this scenario. CPU and memory cover the run and the deliveries, not \
             the publishing of the rows."
                .into(),
        ],
        phases,
        ..ScenarioResult::default()
    })
}
