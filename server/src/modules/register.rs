//! In-Band Registration (XEP-0077). Before authentication (when the server
//! allows it) it creates accounts, through the c2s negotiation; after
//! authentication it changes the password or cancels the account.

use minidom::Element;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType};
use xmpp_parsers::stream_error::DefinedCondition as StreamCondition;

use crate::router::{Destination, SessionCtx};
use crate::server::Server;
use crate::stanza::{self, errors};

/// The registration namespace.
pub const NS: &str = "jabber:iq:register";

/// Disco features of this module.
pub const FEATURES: &[&str] = &[NS];

/// A submitted registration form.
#[derive(Debug, PartialEq, Eq)]
pub struct Submission {
    /// The user name asked for.
    pub username: String,
    /// The password.
    pub password: String,
    /// `<remove/>`: cancel the registration.
    pub remove: bool,
}

/// Whether an IQ carries a registration query.
pub fn is_register_iq(iq: &Element) -> bool {
    stanza::iq_payload(iq).is_some_and(|p| p.is("query", NS))
}

/// The empty form a client fills in.
pub fn form() -> Element {
    Element::builder("query", NS)
        .append(
            Element::builder("instructions", NS)
                .append("Choose a user name and password.")
                .build(),
        )
        .append(Element::bare("username", NS))
        .append(Element::bare("password", NS))
        .build()
}

/// Reads a registration `set`.
pub fn parse_submission(iq: &Element) -> Result<Submission, &'static str> {
    let query = stanza::iq_payload(iq)
        .filter(|p| p.is("query", NS))
        .ok_or("missing query")?;
    let field = |name| query.get_child(name, NS).map(|e| e.text());
    let remove = query.get_child("remove", NS).is_some();
    let username = field("username").unwrap_or_default();
    let password = field("password").unwrap_or_default();
    if !remove && (username.is_empty() || password.is_empty()) {
        return Err("a user name and a password are required");
    }
    Ok(Submission {
        username,
        password,
        remove,
    })
}

/// Handles registration IQs of an authenticated user.
pub async fn handle_iq(
    server: &Server,
    session: &mut SessionCtx,
    iq: &Element,
    destination: &Destination,
) -> Option<Element> {
    if *destination != Destination::Server {
        return None;
    }
    if iq.attr("type") == Some("get") {
        let mut query = form();
        query.append_child(Element::bare("registered", NS));
        if let Some(username) = query.get_child_mut("username", NS) {
            username.append_text(session.username.clone());
        }
        return Some(stanza::iq_result(iq, Some(query)));
    }
    let submission = match parse_submission(iq) {
        Ok(s) => s,
        Err(text) => return errors::bad_request(iq, text),
    };
    if submission.remove {
        return Some(cancel(server, session, iq).await);
    }
    if crate::c2s::negotiation::normalize_username(&submission.username).as_deref()
        != Some(&session.username)
    {
        return errors::not_allowed(iq, "you can only change your own password");
    }
    match server
        .storage
        .set_password(&session.username, &submission.password)
        .await
    {
        Ok(_) => {
            tracing::info!(user = %session.username, "password changed in-band");
            Some(stanza::iq_result(iq, None))
        }
        Err(e) => {
            tracing::error!("password change failed: {e}");
            errors::internal(iq)
        }
    }
}

/// Deletes the account, answers, and closes all of its sessions.
async fn cancel(server: &Server, session: &mut SessionCtx, iq: &Element) -> Element {
    match server.storage.delete_account(&session.username).await {
        Ok(_) => {
            tracing::info!(user = %session.username, "account cancelled in-band");
            // Its archived messages leave the message log too.
            server.archive.sweep_soon();
            for resource in server.sessions.resources(&session.username) {
                if resource.handle.id != session.handle.id {
                    resource
                        .handle
                        .close(StreamCondition::NotAuthorized, "account removed");
                }
            }
            session.close_after = Some((StreamCondition::NotAuthorized, "account removed"));
            stanza::iq_result(iq, None)
        }
        Err(e) => {
            tracing::error!("account removal failed: {e}");
            stanza::error_reply(
                iq,
                ErrorType::Wait,
                DefinedCondition::InternalServerError,
                "",
            )
            .unwrap_or_else(|| stanza::iq_result(iq, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_submissions() {
        let iq: Element =
            "<iq xmlns='jabber:client' type='set' id='r'><query xmlns='jabber:iq:register'>\
            <username>bill</username><password>Calliope</password></query></iq>"
                .parse()
                .unwrap();
        assert_eq!(
            parse_submission(&iq).unwrap(),
            Submission {
                username: "bill".into(),
                password: "Calliope".into(),
                remove: false
            }
        );
        let iq: Element =
            "<iq xmlns='jabber:client' type='set' id='r'><query xmlns='jabber:iq:register'>\
            <username>bill</username></query></iq>"
                .parse()
                .unwrap();
        assert!(parse_submission(&iq).is_err());
        let iq: Element = "<iq xmlns='jabber:client' type='set' id='r'><query xmlns='jabber:iq:register'><remove/></query></iq>"
            .parse()
            .unwrap();
        assert!(parse_submission(&iq).unwrap().remove);
    }
}
