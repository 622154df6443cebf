//! One pass over a JSON feed (MISP or STIX) that keeps only what the parsers read: MISP
//! attributes (`type`, `value`, `deleted`) and STIX objects (`type`, `id`, `pattern`,
//! `pattern_type`, `revoked`), strings borrowed from the input where they have no escapes.
//!
//! Why not `serde_json::Value`: a real MISP attribute has some twenty fields, and a
//! 1,000,000-attribute export held as a `Value` tree takes gigabytes; this keeps about fifty
//! bytes an attribute. Why visitors rather than derived structs: a derived struct fails the whole
//! document on one field of an unexpected type, and a feed must lose only that record (a field
//! of the wrong type reads as absent here, and the record becomes a warning).

use std::{borrow::Cow, fmt};

use serde::{
    Deserialize, Deserializer,
    de::{IgnoredAny, MapAccess, SeqAccess, Visitor},
};

/// A MISP attribute.
#[derive(Debug, Default)]
pub struct Attr<'a> {
    pub kind: Option<Cow<'a, str>>,
    pub value: Option<Cow<'a, str>>,
    pub deleted: bool,
}

/// A STIX object.
#[derive(Debug, Default)]
pub struct StixObject<'a> {
    pub kind: Option<Cow<'a, str>>,
    pub id: Option<Cow<'a, str>>,
    pub pattern: Option<Cow<'a, str>>,
    pub pattern_type: Option<Cow<'a, str>>,
    pub revoked: bool,
}

/// What a JSON feed holds.
#[derive(Debug, Default)]
pub struct JsonFeed<'a> {
    /// Some if any MISP structure (`Event`, `response`, an `Attribute` list) was found.
    pub misp: Option<Vec<Attr<'a>>>,
    /// Some if a STIX bundle's `objects` list, or a top-level list of STIX objects, was found.
    pub stix: Option<Vec<StixObject<'a>>>,
}

/// A string, or `None` for any other JSON value (consumed).
struct LenientStr<'a>(Option<Cow<'a, str>>);

/// A bool, or `None` for any other JSON value (consumed).
struct LenientBool(Option<bool>);

/// Consumes any value; for the `visit_*` of values a visitor does not want.
macro_rules! ignore_scalars {
    ($out:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($out)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($out)
        }
    };
}

