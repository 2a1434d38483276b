//! Schedules and the runs nobody drives.
//!
//! - [`Clock`]: the time schedules are read against (injectable, so a test can move it).
//! - [`Schedule`]: a cron expression in a time zone; the ticks it has (no I/O).
//! - [`Claims`]: the first claim of each tick in log order, folded by the extracts view.
//! - [`scheduler`]: every active extract's latest due tick is claimed; the process whose
//!   claim comes first in the log drives the run. A tick missed while every replica was down
//!   is the latest due tick at start: it runs once.
//! - [`resumer`]: a queued or running run whose driver has been silent for
//!   [`LEASE_MS`](crate::driver::LEASE_MS) (its process died) is driven again here.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use hookline_events::time_fmt::{now_ms, rfc3339_micros};
use hookline_proto::v1::extract_record::Record;
use hookline_proto::v1::{ExtractConfig, ExtractRecord, ExtractRun, RunStatus};
use hookline_runtime::CancellationToken;

use crate::AppState;
use crate::driver::{LEASE_MS, is_final, run_key};

/// Wall-clock milliseconds as schedules see them.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// A clock that moves only when told (tests).
#[derive(Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(ms: i64) -> Self {
        Self(AtomicI64::new(ms))
    }

    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A parsed schedule.
pub struct Schedule {
    cron: Cron,
    tz: Tz,
}

/// Ticks looked at at most when catching up (a schedule every second, down for a day).
const MAX_STEPS: usize = 100_000;

impl Schedule {
    /// Parses a cron expression (5 fields, or 6 with seconds) and an IANA time zone (empty:
    /// UTC). The error names the field at fault.
    pub fn parse(cron: &str, time_zone: &str) -> Result<Self, (&'static str, String)> {
        let cron = Cron::new(cron)
            .with_seconds_optional()
            .parse()
            .map_err(|e| ("schedule.cron", format!("not a cron expression: {e}")))?;
        let tz = if time_zone.is_empty() {
            Tz::UTC
        } else {
            Tz::from_str(time_zone).map_err(|_| {
                (
                    "schedule.timeZone",
                    format!("unknown time zone {time_zone:?}"),
                )
            })?
        };
        Ok(Self { cron, tz })
    }

    /// The first tick strictly after `ms`.
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let from = self.tz.timestamp_millis_opt(ms).single()?;
        self.cron
            .find_next_occurrence(&from, false)
            .ok()
            .map(|t| t.with_timezone(&Utc).timestamp_millis())
    }

    /// The latest tick in `(after, now]`, if any. Looked for in growing windows ending at
    /// `now`, so a long outage costs few steps: the first window with a tick holds the
    /// latest one.
    pub fn latest_due(&self, after: i64, now: i64) -> Option<i64> {
        const HOUR: i64 = 3_600_000;
        for window in [
            HOUR,
            24 * HOUR,
            32 * 24 * HOUR,
            366 * 24 * HOUR,
            5 * 366 * 24 * HOUR,
        ] {
            let from = after.max(now - window);
            if let Some(t) = self.latest_in(from, now) {
                return Some(t);
            }
            if from == after {
                return None;
            }
        }
        None
    }

    fn latest_in(&self, after: i64, now: i64) -> Option<i64> {
        let mut tick = self.next_after(after).filter(|t| *t <= now)?;
        for _ in 0..MAX_STEPS {
            match self.next_after(tick) {
                Some(t) if t <= now => tick = t,
                _ => break,
            }
        }
        Some(tick)
    }
}

fn schedule_of(c: &ExtractConfig) -> Option<Schedule> {
    if c.schedule.is_empty() {
        return None;
    }
    Schedule::parse(&c.schedule, &c.time_zone).ok()
}

/// When an extract runs next on schedule (`None`: inactive or no schedule).
pub fn next_run_at(c: &ExtractConfig, now: i64) -> Option<i64> {
    if !c.active {
        return None;
    }
    schedule_of(c)?.next_after(now.max(c.schedule_since_ms))
}

