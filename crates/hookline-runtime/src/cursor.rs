//! Page cursors as lowercase hex of the bytes of the last sort key seen: opaque to clients,
//! and every string of the documented pattern is one, so a generated client's cursor is
//! never refused for its form.

/// `bytes` as lowercase hex.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a lowercase hex `text` of at most `max_chars` characters.
pub fn decode(text: &str, max_chars: usize) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > max_chars {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_and_refuses_other_forms() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(super::encode(&bytes), "0001abff");
        assert_eq!(super::decode("0001abff", 8).unwrap(), bytes);
        assert!(super::decode("0001ABFF", 8).is_none());
        assert!(super::decode("001", 8).is_none());
        assert!(super::decode("0001abff00", 8).is_none());
    }
}
