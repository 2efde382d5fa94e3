//! Every element of `urn:tern:mls:0` as a peer or a server sends it:
//! parsed from any XML (after the depth check every reader makes), and
//! what parses serialises to an element that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use minidom::Element;
use tern_e2ee::wire::{devices, hub, keys, payload};

fn round_trip<T>(element: &Element)
where
    T: TryFrom<Element> + Into<Element> + Clone + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = T::try_from(element.clone()) {
        let again: Element = value.clone().into();
        let reparsed = T::try_from(again.clone())
            .unwrap_or_else(|_| panic!("{} does not parse back", String::from(&again)));
        assert_eq!(reparsed, value);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if tern_xmpp::check_document(data).is_err() {
        return;
    }
    let Ok(element) = text.parse::<Element>() else {
        return;
    };
    round_trip::<payload::MlsPayload>(&element);
    round_trip::<payload::WelcomePayload>(&element);
    round_trip::<devices::Device>(&element);
    round_trip::<devices::DeviceList>(&element);
    round_trip::<keys::KeyPackageData>(&element);
    round_trip::<keys::Upload>(&element);
    round_trip::<keys::LastResort>(&element);
    round_trip::<keys::Count>(&element);
    round_trip::<keys::Claim>(&element);
    round_trip::<keys::KeyPackages>(&element);
    round_trip::<keys::NoKeyPackages>(&element);
    round_trip::<hub::Create>(&element);
    round_trip::<hub::Created>(&element);
    round_trip::<hub::GroupInfoData>(&element);
    round_trip::<hub::Commit>(&element);
    round_trip::<hub::WelcomeData>(&element);
    round_trip::<hub::Accepted>(&element);
    round_trip::<hub::StaleEpoch>(&element);
    round_trip::<hub::Log>(&element);
    round_trip::<hub::Groups>(&element);
    round_trip::<hub::GroupRef>(&element);
});
