//! The file upload service (XEP-0363). A client asks the service's
//! address for a slot (`<request/>` with a size); the answer holds an
//! HTTPS URL to PUT the file to and the URL to GET it from. Tern clients
//! upload files encrypted, under meaningless names: the server keeps
//! opaque blobs (see `spec/files.md`). The HTTPS side is [`http`].

pub mod http;

use minidom::Element;
use xmpp_parsers::data_forms::{DataForm, DataFormType, Field};
use xmpp_parsers::disco::{DiscoInfoResult, Identity};
use xmpp_parsers::http_upload::{Get, Put, SlotResult};
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};

use crate::modules::disco;
use crate::router::SessionCtx;
use crate::server::Server;
use crate::stanza::{self, errors};

/// The HTTP upload namespace.
pub const NS: &str = "urn:xmpp:http:upload:0";

/// Characters kept from a requested file name in the URL.
const MAX_NAME_CHARS: usize = 64;

/// The upload service's settings, fixed at start-up.
#[derive(Debug, Clone)]
pub struct UploadService {
    /// The service's XMPP address.
    pub domain: String,
    /// `https://host:port` of the HTTPS listener.
    pub base_url: String,
    /// Largest file accepted.
    pub max_file_bytes: u64,
    /// Bytes one user may keep.
    pub quota_bytes_per_user: u64,
}

impl UploadService {
    /// The URL of the file behind `token`.
    fn url(&self, token: &str, name: &str) -> String {
        format!("{}/upload/{token}/{name}", self.base_url)
    }
}

/// Handles an IQ to the service's address: disco#info and slot requests.
pub async fn iq_from_client(
    server: &Server,
    session: &SessionCtx,
    iq: &Element,
) -> Option<Element> {
    let payload = stanza::iq_payload(iq)?;
    let service = &server.upload;
    match iq.attr("type") {
        Some("get") if payload.is("query", disco::NS_INFO) => {
            Some(stanza::iq_result(iq, Some(service_info(service).into())))
        }
        Some("get") if payload.is("request", NS) => match parse_request(payload) {
            Some(request) => Some(slot(server, session, iq, request).await),
            None => errors::bad_request(iq, "a slot request needs a filename and a size in bytes"),
        },
        _ => None,
    }
}

/// What a client asks a slot for.
struct Request {
    filename: String,
    size: u64,
}

/// Reads a `<request/>` (by hand: xmpp-parsers 0.23 requires the
/// optional `content-type`).
fn parse_request(payload: &Element) -> Option<Request> {
    Some(Request {
        filename: payload.attr("filename")?.to_owned(),
        size: payload.attr("size")?.trim().parse().ok()?,
    })
}

async fn slot(server: &Server, session: &SessionCtx, iq: &Element, request: Request) -> Element {
    let service = &server.upload;
    if request.size == 0 || request.size > service.max_file_bytes {
        return file_too_large(iq, service.max_file_bytes);
    }
    match within_quota(server, &session.username, request.size).await {
        Ok(true) => {}
        Ok(false) => {
            return stanza::error_reply(
                iq,
                ErrorType::Wait,
                DefinedCondition::ResourceConstraint,
                &format!(
                    "your uploads would exceed your quota of {} bytes",
                    service.quota_bytes_per_user
                ),
            )
            .unwrap_or_else(|| iq.clone())
        }
        Err(e) => {
            tracing::error!("reading upload totals failed: {e}");
            return errors::internal(iq).unwrap_or_else(|| iq.clone());
        }
    }
    let token = new_token();
    if let Err(e) = server
        .storage
        .upload_slot_create(&token, &session.username, request.size)
        .await
    {
        tracing::error!("recording an upload slot failed: {e}");
        return errors::internal(iq).unwrap_or_else(|| iq.clone());
    }
    let url = service.url(&token, &url_name(&request.filename));
    let slot = SlotResult {
        put: Put {
            url: url.clone(),
            headers: Vec::new(),
        },
        get: Get { url },
    };
    stanza::iq_result(iq, Some(slot.into()))
}

/// How long a slot may be used (and, unused, counts against the quota).
pub const SLOT_VALIDITY: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// The creation stamp before which a slot can no longer be used.
pub fn slots_valid_since() -> String {
    (chrono::Utc::now() - SLOT_VALIDITY).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Whether `size` more bytes fit in the user's quota (slots handed out
/// within [`SLOT_VALIDITY`] and not used count as taken).
async fn within_quota(
    server: &Server,
    username: &str,
    size: u64,
) -> Result<bool, crate::storage::StorageError> {
    let since = slots_valid_since();
    let held = server.storage.upload_bytes_of(username, &since).await?;
    Ok(held.saturating_add(size) <= server.upload.quota_bytes_per_user)
}

/// `not-acceptable` with XEP-0363's `<file-too-large/>`.
fn file_too_large(iq: &Element, max: u64) -> Element {
    let condition = Element::builder("file-too-large", NS)
        .append(
            Element::builder("max-file-size", NS)
                .append(max.to_string())
                .build(),
        )
        .build();
    stanza::with_application_condition(
        stanza::error_reply(
            iq,
            ErrorType::Modify,
            DefinedCondition::NotAcceptable,
            &format!("files may have 1 to {max} bytes"),
        ),
        condition,
    )
    .unwrap_or_else(|| iq.clone())
}

fn service_info(service: &UploadService) -> DiscoInfoResult {
    let form = DataForm::new(
        DataFormType::Result_,
        NS,
        vec![Field::text_single(
            "max-file-size",
            &service.max_file_bytes.to_string(),
        )],
    );
    DiscoInfoResult {
        node: None,
        identities: vec![Identity::new("store", "file", "en", "File upload")],
        features: [NS.to_owned(), disco::NS_INFO.to_owned()].into(),
        extensions: vec![form],
    }
}

/// 128 random bits, hex: the slot's secret, part of its URLs.
fn new_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The requested name, reduced to characters safe in a URL path.
fn url_name(requested: &str) -> String {
    let name: String = requested
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(MAX_NAME_CHARS)
        .collect();
    let name = name.trim_start_matches('.');
    if name.is_empty() {
        "file".to_owned()
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_urls_are_tame() {
        assert_eq!(url_name("photo.jpg"), "photo.jpg");
        assert_eq!(url_name("../../etc/passwd"), "etcpasswd");
        assert_eq!(url_name(".."), "file");
        assert_eq!(url_name("ünï cödé"), "ncd");
        assert_eq!(url_name(&"a".repeat(100)).len(), MAX_NAME_CHARS);
        assert_eq!(new_token().len(), 32);
        let request = |xml: &str| parse_request(&xml.parse::<Element>().unwrap());
        let plain = request("<request xmlns='urn:xmpp:http:upload:0' filename='a' size='3'/>");
        assert_eq!(plain.map(|r| (r.filename, r.size)), Some(("a".into(), 3)));
        assert!(
            request("<request xmlns='urn:xmpp:http:upload:0' filename='a' size='-1'/>").is_none()
        );
        assert!(request("<request xmlns='urn:xmpp:http:upload:0' size='3'/>").is_none());
    }
}
