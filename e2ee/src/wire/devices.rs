//! The device list: a PEP item on the user's bare JID (node
//! [`DEVICES_NODE`](super::DEVICES_NODE), access model `open`) naming every
//! device of the user with its MLS signature key, so that contacts on any
//! server see devices appear and disappear.

use xso::{text::Base64, AsXml, FromXml};

use super::NS;

/// One device of a user.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS, name = "device")]
pub struct Device {
    /// The device id (random, unique per user), as in the MLS credential.
    #[xml(attribute)]
    pub id: String,
    /// The device's ed25519 signature public key (32 bytes).
    #[xml(attribute(codec = Base64))]
    pub key: Vec<u8>,
    /// A human label ("phone", "laptop").
    #[xml(attribute(default))]
    pub label: Option<String>,
}

/// A user's device list.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq, Default)]
#[xml(namespace = NS, name = "devices")]
pub struct DeviceList {
    /// The devices.
    #[xml(child(n = ..))]
    pub devices: Vec<Device>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::{rejects, round_trip};

    #[test]
    fn device_list_round_trips() {
        let list: DeviceList = round_trip(
            "<devices xmlns='urn:tern:mls:0'>\
             <device id='d1' key='AAEC' label='phone'/><device id='d2' key='AwQF'/></devices>",
        );
        assert_eq!(list.devices.len(), 2);
        assert_eq!(list.devices[0].key, vec![0, 1, 2]);
        assert_eq!(list.devices[1].label, None);
        let empty: DeviceList = round_trip("<devices xmlns='urn:tern:mls:0'/>");
        assert!(empty.devices.is_empty());
    }

    #[test]
    fn device_list_rejects_malformed() {
        rejects::<DeviceList>("<devices xmlns='urn:tern:mls:0'><device key='AAEC'/></devices>");
        rejects::<DeviceList>(
            "<devices xmlns='urn:tern:mls:0'><device id='x' key='%%%'/></devices>",
        );
        // Unknown extensions are ignored, for forward compatibility.
        let list: DeviceList = round_trip(
            "<devices xmlns='urn:tern:mls:0' v='2'><x xmlns='urn:example:ext'/></devices>",
        );
        assert!(list.devices.is_empty());
    }
}
