//! The Balance Query without I/O: which rows it selects (exact decimal bounds) and the `data`
//! object of a selected row (the chosen fields, in the seed's order).

use std::str::FromStr;

use bigdecimal::BigDecimal;
use hookline_events::BalanceRow;
use hookline_proto::v1::BalanceQuery;
use serde_json::value::RawValue;

/// The fields `data` may carry, in the seed's order (also the default selection).
pub const FIELDS: [&str; 5] = [
    "node",
    "account",
    "balance",
    "productName",
    "transactionCurrency",
];

/// A decimal as the API and the balances topic write it: optional `-`, digits, optional
/// fraction. No exponent, so the text is the value.
pub const DECIMAL_PATTERN: &str = r"^-?[0-9]{1,40}(\.[0-9]{1,40})?$";

/// Whether `text` is an exact decimal as `DECIMAL_PATTERN` (up to 64 digits a part).
fn is_decimal(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = match unsigned.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (unsigned, None),
    };
    let digits = |s: &str| (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    digits(int) && frac.is_none_or(digits)
}

/// Parses an exact decimal (as `DECIMAL_PATTERN`, up to 64 digits a part); `None` if it is
/// not one.
pub fn decimal(text: &str) -> Option<BigDecimal> {
    if !is_decimal(text) {
        return None;
    }
    BigDecimal::from_str(text).ok()
}

/// Appends `s` as a JSON string.
fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else if let Ok(quoted) = serde_json::to_string(s) {
        out.push_str(&quoted);
    }
}

