//! One delivery's summary, folded from its job, attempts and dead letters, and the state
//! derived from it.
//!
//! The three topics are read at their own pace (a rebuild may fold every attempt before the
//! job that led to them), so each fact carries its time and the summary's state comes from the
//! latest fact by time, not by the order of arrival: a job (the record's timestamp) makes it
//! `pending`, an attempt (its start) `succeeded`/`retrying`/`delivering`, a dead letter
//! `dead_lettered`. On equal times: job, then attempt, then dead letter.

use hookline_proto::v1::{Attempt, AttemptOutcome, DeadLetter, DeliveryJob};

/// Stored facts, as kept in the `deliveries` table (protobuf, private to the index).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(string, tag = "1")]
    pub tenant: String,
    #[prost(string, tag = "2")]
    pub subscription_id: String,
    #[prost(string, tag = "3")]
    pub event_id: String,
    #[prost(string, tag = "4")]
    pub event_type: String,
    /// When the delivery was first routed (the job's `routed_at_ms`, else the earliest fact).
    #[prost(int64, tag = "5")]
    pub created_ms: i64,
    /// The latest job of the delivery on the `deliveries` topic: read back to replay it (a
    /// replayed job moves it; the order of replays comes from `event_partition`/`event_offset`).
    #[prost(int32, tag = "6")]
    pub job_partition: i32,
    #[prost(int64, tag = "7")]
    pub job_offset: i64,
    #[prost(uint32, tag = "8")]
    pub attempts: u32,
    #[prost(uint32, tag = "9")]
    pub last_status: u32,
    #[prost(string, tag = "10")]
    pub last_error_class: String,
    #[prost(int64, tag = "11")]
    pub last_attempt_ms: i64,
    #[prost(int64, tag = "12")]
    pub next_attempt_at_ms: i64,
    /// The fact the state comes from: its time and kind.
    #[prost(int64, tag = "13")]
    pub state_ms: i64,
    #[prost(enumeration = "Fact", tag = "14")]
    pub state_fact: i32,
    /// The outcome of the attempt, when the state comes from one.
    #[prost(int32, tag = "15")]
    pub state_outcome: i32,
    #[prost(string, tag = "16")]
    pub replay_id: String,
    #[prost(int64, tag = "17")]
    pub dead_lettered_ms: i64,
    /// Whether a job position is known (`job_offset` may be 0).
    #[prost(bool, tag = "18")]
    pub has_job: bool,
    /// The position of its event on the events topic (`DeliveryJob.source_partition` and
    /// `source_offset`, the same in every copy of the job: routed, retried, dead-lettered,
    /// replayed; the earliest if the event was published twice). Replays follow it: per key it
    /// is the order of the log.
    #[prost(int32, tag = "19")]
    pub event_partition: i32,
    #[prost(int64, tag = "20")]
    pub event_offset: i64,
    /// Whether the event's position is known (a job or a dead letter with one was folded).
    #[prost(bool, tag = "21")]
    pub has_event_position: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Fact {
    None = 0,
    Job = 1,
    Attempt = 2,
    DeadLetter = 3,
}

/// A delivery's state as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Pending,
    Delivering,
    Retrying,
    Parked,
    Succeeded,
    DeadLettered,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Delivering => "delivering",
            State::Retrying => "retrying",
            State::Parked => "parked",
            State::Succeeded => "succeeded",
            State::DeadLettered => "dead_lettered",
        }
    }
}

impl Summary {
    fn take_identity(&mut self, tenant: &str, sub: &str, event_id: &str, event_type: &str) {
        if self.tenant.is_empty() {
            self.tenant = tenant.to_owned();
        }
        if self.subscription_id.is_empty() {
            self.subscription_id = sub.to_owned();
        }
        if self.event_id.is_empty() {
            self.event_id = event_id.to_owned();
        }
        if self.event_type.is_empty() {
            self.event_type = event_type.to_owned();
        }
    }