impl<'de> Deserialize<'de> for LenientStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LenientStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(LenientStr(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(LenientStr(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(LenientStr(Some(Cow::Owned(v))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(LenientStr(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(LenientStr(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(LenientStr(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(LenientStr(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(LenientStr(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_seq(a).map(|_| LenientStr(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_map(a).map(|_| LenientStr(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for LenientBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LenientBool;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(LenientBool(Some(v)))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(LenientBool(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(LenientBool(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(LenientBool(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(LenientBool(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(LenientBool(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_seq(a).map(|_| LenientBool(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_map(a).map(|_| LenientBool(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A list of `T`, or empty for any other value.
struct List<T>(Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list")
            }
            ignore_scalars!(List(Vec::new()));
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = a.next_element()? {
                    out.push(item);
                }
                Ok(List(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_map(a).map(|_| List(Vec::new()))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for Attr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Attr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a MISP attribute")
            }
            ignore_scalars!(Attr::default());
            fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_seq(a).map(|_| Attr::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut attr = Attr::default();
                while let Some(key) = a.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "type" => attr.kind = a.next_value::<LenientStr>()?.0,
                        "value" => attr.value = a.next_value::<LenientStr>()?.0,
                        "deleted" => attr.deleted = a.next_value::<LenientBool>()?.0 == Some(true),
                        _ => {
                            a.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(attr)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for StixObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StixObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a STIX object")
            }
            ignore_scalars!(StixObject::default());
            fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                IgnoredAny.visit_seq(a).map(|_| StixObject::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut o = StixObject::default();
                while let Some(key) = a.next_key::<Cow<'de, str>>()? {
                    match key.as_ref() {
                        "type" => o.kind = a.next_value::<LenientStr>()?.0,
                        "id" => o.id = a.next_value::<LenientStr>()?.0,
                        "pattern" => o.pattern = a.next_value::<LenientStr>()?.0,
                        "pattern_type" => o.pattern_type = a.next_value::<LenientStr>()?.0,
                        "revoked" => o.revoked = a.next_value::<LenientBool>()?.0 == Some(true),
                        _ => {
                            a.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(o)
            }
        }
        d.deserialize_any(V)
    }
}

/// A MISP node: an event, a search response, an object, or a list of them; its attributes
/// (`Attribute`, and those of `Event`, `response` and `Object` below it).
struct MispNode<'a> {
    found: bool,
    attrs: Vec<Attr<'a>>,
}

impl<'de> Deserialize<'de> for MispNode<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MispVisitor)
    }
}

struct MispVisitor;

impl<'de> Visitor<'de> for MispVisitor {
    type Value = MispNode<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a MISP event, response or attribute list")
    }
    ignore_scalars!(MispNode {
        found: false,
        attrs: Vec::new()
    });
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut node = MispNode {
            found: false,
            attrs: Vec::new(),
        };
        while let Some(child) = a.next_element::<MispNode>()? {
            node.absorb(child);
        }
        Ok(node)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut node = MispNode {
            found: false,
            attrs: Vec::new(),
        };
        while let Some(key) = a.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "Attribute" => {
                    node.found = true;
                    node.attrs.extend(a.next_value::<List<Attr>>()?.0);
                }
                "Event" | "response" | "Object" => {
                    let child = a.next_value::<MispNode>()?;
                    node.found |= key == "Event";
                    node.absorb(child);
                }
                _ => {
                    a.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(node)
    }
}

impl<'a> MispNode<'a> {
    fn absorb(&mut self, child: MispNode<'a>) {
        self.found |= child.found;
        self.attrs.extend(child.attrs);
    }
}

/// The top of a JSON feed: a MISP document, a STIX bundle, or a list of either's items.
impl<'de> Deserialize<'de> for JsonFeed<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonFeed<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a MISP or STIX document")
            }
            ignore_scalars!(JsonFeed::default());
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut feed = JsonFeed::default();
                while let Some(item) = a.next_element::<TopItem>()? {
                    feed.absorb(item.0);
                }
                Ok(feed)
            }
            fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                top_map(a)
            }
        }
        d.deserialize_any(V)
    }
}

/// One item of a top-level list: a `{"Event":…}` or a STIX object.
struct TopItem<'a>(JsonFeed<'a>);

impl<'de> Deserialize<'de> for TopItem<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TopItem<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a MISP event or a STIX object")
            }
            ignore_scalars!(TopItem(JsonFeed::default()));
            fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                IgnoredAny
                    .visit_seq(a)
                    .map(|_| TopItem(JsonFeed::default()))
            }
            fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
                let (misp, stix) = item_map(a)?;
                let mut feed = JsonFeed::default();
                if misp.found {
                    feed.misp = Some(misp.attrs);
                } else if stix.kind.is_some() {
                    feed.stix = Some(vec![stix]);
                }
                Ok(TopItem(feed))
            }
        }
        d.deserialize_any(V)
    }
}

/// A map read as both a MISP node and a STIX object (a list item is one or the other).
fn item_map<'de, A: MapAccess<'de>>(
    mut a: A,
) -> Result<(MispNode<'de>, StixObject<'de>), A::Error> {
    let mut misp = MispNode {
        found: false,
        attrs: Vec::new(),
    };
    let mut o = StixObject::default();
    while let Some(key) = a.next_key::<Cow<'de, str>>()? {
        match key.as_ref() {
            "Event" | "response" => {
                let child = a.next_value::<MispNode>()?;
                misp.found = true;
                misp.absorb(child);
            }
            "Attribute" => {
                misp.found = true;
                misp.attrs.extend(a.next_value::<List<Attr>>()?.0);
            }
            "type" => o.kind = a.next_value::<LenientStr>()?.0,
            "id" => o.id = a.next_value::<LenientStr>()?.0,
            "pattern" => o.pattern = a.next_value::<LenientStr>()?.0,
            "pattern_type" => o.pattern_type = a.next_value::<LenientStr>()?.0,
            "revoked" => o.revoked = a.next_value::<LenientBool>()?.0 == Some(true),
            _ => {
                a.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok((misp, o))
}

fn top_map<'de, A: MapAccess<'de>>(mut a: A) -> Result<JsonFeed<'de>, A::Error> {
    let mut feed = JsonFeed::default();
    let mut misp = MispNode {
        found: false,
        attrs: Vec::new(),
    };
    let mut bundle = false;
    while let Some(key) = a.next_key::<Cow<'de, str>>()? {
        match key.as_ref() {
            "objects" => feed.stix = Some(a.next_value::<List<StixObject>>()?.0),
            "type" => bundle |= a.next_value::<LenientStr>()?.0.as_deref() == Some("bundle"),
            "Event" | "response" => {
                let child = a.next_value::<MispNode>()?;
                misp.found = true;
                misp.absorb(child);
            }
            "Attribute" => {
                misp.found = true;
                misp.attrs.extend(a.next_value::<List<Attr>>()?.0);
            }
            _ => {
                a.next_value::<IgnoredAny>()?;
            }
        }
    }
    if bundle && feed.stix.is_none() {
        feed.stix = Some(Vec::new());
    }
    if misp.found {
        feed.misp = Some(misp.attrs);
    }
    Ok(feed)
}

impl<'a> JsonFeed<'a> {
    fn absorb(&mut self, other: JsonFeed<'a>) {
        if let Some(attrs) = other.misp {
            self.misp.get_or_insert_with(Vec::new).extend(attrs);
        }
        if let Some(objects) = other.stix {
            self.stix.get_or_insert_with(Vec::new).extend(objects);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> JsonFeed<'_> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn lenient_fields_and_borrowing() {
        let f = read(
            r#"{"Event":{"Attribute":[{"type":"domain","value":"a.example","x":{"y":[1]}},
                {"type":5,"value":"b\u002eexample","deleted":"no"}, "junk", 7]}}"#,
        );
        let attrs = f.misp.unwrap();
        assert_eq!(attrs.len(), 4);
        assert!(matches!(attrs[0].value, Some(Cow::Borrowed("a.example"))));
        assert_eq!(attrs[1].kind, None);
        assert_eq!(attrs[1].value.as_deref(), Some("b.example"));
        assert!(!attrs[1].deleted);
        assert!(attrs[2].value.is_none() && attrs[3].kind.is_none());
        assert!(f.stix.is_none());
    }

    #[test]
    fn shapes() {
        assert!(read(r#"{"type":"bundle"}"#).stix.is_some());
        assert_eq!(
            read(r#"{"type":"bundle","objects":[{"type":"indicator"}, 3]}"#)
                .stix
                .unwrap()
                .len(),
            2
        );
        assert!(read(r#"{"response":[]}"#).misp.is_some());
        assert!(read(r#"{"x":[]}"#).misp.is_none());
        let f = read(r#"[{"Event":{"Object":[{"Attribute":[{"type":"domain"}]}]}}]"#);
        assert_eq!(f.misp.unwrap().len(), 1);
        let f = read(r#"[{"type":"indicator","pattern":"[x]"}]"#);
        assert_eq!(f.stix.unwrap()[0].pattern.as_deref(), Some("[x]"));
    }
}
