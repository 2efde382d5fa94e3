//! The key directory (spec/mls.md §2.2): devices upload MLS key packages
//! to their own server; anyone may claim one package per device of a
//! user, which the server hands out once.

use jid::BareJid;
use minidom::Element;
use tern_e2ee::verify::verify_key_package;
use tern_e2ee::wire::keys::{Claim, Count, KeyPackageData, KeyPackages, NoKeyPackages, Upload};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::router::Destination;
use crate::server::Server;
use crate::stanza::{self, errors};
use crate::storage::KeyUpload;

/// Tern's MLS namespace.
pub const NS: &str = tern_e2ee::wire::NS;

/// Disco features of this module (on accounts).
pub const FEATURES: &[&str] = &[NS];

/// Serves upload and count (a local user, to their own server or bare
/// JID) and claim (anyone, to a local user's bare JID).
pub async fn handle_iq(
    server: &Server,
    requester: &BareJid,
    iq: &Element,
    destination: &Destination,
) -> Option<Element> {
    let payload = stanza::iq_payload(iq)?;
    tracing::debug!(name = payload.name(), "key directory request");
    let own = server
        .local_user(requester)
        .filter(|user| match destination {
            Destination::Server => true,
            Destination::Account(owner) => owner == user,
            _ => false,
        });
    match (iq.attr("type"), payload.name(), own) {
        (Some("set"), "upload", Some(user)) => {
            upload(server, requester, user, iq, payload.clone()).await
        }
        (Some("get"), "count", Some(user)) => count(server, user, iq, payload.clone()).await,
        (Some("set"), "claim", _) => claim_at(server, requester, iq, destination).await,
        (_, "upload" | "count", _) => errors::forbidden(iq, "only for your own devices"),
        _ => None,
    }
}

/// A claim must be addressed to a user's bare JID.
async fn claim_at(
    server: &Server,
    requester: &BareJid,
    iq: &Element,
    destination: &Destination,
) -> Option<Element> {
    let payload = stanza::iq_payload(iq)?.clone();
    match destination {
        Destination::Account(user) => {
            // Beyond `keys.claims_per_hour`, a claimer gets last-resort
            // packages only: it cannot drain a user's single-use stock.
            let single_use = server.key_claims.take(requester.as_str(), user);
            claim(server, iq, payload, user, single_use).await
        }
        _ => errors::bad_request(iq, "claim key packages at a user's bare JID"),
    }
}

/// Counts, per claimer and user, the claims of single-use packages in
/// the last hour.
#[derive(Debug)]
pub struct ClaimLimiter {
    per_hour: u32,
    claims: std::sync::Mutex<
        std::collections::HashMap<(String, String), std::collections::VecDeque<std::time::Instant>>,
    >,
}

impl ClaimLimiter {
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);

    /// A limiter allowing `per_hour` single-use claims per claimer and user.
    pub fn new(per_hour: u32) -> Self {
        Self {
            per_hour,
            claims: Default::default(),
        }
    }

    /// Whether `claimer` may take single-use packages of `user` now
    /// (counted when so).
    pub fn take(&self, claimer: &str, user: &str) -> bool {
        let now = std::time::Instant::now();
        let fresh = |t: &std::time::Instant| now.duration_since(*t) < Self::WINDOW;
        let mut claims = self
            .claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if claims.len() > 10_000 {
            claims.retain(|_, times| times.back().is_some_and(fresh));
        }
        let times = claims
            .entry((claimer.to_owned(), user.to_owned()))
            .or_default();
        while times.front().is_some_and(|t| !fresh(t)) {
            times.pop_front();
        }
        if times.len() >= self.per_hour as usize {
            return false;
        }
        times.push_back(now);
        true
    }
}

