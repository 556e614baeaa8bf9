//! `PaymentData`: the non-sensitive payment details a session is created with, keyed as the
//! seed writes them (`cardholderName`, `cardholderPostCode`, `"cardholder Address"`,
//! `merchantTxnRef`, `amount`, `CustomerPhoneNumber`, …). Unknown keys are kept as metadata.
//! Anything that looks like a card number is masked before it is stored: card data never
//! arrives this way, and if a caller's CRM sends it anyway it is not kept.

use serde_json::{Map, Value};

use tonegate_card::money::{Currency, Money};
use tonegate_card::redact::redact_card_numbers;

const MAX_KEYS: usize = 64;
const MAX_KEY_LEN: usize = 64;
const MAX_VALUE_LEN: usize = 1024;

/// Why payment data was refused.
#[derive(Debug, thiserror::Error)]
pub enum PaymentDataError {
    /// A key the account requires is missing or empty.
    #[error("missing mandatory field {0:?}")]
    MissingField(String),
    /// A field has a bad value.
    #[error("invalid field {0:?}: {1}")]
    InvalidField(String, String),
}

/// Checked `PaymentData`.
#[derive(Debug, Clone, Default)]
pub struct PaymentData {
    map: Map<String, Value>,
}

impl PaymentData {
    /// Checks a JSON value: an object of at most 64 scalar values (strings ≤ 1024 chars).
    pub fn from_value(v: Option<Value>) -> Result<PaymentData, PaymentDataError> {
        let map = match v {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => {
                return Err(PaymentDataError::InvalidField(
                    "PaymentData".into(),
                    "must be a JSON object".into(),
                ))
            }
        };
        if map.len() > MAX_KEYS {
            return Err(PaymentDataError::InvalidField(
                "PaymentData".into(),
                format!("more than {MAX_KEYS} keys"),
            ));
        }
        for (k, v) in &map {
            if k.is_empty() || k.len() > MAX_KEY_LEN {
                return Err(PaymentDataError::InvalidField(
                    "PaymentData".into(),
                    format!("key names must be 1-{MAX_KEY_LEN} characters"),
                ));
            }
            match v {
                Value::String(s) if s.len() > MAX_VALUE_LEN => {
                    return Err(PaymentDataError::InvalidField(
                        redact_card_numbers(k),
                        format!("longer than {MAX_VALUE_LEN} characters"),
                    ))
                }
                Value::Object(_) | Value::Array(_) => {
                    return Err(PaymentDataError::InvalidField(
                        redact_card_numbers(k),
                        "must be a string, number or boolean".into(),
                    ))
                }
                _ => {}
            }
        }
        Ok(PaymentData { map })
    }

