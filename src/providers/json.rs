//! JSON as the broker reads request bodies: every object's keys distinct,
//! since servers disagree on which of two equal keys wins, and nesting
//! bounded by serde_json's recursion limit, so deep input is an error and
//! never a stack overflow.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// JSON with every object's keys distinct: servers disagree on which of two
/// equal keys wins, so a request that has them is refused.
pub fn strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue::deserialize(&mut de)?.0;
    de.end()?;
    Ok(value)
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

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
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
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        for open in ["[", "{\"a\":"] {
            let deep = format!("{}1", open.repeat(50_000));
            assert!(strict(deep.as_bytes()).is_err());
        }
    }
}
