//! Wire elements of Tern's namespace [`NS`], one module per concern, as
//! xmpp-parsers does: typed structs with `xso` derives that parse from and
//! serialise to XML, and reject malformed input with an error.
//!
//! The protocol they carry is specified in `spec/mls.md`.

pub mod devices;
pub mod hub;
pub mod keys;
pub mod payload;

/// Tern's MLS namespace.
pub const NS: &str = "urn:tern:mls:0";

/// The PEP node holding a user's device list.
pub const DEVICES_NODE: &str = "urn:tern:mls:0:devices";

#[cfg(test)]
pub(crate) mod test_util {
    use minidom::Element;

    /// Parses `xml` into `T`, serialises it back, and parses again: both
    /// values must be equal (the round-trip property of each element).
    pub fn round_trip<T>(xml: &str) -> T
    where
        T: TryFrom<Element> + Into<Element> + Clone + PartialEq + std::fmt::Debug,
        <T as TryFrom<Element>>::Error: std::fmt::Debug,
    {
        let element: Element = xml.parse().expect("test XML parses");
        let value = T::try_from(element).expect("element converts");
        let again = T::try_from(value.clone().into()).expect("serialised element converts back");
        assert_eq!(value, again);
        value
    }

    /// Asserts that `xml` is refused by `T` with an error, not a panic.
    pub fn rejects<T>(xml: &str)
    where
        T: TryFrom<Element> + std::fmt::Debug,
    {
        let element: Element = xml.parse().expect("test XML parses");
        assert!(T::try_from(element).is_err(), "accepted: {xml}");
    }
}