    fn created(&mut self, at_ms: i64) {
        if self.created_ms == 0 || at_ms < self.created_ms {
            self.created_ms = at_ms;
        }
    }

    /// The event's position from a copy of its job, the earliest seen: whatever the order in
    /// which the topics are folded, the same position wins.
    fn event_at(&mut self, job: &DeliveryJob) {
        if job.source_topic.is_empty() {
            return;
        }
        let at = (job.source_partition, job.source_offset);
        if !self.has_event_position || at < (self.event_partition, self.event_offset) {
            (self.event_partition, self.event_offset) = at;
            self.has_event_position = true;
        }
    }

    /// Where the delivery stands in the order of the log: its event's partition and offset;
    /// one whose event position is unknown sorts after every known one, by creation time.
    pub fn log_position(&self) -> [u8; 12] {
        let (partition, offset) = if self.has_event_position {
            (self.event_partition.max(0) as u32, self.event_offset.max(0))
        } else {
            (u32::MAX, self.created_ms.max(0))
        };
        let mut k = [0u8; 12];
        k[..4].copy_from_slice(&partition.to_be_bytes());
        k[4..].copy_from_slice(&(offset as u64).to_be_bytes());
        k
    }

    /// Whether a fact at (`at_ms`, `fact`) is the latest so far.
    fn newer(&self, at_ms: i64, fact: Fact) -> bool {
        (at_ms, fact as i32) >= (self.state_ms, self.state_fact)
    }

