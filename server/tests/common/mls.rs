//! MLS members for tests: a logged-in client with a tern-e2ee device, and
//! helpers for the key directory and the group hub.

use jid::BareJid;
use minidom::Element;
use tern_e2ee::connection::{Connection, Target};
use tern_e2ee::envelope::Content;
use tern_e2ee::wire::hub::{Accepted, Create, Created, GroupInfoData};
use tern_e2ee::wire::keys::{Claim, Count, KeyPackages, Upload};
use tern_e2ee::wire::payload::{MlsPayload, WelcomePayload};
use tern_e2ee::{ClientStore, CommitOut, ConversationId, Device, Incoming};

use super::{TestServer, WAIT};

/// Tern's MLS namespace.
pub const NS: &str = tern_e2ee::wire::NS;
/// The test server's groups domain.
pub const GROUPS: &str = "groups.tern.test";

/// A user with one MLS device, logged in.
pub struct Member {
    pub client: MlsClient,
    pub device: Device,
    _dir: tempfile::TempDir,
}

impl Member {
    /// Creates the account (password "secret") and logs in.
    pub async fn new(server: &TestServer, user: &str) -> Member {
        server.add_user(user, "secret");
        Self::login(server, user).await
    }

    /// Logs in to an existing account with a new device.
    pub async fn login(server: &TestServer, user: &str) -> Member {
        super::TestCa::get();
        let jid = BareJid::new(&server.jid(user)).expect("jid");
        let target = Target::Address(server.c2s_tls.to_string());
        let connection = Connection::open(&jid, "secret", &target)
            .await
            .expect("login");
        let mut client = MlsClient {
            connection,
            pending: Default::default(),
        };
        client.send_xml("<presence xmlns='jabber:client'/>").await;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ClientStore::open(&dir.path().join("client.sqlite3")).expect("store");
        let device = Device::create(store, BareJid::new(&server.jid(user)).expect("jid"))
            .await
            .expect("device");
        Member {
            client,
            device,
            _dir: dir,
        }
    }

    /// Disconnects (the device's store goes with it).
    pub async fn go_offline(self) {
        self.client.close().await;
    }

    pub fn bare(&self) -> String {
        self.device.name().jid.to_string()
    }

    pub async fn set(
        &mut self,
        to: Option<&str>,
        payload: impl Into<Element>,
    ) -> Result<Element, Element> {
        self.client.iq(to, "set", payload.into()).await
    }

    pub async fn get(
        &mut self,
        to: Option<&str>,
        payload: impl Into<Element>,
    ) -> Result<Element, Element> {
        self.client.iq(to, "get", payload.into()).await
    }

    /// Uploads `count` single-use packages and a last-resort one.
    pub async fn upload(&mut self, count: usize) -> Count {
        self.try_upload(count).await.expect("upload accepted")
    }

    /// Uploads `count` single-use packages and a last-resort one; the
    /// server's count, or its error.
    pub async fn try_upload(&mut self, count: usize) -> Result<Count, Element> {
        let packages = self
            .device
            .generate_key_packages(count)
            .await
            .expect("packages");
        let last_resort = self
            .device
            .generate_last_resort_key_package()
            .await
            .expect("last resort");
        let upload = Upload::new(
            self.device.name().device.to_string(),
            packages,
            Some(last_resort),
        );
        self.set(None, upload)
            .await
            .map(|answer| Count::try_from(answer).expect("count"))
    }

    pub async fn claim(&mut self, user: &str) -> Result<KeyPackages, Element> {
        self.set(Some(user), Claim {})
            .await
            .map(|answer| KeyPackages::try_from(answer).expect("key packages"))
    }

    pub async fn create_group(&mut self) -> (ConversationId, String) {
        let (id, group_info) = self.device.create_conversation().await.expect("group");
        let create = Create {
            group_info: GroupInfoData {
                epoch: None,
                data: group_info,
            },
        };
        let hub = format!("groups.{}", self.device.name().jid.domain());
        let created = Created::try_from(self.set(Some(&hub), create).await.expect("created"))
            .expect("created element");
        (id, created.address.to_string())
    }

    /// Claims `user`'s key packages and commits adding their first
    /// device to the group; merged when the hub accepts it, the hub's
    /// error otherwise.
    pub async fn add_user(
        &mut self,
        id: &ConversationId,
        group: &str,
        user: &str,
    ) -> Result<Accepted, Element> {
        let packages = self.claim(user).await.expect("key packages");
        let out = self
            .device
            .add_members(id, &[packages.key_packages[0].data.clone()])
            .await
            .expect("add a member");
        let accepted = self.submit(group, &out).await?;
        self.device
            .commit_accepted(id, accepted.seq)
            .await
            .expect("merge");
        Ok(accepted)
    }

    pub async fn submit(&mut self, group: &str, out: &CommitOut) -> Result<Accepted, Element> {
        self.set(Some(group), out.to_wire())
            .await
            .map(|answer| Accepted::try_from(answer).expect("accepted"))
    }

    pub async fn send_text(&mut self, group: &str, id: &ConversationId, text: &str) {
        let (message, _) = self
            .device
            .send(id, vec![Content::Body(text.to_owned())])
            .await
            .expect("encrypt");
        self.send_mls(group, message).await;
    }