/// A query compiled for matching many rows.
pub struct Selector {
    query: BalanceQuery,
    min: Option<BigDecimal>,
    max: Option<BigDecimal>,
    /// The selected fields with their JSON member prefix (`"name":`, a leading comma but
    /// for the first).
    fields: Vec<(&'static str, String)>,
}

/// What a row becomes.
pub enum Selected {
    /// Not selected by the query.
    No,
    /// Selected: the `data` JSON is in the caller's buffer.
    Data,
    /// Selected by its other fields, but its balance is not a decimal.
    Invalid,
}

impl Selector {
    pub fn new(query: &BalanceQuery) -> Self {
        let fields = if query.fields.is_empty() {
            FIELDS.to_vec()
        } else {
            FIELDS
                .iter()
                .copied()
                .filter(|f| query.fields.iter().any(|q| q == f))
                .collect()
        };
        let fields = fields
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                let comma = if i == 0 { "" } else { "," };
                (f, format!("{comma}\"{f}\":"))
            })
            .collect();
        Self {
            min: decimal(&query.balance_min),
            max: decimal(&query.balance_max),
            query: query.clone(),
            fields,
        }
    }

    fn ranged(&self) -> bool {
        self.min.is_some() || self.max.is_some()
    }

    /// What `row` becomes; when selected, its `data` JSON replaces the content of `data`
    /// (one buffer for a whole run: no allocation a row).
    pub fn select(&self, row: &BalanceRow, data: &mut String) -> Selected {
        let q = &self.query;
        let any = |set: &[String], v: &str| set.is_empty() || set.iter().any(|s| s == v);
        if !(any(&q.nodes, &row.node)
            && any(&q.accounts, &row.account)
            && any(&q.product_names, &row.product_name)
            && any(&q.transaction_currencies, &row.transaction_currency))
        {
            return Selected::No;
        }
        if !is_decimal(&row.balance) {
            return if self.ranged() {
                Selected::No
            } else {
                Selected::Invalid
            };
        }
        // The decimal value is needed only to compare it with the bounds.
        if self.ranged() {
            let Some(balance) = decimal(&row.balance) else {
                return Selected::No;
            };
            if self.min.as_ref().is_some_and(|m| &balance < m)
                || self.max.as_ref().is_some_and(|m| &balance > m)
            {
                return Selected::No;
            }
        }
        match self.data(row, data) {
            true => Selected::Data,
            false => Selected::Invalid,
        }
    }

    /// `data` with the selected fields; `balance` is the row's decimal text as a JSON number
    /// (false if that text is not one).
    fn data(&self, row: &BalanceRow, out: &mut String) -> bool {
        out.clear();
        out.push('{');
        for (f, member) in &self.fields {
            out.push_str(member);
            match *f {
                "node" => push_json_str(out, &row.node),
                "account" => push_json_str(out, &row.account),
                "productName" => push_json_str(out, &row.product_name),
                "transactionCurrency" => push_json_str(out, &row.transaction_currency),
                _ => match serde_json::from_str::<&RawValue>(&row.balance) {
                    Ok(number) => out.push_str(number.get()),
                    Err(_) => return false,
                },
            }
        }
        out.push('}');
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(balance: &str) -> BalanceRow {
        BalanceRow {
            node: "Node1".into(),
            account: "222".into(),
            product_name: String::new(),
            transaction_currency: "GBP".into(),
            balance: balance.into(),
        }
    }

    impl Selector {
        fn select_new(&self, row: &BalanceRow) -> Selected {
            self.select(row, &mut String::new())
        }
    }

    fn data(s: &Selector, r: &BalanceRow) -> String {
        let mut d = String::new();
        match s.select(r, &mut d) {
            Selected::Data => d,
            _ => panic!("not selected"),
        }
    }

    #[test]
    fn default_fields_are_the_seeds_five() {
        let s = Selector::new(&BalanceQuery::default());
        assert_eq!(
            data(&s, &row("1.0")),
            r#"{"node":"Node1","account":"222","balance":1.0,"productName":"","transactionCurrency":"GBP"}"#
        );
    }

    #[test]
    fn chosen_fields_only_in_the_seeds_order() {
        let s = Selector::new(&BalanceQuery {
            fields: vec!["balance".into(), "account".into()],
            ..Default::default()
        });
        assert_eq!(
            data(&s, &row("12345678901234567890.123456789012345678")),
            r#"{"account":"222","balance":12345678901234567890.123456789012345678}"#
        );
    }

    #[test]
    fn ranges_compare_exact_decimals() {
        let s = Selector::new(&BalanceQuery {
            balance_min: "0.1".into(),
            balance_max: "100000000000000000000.00000000000000000001".into(),
            ..Default::default()
        });
        assert!(matches!(s.select_new(&row("0.1")), Selected::Data));
        assert!(matches!(
            s.select_new(&row("0.09999999999999999999")),
            Selected::No
        ));
        assert!(matches!(
            s.select_new(&row("100000000000000000000.00000000000000000001")),
            Selected::Data
        ));
        assert!(matches!(
            s.select_new(&row("100000000000000000000.00000000000000000002")),
            Selected::No
        ));
        assert!(matches!(s.select_new(&row("-5")), Selected::No));
    }

    #[test]
    fn filters_and_bad_balances() {
        let s = Selector::new(&BalanceQuery {
            nodes: vec!["Other".into()],
            ..Default::default()
        });
        assert!(matches!(s.select_new(&row("1")), Selected::No));
        let all = Selector::new(&BalanceQuery::default());
        assert!(matches!(all.select_new(&row("1e5")), Selected::Invalid));
        assert!(decimal("-0.50").is_some() && decimal("1.").is_none() && decimal("").is_none());
        // A decimal with leading zeros is not a JSON number.
        assert!(matches!(all.select_new(&row("007")), Selected::Invalid));
    }

    #[test]
    fn text_needing_escapes_is_escaped() {
        let s = Selector::new(&BalanceQuery {
            fields: vec!["node".into(), "account".into()],
            ..Default::default()
        });
        let mut r = row("1");
        r.node = "a\"b\\c\n".into();
        r.account = "é".into();
        assert_eq!(data(&s, &r), r#"{"node":"a\"b\\c\n","account":"é"}"#);
    }
}