pub(crate) fn claim_key(tenant: &str, name: &str, tick_ms: i64) -> String {
    format!("claim/{tenant}/{name}/{tick_ms}")
}

/// The first claim of every tick, in log order (later claims of a tick lose).
#[derive(Clone, Default)]
pub struct Claims(Arc<Mutex<HashMap<String, ExtractRun>>>);

impl Claims {
    /// Folds one claim record (called by the extracts view, in log order).
    pub fn fold(&self, key: String, claim: Option<ExtractRun>) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match claim {
            Some(c) => {
                m.entry(key).or_insert(c);
            }
            None => {
                m.remove(&key);
            }
        }
    }

    fn get(&self, key: &str) -> Option<ExtractRun> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// The winning claims of one extract.
    pub fn of(&self, tenant: &str, name: &str) -> Vec<ExtractRun> {
        let prefix = format!("claim/{tenant}/{name}/");
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// A claimed run that has no run record yet.
    pub fn queued(&self, tenant: &str, name: &str, run_id: &str) -> Option<ExtractRun> {
        self.of(tenant, name)
            .into_iter()
            .find(|c| c.run_id == run_id)
    }

    fn all(&self) -> Vec<ExtractRun> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// Runs this process drives right now.
#[derive(Clone, Default)]
pub struct Driving(Arc<Mutex<HashSet<String>>>);

impl Driving {
    fn insert(&self, id: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned())
    }

    fn remove(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

/// Drives a run on the blocking pool unless this process already does; resolves when the
/// driver stops.
pub(crate) fn spawn_driver(
    state: &AppState,
    run: &ExtractRun,
    stop: &CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    if !state.driving.insert(&run.run_id) {
        return None;
    }
    let (s, stop) = (state.clone(), stop.clone());
    let (tenant, name, id) = (
        run.tenant.clone(),
        run.extract_name.clone(),
        run.run_id.clone(),
    );
    let rt = tokio::runtime::Handle::current();
    Some(tokio::task::spawn_blocking(move || {
        if let Err(e) = crate::driver::drive(&s, &tenant, &name, &id, rt, &stop) {
            tracing::warn!(run_id = %id, error = %e, "extract run paused; it resumes later");
        }
        s.driving.remove(&id);
    }))
}

/// A queued run for `tick_ms` of `config`; its id is the same in every replica.
fn claim_for(config: &ExtractConfig, tick_ms: i64, claimer: &str) -> ExtractRun {
    let id = format!("tick/{}/{}/{tick_ms}", config.tenant, config.name);
    ExtractRun {
        run_id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, id.as_bytes()).to_string(),
        extract_name: config.name.clone(),
        tenant: config.tenant.clone(),
        started_on: rfc3339_micros(time::OffsetDateTime::now_utc()),
        status: RunStatus::Queued as i32,
        heartbeat_ms: now_ms(),
        tick_ms,
        claimer: claimer.to_owned(),
        ..Default::default()
    }
}

/// Claims every due tick; drives the runs this process won.
pub(crate) async fn scheduler(state: AppState, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_millis(200));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        if !state.extracts.is_ready() {
            continue;
        }
        let configs: Vec<ExtractConfig> = state.extracts.read(|t| {
            t.values()
                .filter_map(|r| match &r.record {
                    Some(Record::Config(c)) if c.active && !c.schedule.is_empty() => {
                        Some(c.clone())
                    }
                    _ => None,
                })
                .collect()
        });
        let now = state.clock.now_ms();
        for c in configs {
            let Some(schedule) = schedule_of(&c) else {
                continue;
            };
            let last = state
                .claims
                .of(&c.tenant, &c.name)
                .iter()
                .map(|r| r.tick_ms)
                .max()
                .unwrap_or(0);
            let Some(tick) = schedule.latest_due(last.max(c.schedule_since_ms), now) else {
                continue;
            };
            let key = claim_key(&c.tenant, &c.name, tick);
            let claim = claim_for(&c, tick, &state.process_id);
            let record = ExtractRecord {
                record: Some(Record::Claim(claim)),
            };
            if let Err(e) = crate::records::write(&state, &key, &record).await {
                tracing::warn!(extract = %c.name, error = %e, "could not claim a schedule tick");
                continue;
            }
            if let Some(won) = state.claims.get(&key)
                && won.claimer == state.process_id
            {
                tracing::info!(extract = %c.name, tick_ms = tick, run_id = %won.run_id, "scheduled run claimed");
                spawn_driver(&state, &won, &shutdown);
            }
        }
    }
}

