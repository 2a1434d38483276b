//! Timestamps in the forms the seed documents use.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// `2026-04-14T09:54:45.040Z`: milliseconds, UTC (`event_timestamp`).
pub fn rfc3339_millis(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .expect("static format")
}

/// `2026-04-14T09:54:43.674940Z`: microseconds, UTC (`metadata.startedOn`).
pub fn rfc3339_micros(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        ))
        .expect("static format")
}

/// `2023-11-07T05:31:56Z`: seconds, UTC (`last_updated`).
pub fn rfc3339_seconds(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .expect("static format")
}

/// An RFC 3339 time of any offset and precision as `rfc3339_millis` writes it (UTC,
/// milliseconds, `Z`; finer digits are truncated); text that is not one comes back unchanged.
pub fn normalize_rfc3339(text: &str) -> String {
    match parse_rfc3339(text) {
        Some(t) => rfc3339_millis((t.unix_timestamp_nanos().div_euclid(1_000_000)) as i64),
        None => text.to_owned(),
    }
}

/// Parses any RFC 3339 time; `None` when it is not one.
pub fn parse_rfc3339(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_seeds() {
        assert_eq!(
            rfc3339_millis(1_776_160_485_040),
            "2026-04-14T09:54:45.040Z"
        );
        assert_eq!(rfc3339_seconds(1_699_335_116_999), "2023-11-07T05:31:56Z");
        let t = parse_rfc3339("2026-04-14T09:54:43.674940Z").unwrap();
        assert_eq!(rfc3339_micros(t), "2026-04-14T09:54:43.674940Z");
        assert!(parse_rfc3339("yesterday").is_none());
        for (given, sent) in [
            ("2026-04-14T09:54:45.040Z", "2026-04-14T09:54:45.040Z"),
            ("2026-04-14T09:54:45Z", "2026-04-14T09:54:45.000Z"),
            ("2026-04-14T10:54:45.0409+01:00", "2026-04-14T09:54:45.040Z"),
            ("2026-04-14t09:54:45.5z", "2026-04-14T09:54:45.500Z"),
            ("1969-12-31T23:59:59.9999Z", "1969-12-31T23:59:59.999Z"),
        ] {
            assert_eq!(normalize_rfc3339(given), sent, "{given}");
        }
    }
}
