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

/// Parses an exact decimal (as `DECIMAL_PATTERN`, up to 64 digits a part); `None` if it is
/// not one.
pub fn decimal(text: &str) -> Option<BigDecimal> {
    let (int, frac) = match text.strip_prefix('-').unwrap_or(text).split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text.strip_prefix('-').unwrap_or(text), None),
    };
    let digits = |s: &str| (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return None;
    }
    BigDecimal::from_str(text).ok()
}

/// A query compiled for matching many rows.
pub struct Selector {
    query: BalanceQuery,
    min: Option<BigDecimal>,
    max: Option<BigDecimal>,
    fields: Vec<&'static str>,
}

/// What a row becomes.
pub enum Selected {
    /// Not selected by the query.
    No,
    /// Selected: the `data` JSON.
    Data(String),
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

    pub fn select(&self, row: &BalanceRow) -> Selected {
        let q = &self.query;
        let any = |set: &[String], v: &str| set.is_empty() || set.iter().any(|s| s == v);
        if !(any(&q.nodes, &row.node)
            && any(&q.accounts, &row.account)
            && any(&q.product_names, &row.product_name)
            && any(&q.transaction_currencies, &row.transaction_currency))
        {
            return Selected::No;
        }
        let Some(balance) = decimal(&row.balance) else {
            return if self.ranged() {
                Selected::No
            } else {
                Selected::Invalid
            };
        };
        if self.min.as_ref().is_some_and(|m| &balance < m)
            || self.max.as_ref().is_some_and(|m| &balance > m)
        {
            return Selected::No;
        }
        match self.data(row) {
            Some(d) => Selected::Data(d),
            None => Selected::Invalid,
        }
    }

    /// `data` with the selected fields; `balance` is the row's decimal text as a JSON number.
    fn data(&self, row: &BalanceRow) -> Option<String> {
        let mut out = String::with_capacity(128);
        out.push('{');
        for (i, f) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(f).ok()?);
            out.push(':');
            match *f {
                "node" => out.push_str(&serde_json::to_string(&row.node).ok()?),
                "account" => out.push_str(&serde_json::to_string(&row.account).ok()?),
                "productName" => out.push_str(&serde_json::to_string(&row.product_name).ok()?),
                "transactionCurrency" => {
                    out.push_str(&serde_json::to_string(&row.transaction_currency).ok()?)
                }
                _ => out.push_str(RawValue::from_string(row.balance.clone()).ok()?.get()),
            }
        }
        out.push('}');
        Some(out)
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

    fn data(s: &Selector, r: &BalanceRow) -> String {
        match s.select(r) {
            Selected::Data(d) => d,
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
        assert!(matches!(s.select(&row("0.1")), Selected::Data(_)));
        assert!(matches!(
            s.select(&row("0.09999999999999999999")),
            Selected::No
        ));
        assert!(matches!(
            s.select(&row("100000000000000000000.00000000000000000001")),
            Selected::Data(_)
        ));
        assert!(matches!(
            s.select(&row("100000000000000000000.00000000000000000002")),
            Selected::No
        ));
        assert!(matches!(s.select(&row("-5")), Selected::No));
    }

    #[test]
    fn filters_and_bad_balances() {
        let s = Selector::new(&BalanceQuery {
            nodes: vec!["Other".into()],
            ..Default::default()
        });
        assert!(matches!(s.select(&row("1")), Selected::No));
        let all = Selector::new(&BalanceQuery::default());
        assert!(matches!(all.select(&row("1e5")), Selected::Invalid));
        assert!(decimal("-0.50").is_some() && decimal("1.").is_none() && decimal("").is_none());
    }
}