async fn upload(
    server: &Server,
    requester: &BareJid,
    user: &str,
    iq: &Element,
    payload: Element,
) -> Option<Element> {
    let upload = match Upload::try_from(payload) {
        Ok(upload) => upload,
        Err(e) => return errors::bad_request(iq, &format!("malformed upload: {e}")),
    };
    let single_use: Vec<&[u8]> = upload.key_packages.iter().map(|p| &p.data[..]).collect();
    let last_resort = upload.last_resort.as_ref().map(|p| &p.data[..]);
    for (data, wanted_last_resort) in single_use
        .iter()
        .map(|d| (*d, false))
        .chain(last_resort.map(|d| (d, true)))
    {
        if let Err(text) = check_package(requester, &upload.device, data, wanted_last_resort) {
            return stanza::error_reply(
                iq,
                ErrorType::Modify,
                DefinedCondition::NotAcceptable,
                &text,
            );
        }
    }
    let packages: Vec<Vec<u8>> = single_use.iter().map(|d| d.to_vec()).collect();
    let stored = server
        .storage
        .store_key_packages(
            user,
            &upload.device,
            &packages,
            last_resort,
            server.config.keys.max_per_device,
            server.config.keys.max_devices,
        )
        .await;
    match stored {
        Ok(KeyUpload::Stored { remaining }) => {
            Some(count_reply(server, iq, upload.device, remaining))
        }
        Ok(KeyUpload::TooMany { held }) => stanza::error_reply(
            iq,
            ErrorType::Wait,
            DefinedCondition::ResourceConstraint,
            &format!(
                "this device holds {held} key packages; at most {} are kept",
                server.config.keys.max_per_device
            ),
        ),
        Ok(KeyUpload::TooManyDevices) => stanza::error_reply(
            iq,
            ErrorType::Wait,
            DefinedCondition::ResourceConstraint,
            &format!(
                "this account has {} devices with key packages, as many as are kept",
                server.config.keys.max_devices
            ),
        ),
        Err(e) => {
            tracing::error!("storing key packages failed: {e}");
            errors::internal(iq)
        }
    }
}

/// A package must verify and belong to the uploading user's named device.
fn check_package(
    requester: &BareJid,
    device: &str,
    data: &[u8],
    last_resort: bool,
) -> Result<(), String> {
    let verified = verify_key_package(data).map_err(|e| e.to_string())?;
    if verified.device.jid != *requester || verified.device.device.as_str() != device {
        return Err(format!(
            "the key package belongs to {}, not to {requester}#{device}",
            verified.device,
        ));
    }
    if verified.last_resort() != last_resort {
        return Err(if last_resort {
            "<last-resort/> needs a key package marked last-resort".to_owned()
        } else {
            "a last-resort key package goes in <last-resort/>".to_owned()
        });
    }
    Ok(())
}

async fn count(server: &Server, user: &str, iq: &Element, payload: Element) -> Option<Element> {
    let request = match Count::try_from(payload) {
        Ok(count) => count,
        Err(e) => return errors::bad_request(iq, &format!("malformed count: {e}")),
    };
    match server
        .storage
        .count_key_packages(user, &request.device)
        .await
    {
        Ok(remaining) => Some(count_reply(server, iq, request.device, remaining)),
        Err(e) => {
            tracing::error!("counting key packages failed: {e}");
            errors::internal(iq)
        }
    }
}

fn count_reply(server: &Server, iq: &Element, device: String, remaining: u32) -> Element {
    let count = Count {
        device,
        remaining: Some(remaining),
        low: Some(remaining < server.config.keys.low_watermark),
    };
    stanza::iq_result(iq, Some(count.into()))
}

async fn claim(
    server: &Server,
    iq: &Element,
    payload: Element,
    user: &str,
    single_use: bool,
) -> Option<Element> {
    if let Err(e) = Claim::try_from(payload) {
        return errors::bad_request(iq, &format!("malformed claim: {e}"));
    }
    let claimed = match server.storage.claim_key_packages(user, single_use).await {
        Ok(claimed) => claimed,
        Err(e) => {
            tracing::error!("claiming key packages failed: {e}");
            return errors::internal(iq);
        }
    };
    if claimed.is_empty() {
        if !matches!(server.storage.account_exists(user).await, Ok(true)) {
            return errors::service_unavailable(iq, "no such user");
        }
        return stanza::with_application_condition(
            errors::item_not_found(iq, "this user has no device with key packages"),
            NoKeyPackages {},
        );
    }
    let answer = KeyPackages {
        key_packages: claimed
            .into_iter()
            .map(|p| KeyPackageData {
                device: Some(p.device),
                last_resort: p.last_resort.then_some(true),
                data: p.package,
            })
            .collect(),
    };
    Some(stanza::iq_result(iq, Some(answer.into())))
}
