//! A snapshot field kept together with its own encoding.
//!
//! Every write stores the user's whole snapshot, but a lifecycle command changes only a few
//! small fields of it; the profile, email, password hash, tokens and grants stay as they were.
//! Encoding those again on every command was most of the ≈ 10 % of CPU that building the write
//! took on the embedded hot path (docs/performance.md, "What mattered"). postcard
//! encodes a struct as its fields one after another, so the snapshot can be assembled from the
//! small fields encoded now and these fields' bytes encoded once.
//!
//! Correct by construction: the bytes are dropped by any mutable access to the value
//! (`DerefMut`), so they can never describe an older value. A clone starts without them (a
//! reply's copy of a record is never encoded).

use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub struct Encoded<T> {
    value: T,
    bytes: OnceLock<Vec<u8>>,
}

impl<T: Serialize> Encoded<T> {
    pub fn new(value: T) -> Self {
        Encoded {
            value,
            bytes: OnceLock::new(),
        }
    }

    pub fn into_inner(self) -> T {
        self.value
    }

    /// True while the kept encoding is that of the value: no mutable access since it was made.
    pub fn is_kept(&self) -> bool {
        self.bytes.get().is_some()
    }

    /// The value's postcard encoding, computed on first use after a change.
    pub fn bytes(&self) -> &[u8] {
        self.bytes
            .get_or_init(|| crate::stored::encode(&self.value))
    }
}

impl<T> Deref for Encoded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for Encoded<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.bytes.take();
        &mut self.value
    }
}

impl<T: Clone + Serialize> Clone for Encoded<T> {
    fn clone(&self) -> Self {
        Encoded::new(self.value.clone())
    }
}

impl<T: PartialEq> PartialEq for Encoded<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl<T: Eq> Eq for Encoded<T> {}

impl<T: std::fmt::Debug> std::fmt::Debug for Encoded<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: Serialize> Serialize for Encoded<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(serializer)
    }
}

impl<'de, T: Serialize + Deserialize<'de>> Deserialize<'de> for Encoded<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Encoded::new)
    }
}

impl<T: Serialize> From<T> for Encoded<T> {
    fn from(value: T) -> Self {
        Encoded::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_follow_every_change() {
        let mut names = Encoded::new(vec!["ada".to_owned()]);
        assert_eq!(names.bytes(), postcard::to_allocvec(&*names).unwrap());
        names.push("grace".into());
        assert_eq!(names.bytes(), postcard::to_allocvec(&*names).unwrap());
        if let Some(first) = names.first_mut() {
            first.push('!');
        }
        assert_eq!(
            names.bytes(),
            postcard::to_allocvec(&vec!["ada!", "grace"]).unwrap()
        );
    }

    #[test]
    fn it_encodes_and_decodes_as_the_bare_value() {
        let value = Encoded::new((7u32, "x".to_owned()));
        let bytes = postcard::to_allocvec(&value).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&(7u32, "x")).unwrap());
        let back: Encoded<(u32, String)> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, value);
        assert_eq!(back.bytes(), bytes);
    }
}