    /// A job record at `partition`/`offset`, appended at `record_ms`.
    pub fn job(&mut self, job: &DeliveryJob, partition: i32, offset: i64, record_ms: i64) {
        let event = job.event.as_ref();
        self.take_identity(
            &job.tenant,
            &job.subscription_id,
            event.map_or("", |e| e.id.as_str()),
            event.map_or("", |e| e.r#type.as_str()),
        );
        self.event_at(job);
        self.created(if job.routed_at_ms > 0 {
            job.routed_at_ms
        } else {
            record_ms
        });
        if self.newer(record_ms, Fact::Job) {
            self.state_ms = record_ms;
            self.state_fact = Fact::Job as i32;
            self.job_partition = partition;
            self.job_offset = offset;
            self.has_job = true;
            self.replay_id.clone_from(&job.replay_id);
        }
    }

    pub fn attempt(&mut self, a: &Attempt) {
        self.take_identity(&a.tenant, &a.subscription_id, &a.event_id, &a.event_type);
        self.created(a.started_at_ms);
        self.attempts += 1;
        if a.started_at_ms >= self.last_attempt_ms {
            self.last_attempt_ms = a.started_at_ms;
            self.last_status = a.status_code;
            self.last_error_class.clone_from(&a.error_class);
            self.next_attempt_at_ms = a.next_attempt_at_ms;
        }
        if self.newer(a.started_at_ms, Fact::Attempt) {
            self.state_ms = a.started_at_ms;
            self.state_fact = Fact::Attempt as i32;
            self.state_outcome = a.outcome;
        }
    }

    pub fn dead_letter(&mut self, d: &DeadLetter) {
        if let Some(job) = &d.job {
            let event = job.event.as_ref();
            self.take_identity(
                &job.tenant,
                &job.subscription_id,
                event.map_or("", |e| e.id.as_str()),
                event.map_or("", |e| e.r#type.as_str()),
            );
            self.event_at(job);
            if job.routed_at_ms > 0 {
                self.created(job.routed_at_ms);
            }
        }
        self.created(d.dead_lettered_at_ms);
        self.dead_lettered_ms = self.dead_lettered_ms.max(d.dead_lettered_at_ms);
        if self.newer(d.dead_lettered_at_ms, Fact::DeadLetter) {
            self.state_ms = d.dead_lettered_at_ms;
            self.state_fact = Fact::DeadLetter as i32;
        }
    }

    /// The state at `now_ms`. A retry further away than `in_memory_max_ms` after the attempt
    /// is parked in the retry lane by the worker; one whose time has come is `delivering`
    /// until its attempt is recorded, as is a final failure until its dead letter is.
    pub fn state(&self, now_ms: i64, in_memory_max_ms: i64) -> State {
        match Fact::try_from(self.state_fact).unwrap_or(Fact::None) {
            Fact::None | Fact::Job => State::Pending,
            Fact::DeadLetter => State::DeadLettered,
            Fact::Attempt => match AttemptOutcome::try_from(self.state_outcome) {
                Ok(AttemptOutcome::Succeeded) => State::Succeeded,
                Ok(AttemptOutcome::Retryable) if self.next_attempt_at_ms > now_ms => {
                    if self.next_attempt_at_ms - self.last_attempt_ms > in_memory_max_ms {
                        State::Parked
                    } else {
                        State::Retrying
                    }
                }
                _ => State::Delivering,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use hookline_proto::v1::Event;

    use super::*;

    fn job(replay: &str) -> DeliveryJob {
        DeliveryJob {
            delivery_id: "d".into(),
            subscription_id: "s".into(),
            tenant: "t".into(),
            event: Some(Event {
                id: "e".into(),
                r#type: "A.B".into(),
                ..Default::default()
            }),
            routed_at_ms: 100,
            replay_id: replay.into(),
            ..Default::default()
        }
    }

    fn attempt(at: i64, outcome: AttemptOutcome, next: i64) -> Attempt {
        Attempt {
            delivery_id: "d".into(),
            subscription_id: "s".into(),
            tenant: "t".into(),
            started_at_ms: at,
            outcome: outcome as i32,
            status_code: 503,
            next_attempt_at_ms: next,
            ..Default::default()
        }
    }

    #[test]
    fn state_follows_the_latest_fact_whatever_the_order_of_arrival() {
        let mut s = Summary::default();
        // Attempts folded before the job (a rebuild reads the topics at their own pace).
        s.attempt(&attempt(200, AttemptOutcome::Retryable, 300));
        s.job(&job(""), 0, 7, 100);
        assert_eq!(s.state(250, 10_000), State::Retrying);
        assert_eq!(s.state(301, 10_000), State::Delivering);
        assert_eq!(s.state(250, 50), State::Parked);
        s.dead_letter(&DeadLetter {
            dead_lettered_at_ms: 400,
            ..Default::default()
        });
        assert_eq!(s.state(500, 10_000), State::DeadLettered);
        // A replayed job later than the dead letter: pending again, then succeeded.
        s.job(&job("r1"), 1, 9, 500);
        assert_eq!(s.state(500, 10_000), State::Pending);
        assert_eq!(
            (s.job_partition, s.job_offset, s.replay_id.as_str()),
            (1, 9, "r1")
        );
        s.attempt(&attempt(600, AttemptOutcome::Succeeded, 0));
        assert_eq!(s.state(700, 10_000), State::Succeeded);
        assert_eq!(s.attempts, 2);
        assert_eq!(s.created_ms, 100);
        assert_eq!((s.event_id.as_str(), s.event_type.as_str()), ("e", "A.B"));
    }
}

/// What the index keeps of a quarantined record: why, where from, and a preview; the record
/// itself stays on the quarantine topic (republishing reads it back).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Quarantined {
    #[prost(int32, tag = "1")]
    pub partition: i32,
    #[prost(int64, tag = "2")]
    pub offset: i64,
    #[prost(int64, tag = "3")]
    pub quarantined_ms: i64,
    #[prost(string, tag = "4")]
    pub reason: String,
    #[prost(string, tag = "5")]
    pub source_topic: String,
    #[prost(int32, tag = "6")]
    pub source_partition: i32,
    #[prost(int64, tag = "7")]
    pub source_offset: i64,
    #[prost(string, tag = "8")]
    pub key: String,
    /// The value's first bytes (lossy UTF-8).
    #[prost(string, tag = "9")]
    pub value_preview: String,
    #[prost(uint64, tag = "10")]
    pub value_len: u64,
    #[prost(string, tag = "11")]
    pub content_type: String,
}