    fn text(&self, key: &str) -> Option<String> {
        match self.map.get(key)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// 400 naming the first mandatory key that is missing or empty.
    pub fn check_mandatory(&self, keys: &[String]) -> Result<(), PaymentDataError> {
        match keys.iter().find(|k| self.text(k).is_none()) {
            Some(k) => Err(PaymentDataError::MissingField(k.clone())),
            None => Ok(()),
        }
    }

    /// `amount` in `currency` (`"124.99"` GBP → 12499 minor units, `"1000"` JPY → 1000), if
    /// given. The error names the field and never repeats what was sent.
    pub fn amount(&self, currency: Currency) -> Result<Option<Money>, PaymentDataError> {
        let Some(a) = self.text("amount") else {
            return Ok(None);
        };
        Money::parse(&a, currency)
            .map(Some)
            .map_err(|e| PaymentDataError::InvalidField("amount".into(), e.to_string()))
    }

    /// `currency`, if given; an unknown code is an error naming the field (else the account's
    /// currency would be charged silently).
    pub fn currency(&self) -> Result<Option<Currency>, PaymentDataError> {
        self.text("currency")
            .map(|c| {
                Currency::from_code(&c)
                    .map_err(|e| PaymentDataError::InvalidField("currency".into(), e.to_string()))
            })
            .transpose()
    }

    /// `merchantTxnRef`, with anything card-number-like masked (it is stored and sent on in
    /// webhooks).
    pub fn merchant_txn_ref(&self) -> Option<String> {
        self.text("merchantTxnRef").map(|r| redact_card_numbers(&r))
    }

    /// `CustomerPhoneNumber`, required and E.164 (`+` and 7-15 digits).
    pub fn customer_phone(&self) -> Result<String, PaymentDataError> {
        let p = self
            .text("CustomerPhoneNumber")
            .ok_or_else(|| PaymentDataError::MissingField("CustomerPhoneNumber".into()))?;
        let digits = p.strip_prefix('+').unwrap_or("");
        if !(7..=15).contains(&digits.len())
            || !digits.chars().all(|c| c.is_ascii_digit())
            || digits.starts_with('0')
        {
            return Err(PaymentDataError::InvalidField(
                "CustomerPhoneNumber".into(),
                "must be E.164, like +447700900123".into(),
            ));
        }
        Ok(p)
    }

    /// What is stored: every key, with card-number-like runs masked in key names, strings and
    /// numbers (a number that holds one is stored as the masked string).
    pub fn into_stored(self) -> Map<String, Value> {
        self.map
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => Value::String(redact_card_numbers(&s)),
                    Value::Number(n) => {
                        let text = n.to_string();
                        let masked = redact_card_numbers(&text);
                        if masked == text {
                            Value::Number(n)
                        } else {
                            Value::String(masked)
                        }
                    }
                    other => other,
                };
                (redact_card_numbers(&k), v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pd(v: Value) -> PaymentData {
        PaymentData::from_value(Some(v)).unwrap()
    }

    #[test]
    fn seed_keys_amounts_and_phones() {
        let p = pd(
            json!({"cardholderName": "A Person", "cardholder Address": "1 High St", "amount": "124.99", "merchantTxnRef": "INV-1", "extra": 5}),
        );
        let gbp = Currency::from_code("GBP").unwrap();
        let jpy = Currency::from_code("JPY").unwrap();
        let minor = |p: &PaymentData, c| p.amount(c).map(|m| m.map(Money::minor));
        assert_eq!(minor(&p, gbp).unwrap(), Some(12499));
        assert_eq!(minor(&pd(json!({"amount": 7})), gbp).unwrap(), Some(700));
        assert_eq!(
            minor(&pd(json!({"amount": 1000})), jpy).unwrap(),
            Some(1000)
        );
        assert_eq!(
            minor(&pd(json!({"amount": "7.5"})), gbp).unwrap(),
            Some(750)
        );
        assert_eq!(minor(&pd(json!({})), gbp).unwrap(), None);
        for (bad, c) in [("7.555", gbp), ("-1", gbp), ("0", gbp), ("1000.5", jpy)] {
            match minor(&pd(json!({ "amount": bad })), c) {
                Err(PaymentDataError::InvalidField(f, why)) => {
                    assert_eq!(f, "amount");
                    assert!(!why.contains(bad), "{why} repeats {bad}");
                }
                other => panic!("{bad} {c}: {other:?}"),
            }
        }
        assert_eq!(
            pd(json!({"currency": "jpy"})).currency().unwrap(),
            Some(jpy)
        );
        assert_eq!(pd(json!({})).currency().unwrap(), None);
        assert!(matches!(
            pd(json!({"currency": "dollars"})).currency(),
            Err(PaymentDataError::InvalidField(f, _)) if f == "currency"
        ));
        assert_eq!(p.merchant_txn_ref().as_deref(), Some("INV-1"));
        assert!(p
            .check_mandatory(&["amount".into(), "cardholder Address".into()])
            .is_ok());
        assert!(
            matches!(p.check_mandatory(&["cardholderPostCode".into()]), Err(PaymentDataError::MissingField(k)) if k == "cardholderPostCode")
        );
        assert!(pd(json!({"CustomerPhoneNumber": "+447700900123"}))
            .customer_phone()
            .is_ok());
        for bad in ["07700900123", "+0123456789", "+44 7700 900123", "+12"] {
            assert!(
                pd(json!({ "CustomerPhoneNumber": bad }))
                    .customer_phone()
                    .is_err(),
                "{bad}"
            );
        }
        assert!(matches!(
            pd(json!({})).customer_phone(),
            Err(PaymentDataError::MissingField(_))
        ));
    }

    #[test]
    fn the_amount_error_does_not_echo_the_value() {
        let e = pd(json!({"amount": "4242 4242 4242 4242 12/30"}))
            .amount(Currency::from_code("GBP").unwrap())
            .unwrap_err()
            .to_string();
        assert!(!e.contains("4242") && !e.contains("12/30"), "{e}");
    }

    #[test]
    fn shapes_and_limits() {
        assert!(PaymentData::from_value(Some(json!([1]))).is_err());
        assert!(PaymentData::from_value(Some(json!({"a": {"b": 1}}))).is_err());
        assert!(PaymentData::from_value(Some(json!({"a": "x".repeat(2000)}))).is_err());
        assert!(PaymentData::from_value(None).is_ok());
    }

    #[test]
    fn card_numbers_are_not_stored() {
        let stored = pd(json!({"notes": "card 4242 4242 4242 4242 exp 12/30"})).into_stored();
        assert_eq!(stored["notes"], "card **** **** **** 4242 exp 12/30");
    }

    #[test]
    fn card_numbers_are_masked_in_keys_numbers_strings_and_the_reference() {
        let p = pd(json!({
            "note 4242424242424242": "x",
            "acct": 4242424242424242u64,
            "text": "card 4242 4242 4242 4242",
            "merchantTxnRef": "INV 5555555555554444",
            "count": 12
        }));
        assert_eq!(
            p.merchant_txn_ref().as_deref(),
            Some("INV ************4444")
        );
        let stored = Value::Object(p.into_stored()).to_string();
        for pan in ["4242424242424242", "4242 4242 4242", "5555555555554444"] {
            assert!(!stored.contains(pan), "{stored}");
        }
        assert!(
            stored.contains("\"note ************4242\":\"x\""),
            "{stored}"
        );
        assert!(stored.contains("\"acct\":\"************4242\""), "{stored}");
        assert!(
            stored.contains("\"count\":12"),
            "plain numbers stay numbers: {stored}"
        );
    }
}