/// Drives again the runs whose driver went silent.
pub(crate) async fn resumer(state: AppState, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if !state.extracts.is_ready() {
            continue;
        }
        let now = now_ms();
        let mut open: HashMap<String, ExtractRun> = HashMap::new();
        let mut recorded = HashSet::new();
        state.extracts.read(|t| {
            for r in t.values() {
                if let Some(Record::Run(run)) = &r.record {
                    recorded.insert(run.run_id.clone());
                    if !is_final(run) {
                        open.insert(run.run_id.clone(), run.clone());
                    }
                }
            }
        });
        for c in state.claims.all() {
            if !recorded.contains(&c.run_id) {
                open.entry(c.run_id.clone()).or_insert(c);
            }
        }
        for run in open.values() {
            if now - run.heartbeat_ms >= LEASE_MS {
                let key = run_key(&run.tenant, &run.extract_name, &run.run_id);
                tracing::info!(run = %key, "resuming an extract run whose driver went silent");
                spawn_driver(&state, run, &shutdown);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn ticks_in_a_time_zone() {
        let s = Schedule::parse("0 2 * * *", "Europe/London").unwrap();
        // Summer time: 02:00 London is 01:00 UTC.
        assert_eq!(
            s.next_after(ms("2026-07-01T00:00:00Z")),
            Some(ms("2026-07-01T01:00:00Z"))
        );
        assert_eq!(
            s.next_after(ms("2026-12-01T03:00:00Z")),
            Some(ms("2026-12-02T02:00:00Z"))
        );
    }

    #[test]
    fn only_the_latest_missed_tick_is_due() {
        let s = Schedule::parse("*/5 * * * *", "").unwrap();
        let after = ms("2026-12-01T10:00:00Z");
        assert_eq!(s.latest_due(after, after + 60_000), None);
        assert_eq!(
            s.latest_due(after, ms("2026-12-01T10:17:00Z")),
            Some(ms("2026-12-01T10:15:00Z"))
        );
        assert_eq!(
            s.latest_due(after, ms("2026-12-01T10:05:00Z")),
            Some(ms("2026-12-01T10:05:00Z"))
        );
        // A year down, a tick every second: still the latest one.
        let every_second = Schedule::parse("* * * * * *", "").unwrap();
        let now = ms("2027-12-01T10:00:00Z") + 500;
        assert_eq!(every_second.latest_due(after, now), Some(now - 500));
        let yearly = Schedule::parse("0 0 1 1 *", "").unwrap();
        assert_eq!(
            yearly.latest_due(after, now),
            Some(ms("2027-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn bad_input_names_the_field() {
        assert_eq!(
            Schedule::parse("nope", "").err().unwrap().0,
            "schedule.cron"
        );
        assert_eq!(
            Schedule::parse("* * * * *", "Mars/Base").err().unwrap().0,
            "schedule.timeZone"
        );
    }

    #[test]
    fn the_first_claim_wins() {
        let claims = Claims::default();
        let c = |who: &str| ExtractRun {
            claimer: who.into(),
            ..Default::default()
        };
        claims.fold("claim/t/x/1".into(), Some(c("a")));
        claims.fold("claim/t/x/1".into(), Some(c("b")));
        assert_eq!(claims.get("claim/t/x/1").unwrap().claimer, "a");
    }
}