    pub async fn send_mls(&mut self, group: &str, data: Vec<u8>) {
        let mut stanza: Element =
            format!("<message xmlns='jabber:client' to='{group}' type='groupchat'/>")
                .parse()
                .expect("message");
        stanza.append_child(MlsPayload { seq: None, data }.into());
        self.client.send_xml(&String::from(&stanza)).await;
    }

    /// The next log entry the hub pushes for `group`.
    pub async fn next_entry(&mut self, group: &str) -> MlsPayload {
        let group = group.to_owned();
        let message = self
            .client
            .expect("a hub message", move |e| {
                e.name() == "message"
                    && e.attr("from") == Some(&group)
                    && e.get_child("mls", NS).is_some()
            })
            .await;
        MlsPayload::try_from(message.get_child("mls", NS).expect("mls").clone()).expect("payload")
    }

    /// Waits for a Welcome from `group` and joins with it; returns the
    /// conversation and the Welcome's log position.
    pub async fn join_from_welcome(&mut self, group: &str) -> (ConversationId, u64) {
        let from = group.to_owned();
        let welcome = self
            .client
            .expect("a welcome", move |e| {
                e.attr("from") == Some(&from) && e.get_child("welcome", NS).is_some()
            })
            .await;
        let welcome =
            WelcomePayload::try_from(welcome.get_child("welcome", NS).expect("welcome").clone())
                .expect("welcome payload");
        let seq = welcome.seq.expect("seq");
        let (id, _) = self
            .device
            .join(&welcome.data, seq, &welcome.group)
            .await
            .expect("join");
        (id, seq)
    }

    /// Processes the next pushed entry; returns what it was.
    pub async fn receive(&mut self, group: &str, id: &ConversationId) -> Incoming {
        let entry = self.next_entry(group).await;
        self.device
            .process(id, entry.seq.expect("seq"), &entry.data)
            .await
            .expect("process")
    }
}

/// The defined condition of a stanza error element.
pub fn condition(error: &Element) -> Option<String> {
    error
        .children()
        .find(|c| c.ns() == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.name() != "text")
        .map(|c| c.name().to_owned())
}

/// A client stream for tests (tern-e2ee's [`Connection`]), keeping
/// stanzas that arrive while an answer is awaited.
pub struct MlsClient {
    connection: Connection,
    pending: std::collections::VecDeque<Element>,
}

impl MlsClient {
    /// Sends a stanza given as XML text.
    pub async fn send_xml(&mut self, xml: &str) {
        let stanza: Element = xml.parse().expect("test XML parses");
        self.connection.send(&stanza).await.expect("send");
    }

    /// Sends an IQ; its result's payload, or its error element.
    pub async fn iq(
        &mut self,
        to: Option<&str>,
        kind: &str,
        payload: Element,
    ) -> Result<Element, Element> {
        let id = format!("test-{:016x}", rand::random::<u64>());
        let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
        let mut iq: Element = format!("<iq xmlns='jabber:client' type='{kind}' id='{id}'{to}/>")
            .parse()
            .expect("iq");
        iq.append_child(payload);
        self.connection.send(&iq).await.expect("send");
        let answer = self
            .expect("an IQ answer", move |e| {
                e.name() == "iq" && e.attr("id") == Some(&id)
            })
            .await;
        if answer.attr("type") == Some("error") {
            return Err(answer
                .get_child("error", "jabber:client")
                .cloned()
                .unwrap_or(answer));
        }
        Ok(answer
            .children()
            .next()
            .cloned()
            .unwrap_or_else(|| Element::bare("empty", NS)))
    }

    /// Waits for a stanza matching `matches`, keeping others.
    pub async fn expect(&mut self, what: &str, matches: impl Fn(&Element) -> bool) -> Element {
        if let Some(index) = self.pending.iter().position(&matches) {
            return self.pending.remove(index).expect("index is valid");
        }
        let connection = &mut self.connection;
        let pending = &mut self.pending;
        tokio::time::timeout(WAIT, async {
            loop {
                let stanza = connection.next().await.expect("stream open");
                if matches(&stanza) {
                    return stanza;
                }
                pending.push_back(stanza);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    /// Asserts that no stanza matching `matches` arrives `within` (others
    /// are kept).
    pub async fn expect_none(
        &mut self,
        what: &str,
        within: std::time::Duration,
        matches: impl Fn(&Element) -> bool,
    ) {
        assert!(!self.pending.iter().any(&matches), "unexpected {what}");
        let connection = &mut self.connection;
        let pending = &mut self.pending;
        let arrived = tokio::time::timeout(within, async {
            loop {
                let stanza = connection.next().await.expect("stream open");
                if matches(&stanza) {
                    return stanza;
                }
                pending.push_back(stanza);
            }
        })
        .await;
        if let Ok(stanza) = arrived {
            panic!("unexpected {what}: {stanza:?}");
        }
    }

    /// Ends the stream.
    pub async fn close(self) {
        self.connection.close().await;
    }
}

/// The text of an incoming message, if it is one.
pub fn text_of(incoming: &Incoming) -> Option<&str> {
    match incoming {
        Incoming::Message { envelope, .. } => envelope.body(),
        _ => None,
    }
}
