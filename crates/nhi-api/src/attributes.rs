//! `spec.attributes`: a small map of texts held as one sorted vector. A `BTreeMap` allocates a
//! node of over 500 bytes for its first entry; the operator caches every identity (100,000 on
//! one replica), and an identity has a handful of attributes at most (16 by the schema).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Key/value pairs, sorted by key, each key once. Serialized as a JSON object, like a map; a key
/// given twice keeps its last value, as a map would.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Attributes(Vec<(String, String)>);

impl Attributes {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        let at = self.0.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok()?;
        Some(&self.0[at].1)
    }

    /// Sets `key` to `value`, returning the value it replaces.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, value)),
            Err(at) => {
                self.0.insert(at, (key, value));
                None
            }
        }
    }

    /// The pairs in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&String, &String)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// The keys in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }

    /// The same pairs as a `BTreeMap` (what certificate claims are made of).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0.iter().cloned().collect()
    }
}

impl FromIterator<(String, String)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        let mut attributes = Attributes::new();
        for (k, v) in pairs {
            attributes.insert(k, v);
        }
        attributes.0.shrink_to_fit();
        attributes
    }
}

impl From<BTreeMap<String, String>> for Attributes {
    fn from(map: BTreeMap<String, String>) -> Self {
        // Already sorted, each key once.
        Attributes(map.into_iter().collect())
    }
}

impl<const N: usize> From<[(String, String); N]> for Attributes {
    fn from(pairs: [(String, String); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Attributes {
    type Item = (&'a String, &'a String);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, String)>,
        fn(&'a (String, String)) -> (&'a String, &'a String),
    >;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl Serialize for Attributes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor;
        impl<'de> Visitor<'de> for PairsVisitor {
            type Value = Attributes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of strings to strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Attributes, A::Error> {
                let mut pairs = Vec::with_capacity(access.size_hint().unwrap_or(0).min(16));
                while let Some(pair) = access.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(pairs.into_iter().collect())
            }
        }
        deserializer.deserialize_map(PairsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_a_json_object_in_key_order() {
        let a: Attributes =
            serde_json::from_str(r#"{"zone": "eu", "project": "shop", "level": "high"}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"level":"high","project":"shop","zone":"eu"}"#
        );
        assert_eq!(a.get("project"), Some("shop"));
        assert_eq!(a.get("absent"), None);
        assert_eq!(a.keys().collect::<Vec<_>>(), ["level", "project", "zone"]);
    }

    #[test]
    fn a_key_given_twice_keeps_its_last_value_as_a_map_does() {
        let json = r#"{"project": "first", "project": "second"}"#;
        let a: Attributes = serde_json::from_str(json).unwrap();
        let map: BTreeMap<String, String> = serde_json::from_str(json).unwrap();
        assert_eq!(a.to_map(), map);
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn anything_but_a_map_of_strings_is_refused() {
        for bad in [r#"["project"]"#, r#"{"project": 1}"#, r#""project""#] {
            assert!(serde_json::from_str::<Attributes>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn agrees_with_a_btreemap_whatever_the_order_given() {
        let pairs = [("b", "2"), ("a", "1"), ("c", "3"), ("a", "4")]
            .map(|(k, v)| (k.to_string(), v.to_string()));
        let a: Attributes = pairs.clone().into_iter().collect();
        let map: BTreeMap<String, String> = pairs.into_iter().collect();
        assert_eq!(a.to_map(), map);
        assert_eq!(Attributes::from(map.clone()), a);
        assert_eq!(a.iter().collect::<Vec<_>>(), map.iter().collect::<Vec<_>>());
    }
}
