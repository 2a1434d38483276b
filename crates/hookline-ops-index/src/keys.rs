//! Key layouts of the index's tables.
//!
//! A record's position `pk` is `time (8, big-endian) ++ partition (4) ++ offset (8)`: unique
//! per topic, ordered by time, so a table keyed by it is a time index and a range of it a
//! time window. Secondary indexes are `prefix ++ pk` where `prefix` is `len (2) ++ bytes` of
//! the value indexed (a subscription id, an event id, a tenant, a delivery id): a length
//! prefix, so no value is a prefix of another's range.

/// Length of a position key.
pub const PK_LEN: usize = 20;

pub type Pk = [u8; PK_LEN];

pub fn pk(time_ms: i64, partition: i32, offset: i64) -> Pk {
    let mut k = [0u8; PK_LEN];
    k[..8].copy_from_slice(&time_key(time_ms));
    k[8..12].copy_from_slice(&(partition as u32).to_be_bytes());
    k[12..].copy_from_slice(&(offset as u64).to_be_bytes());
    k
}

/// A time as an order-preserving key (times before 1970 sort first, as 0).
pub fn time_key(time_ms: i64) -> [u8; 8] {
    (time_ms.max(0) as u64).to_be_bytes()
}

pub fn pk_time(pk: &[u8]) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&pk[..8]);
    u64::from_be_bytes(b).min(i64::MAX as u64) as i64
}

/// `len ++ value`: the prefix of every entry about `value` in a secondary index.
pub fn prefix(value: &str) -> Vec<u8> {
    let bytes = &value.as_bytes()[..value.len().min(u16::MAX as usize)];
    let mut k = Vec::with_capacity(2 + bytes.len() + PK_LEN);
    k.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    k.extend_from_slice(bytes);
    k
}

pub fn with(prefix: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + tail.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(tail);
    k
}

/// The smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    while let Some(last) = k.pop() {
        if last < u8::MAX {
            k.push(last + 1);
            return k;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_sort_by_time_then_place() {
        assert!(pk(1, 9, 9) < pk(2, 0, 0));
        assert!(pk(5, 1, 7) < pk(5, 1, 8));
        assert!(pk(5, 0, 100) < pk(5, 1, 0));
        assert_eq!(pk_time(&pk(1_700_000_000_000, 3, 4)), 1_700_000_000_000);
        assert_eq!(pk_time(&pk(-5, 0, 0)), 0);
    }

    #[test]
    fn prefixes_do_not_overlap() {
        let a = prefix("ab");
        let b = prefix("abc");
        let end = prefix_end(&a);
        let inside = with(&a, &pk(i64::MAX, i32::MAX, i64::MAX));
        assert!(inside < end && inside > a);
        assert!(!(with(&b, &pk(0, 0, 0)) >= a && with(&b, &pk(0, 0, 0)) < end));
    }
}
