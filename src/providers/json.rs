//! JSON as the broker reads request bodies: every object's keys distinct,
//! since servers disagree on which of two equal keys wins, and nesting
//! bounded by serde_json's recursion limit, so deep input is an error and
//! never a stack overflow.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The largest integer every server reads exactly: JavaScript's numbers are
/// doubles, so past 2^53 one server's id is another's neighbour.
pub const EXACT_INTEGER: u64 = 1 << 53;

/// JSON with every object's keys distinct (servers disagree on which of two
/// equal keys wins) and every number within ±2^53 (servers disagree on what
/// a larger one is): a request that breaks either is refused.
pub fn strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue::deserialize(&mut de)?.0;
    de.end()?;
    Ok(value)
}

fn past_exact<E: de::Error>() -> E {
    E::custom("a number is past 2^53, where servers read it differently; send it as a string")
}

struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        match v.unsigned_abs() <= EXACT_INTEGER {
            true => Ok(Value::from(v)),
            false => Err(past_exact()),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        match v <= EXACT_INTEGER {
            true => Ok(Value::from(v)),
            false => Err(past_exact()),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // serde_json reads an integer past u64 as a double, so a double
        // this large may be an integer no server reads the same.
        match v.abs() <= EXACT_INTEGER as f64 {
            true => Ok(Value::from(v)),
            false => Err(past_exact()),
        }
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("the key `{key}` appears twice")));
            }
            let StrictValue(v) = map.next_value()?;
            object.insert(key, v);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_at_any_depth_are_refused() {
        assert!(strict(br#"{"a": 1, "a": 2}"#).is_err());
        assert!(strict(br#"{"a": {"b": [{"c": 1, "c": 1}]}}"#).is_err());
        assert_eq!(strict(br#"{"a": {"b": 1}, "b": 2}"#).unwrap()["b"], 2);
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::fuzzing::config())]

        /// Arbitrary bytes, and JSON-shaped text: parsed or refused, and
        /// what parses is what serde_json reads, when it has no duplicate key.
        #[test]
        fn fuzz_strict_json_agrees_with_serde_json_or_refuses(
            bytes in prop::collection::vec(any::<u8>(), 0..256),
            text in "[\\[\\]{}:,\" a-c0-9.e-]{0,64}",
        ) {
            let _ = strict(&bytes);
            if let Ok(ours) = strict(text.as_bytes()) {
                let theirs: Value = serde_json::from_slice(text.as_bytes()).unwrap();
                prop_assert_eq!(ours, theirs);
            }
        }
    }

    #[test]
    fn numbers_past_two_to_the_53_are_refused() {
        assert!(strict(b"[9007199254740992, -9007199254740992, 1.5, 1e15]").is_ok());
        for past in [
            "9007199254740993",
            "-9007199254740993",
            "18446744073709551616",
            "1e16",
            "123456789012345678901234567890",
        ] {
            assert!(strict(past.as_bytes()).is_err(), "{past}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        for open in ["[", "{\"a\":"] {
            let deep = format!("{}1", open.repeat(50_000));
            assert!(strict(deep.as_bytes()).is_err());
        }
    }
}
