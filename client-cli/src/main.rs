//! `tern`: the command-line client of Tern. A thin UI over
//! [`tern_e2ee::Session`]: every networked command logs the profile's
//! device in, catches up on its conversations, does its work and logs out.

mod chat;
mod files;
mod output;
mod profile;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use jid::BareJid;
use tern_e2ee::envelope::Content;
use tern_e2ee::identity::{fingerprint, safety_number};
use tern_e2ee::wire::devices::DeviceList;
use tern_e2ee::{ConversationId, Session, SessionError, SessionOptions};

use output::Output;
use profile::Profile;

/// Key packages kept on the server for this device.
const KEY_PACKAGE_STOCK: u32 = 20;

/// Tern: end-to-end encrypted messaging over XMPP, from the terminal.
#[derive(Debug, Parser)]
#[command(name = "tern", version)]
struct Cli {
    /// Profile directory (default: $TERN_HOME, else $XDG_DATA_HOME/tern).
    #[arg(long, global = true)]
    profile: Option<PathBuf>,
    /// The server's direct-TLS address HOST:PORT (default: found through
    /// DNS SRV records of your JID's domain; TERN_DNS=IP:PORT names the DNS
    /// server).
    #[arg(long, global = true)]
    server: Option<String>,
    /// A PEM file of CA certificates to trust (for private servers).
    #[arg(long, global = true)]
    ca_file: Option<PathBuf>,
    /// One JSON object per line, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Your account and devices.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Your contacts (kept on this device).
    #[command(subcommand)]
    Contact(ContactCommand),
    /// Group conversations.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Sends a message to PEER (a JID, or a group's address), end-to-end
    /// encrypted.
    Send {
        /// Who to write to.
        peer: String,
        /// What to say.
        text: String,
    },
    /// Chats with PEER interactively: incoming messages print live, typed
    /// lines are sent; /help lists the commands.
    Chat {
        /// Who to chat with (a JID, or a group's address).
        peer: String,
    },
    /// Encrypted files.
    #[command(subcommand)]
    File(FileCommand),
    /// Shows the safety number you share with JID and their devices'
    /// fingerprints; compare them with JID in person or by call.
    Verify {
        /// The user.
        jid: String,
        /// Only this device of theirs.
        #[arg(long)]
        device: Option<String>,
        /// Marks their devices (or --device) as verified by you.
        #[arg(long)]
        mark_verified: bool,
    },
    /// Prints what arrived, then exits.
    Recv {
        /// Keep listening until nothing arrived for this many seconds.
        #[arg(long, default_value_t = 2)]
        wait: u64,
    },
    /// Shows the local history, of one peer or of everything.
    History {
        /// Only this peer's conversation.
        peer: Option<String>,
        /// Only messages matching these words.
        #[arg(long)]
        search: Option<String>,
        /// At most this many messages.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// Creates the account JID on its server (in-band registration), then
    /// sets this profile up for it as `login` does.
    Register {
        /// The JID to create.
        jid: String,
        /// A name for this device ("laptop").
        #[arg(long)]
        label: Option<String>,
    },
    /// Sets this profile up for JID (an existing account): creates the
    /// device, publishes it and its key packages.
    Login {
        /// Your JID.
        jid: String,
        /// A name for this device ("laptop").
        #[arg(long)]
        label: Option<String>,
    },
    /// Lists your devices with their fingerprints.
    Devices,
}

#[derive(Debug, Subcommand)]
enum GroupCommand {
    /// Creates a group (on your server's hub) and prints its address.
    Create {
        /// The group's name (kept on this device).
        name: String,
        /// Members to add.
        #[arg(long = "member")]
        members: Vec<String>,
    },
    /// Adds every device of a user to a group.
    Add {
        /// The group's address.
        group: String,
        /// The user.
        jid: String,
    },
    /// Removes every device of a user from a group.
    Remove {
        /// The group's address.
        group: String,
        /// The user.
        jid: String,
    },
    /// Leaves a group (all your devices); the next member online commits
    /// it.
    Leave {
        /// The group's address.
        group: String,
    },
    /// Lists your conversations with their members.
    List,
}

#[derive(Debug, Subcommand)]
enum FileCommand {
    /// Encrypts the file at PATH, uploads it and sends it to PEER.
    Send {
        /// Who to send it to (a JID, or a group's address).
        peer: String,
        /// The file.
        path: PathBuf,
    },
    /// Downloads and decrypts the file of a message (its id is in
    /// `tern recv --json` and `tern history --json`).
    Get {
        /// The message's id.
        message_id: String,
        /// Where to write it (default: its name, in this directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ContactCommand {
    /// Adds (or renames) a contact, asks to see their presence and lets
    /// them see yours (on any server: federation carries it).
    Add {
        /// Their JID.
        jid: String,
        /// What to call them.
        #[arg(long)]
        name: Option<String>,
        /// Only keep the name on this device; send no subscription.
        #[arg(long)]
        local: bool,
    },
    /// Lists your contacts with their presence subscription (`both` once
    /// each sees the other's presence).
    List,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TERN_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    if let Some(ca) = &cli.ca_file {
        // rustls-native-certs reads the trusted roots from SSL_CERT_FILE;
        // set before any connection is made.
        std::env::set_var("SSL_CERT_FILE", ca);
    }
    let dir = Profile::locate(cli.profile.clone())?;
    let out = Output::new(cli.json);
    match cli.command {
        Command::Account(AccountCommand::Register { jid, label }) => {
            let jid = parse_jid(&jid)?;
            let profile = Profile::create(&dir, &jid, cli.server.clone())?;
            let options = profile.new_password_options(cli.server)?;
            match Session::register(&options).await {
                Ok(()) => {}
                Err(SessionError::Refused { condition, .. }) if condition == "conflict" => {
                    bail!(
                        "{jid} exists already: choose another name, or `tern account login {jid}`"
                    )
                }
                Err(e) => return Err(e).with_context(|| format!("registering {jid}")),
            }
            set_up_device(&profile, options, label.as_deref(), &out).await?;
        }
        Command::Account(AccountCommand::Login { jid, label }) => {
            let jid = parse_jid(&jid)?;
            let profile = Profile::create(&dir, &jid, cli.server.clone())?;
            let options = profile.session_options(cli.server)?;
            set_up_device(&profile, options, label.as_deref(), &out).await?;
        }
        Command::Account(AccountCommand::Devices) => {
            let profile = Profile::open(&dir)?;
            let mut session = connect(&profile, cli.server).await?;
            let list = session.device_list(&profile.jid()?).await?;
            let own = session.device().name().device.to_string();
            session.close().await;
            for device in list.devices {
                out.device(
                    &device.id,
                    &fingerprint(&device.key),
                    device.label.as_deref(),
                    device.id == own,
                );
            }
        }
        Command::Contact(ContactCommand::Add { jid, name, local }) => {
            let profile = Profile::open(&dir)?;
            let jid = parse_jid(&jid)?;
            profile
                .store()?
                .add_contact(jid.as_str(), name.as_deref())?;
            if !local {
                let mut session = connect(&profile, cli.server).await?;
                let subscribed = session.subscribe(&jid).await;
                session.close().await;
                subscribed.with_context(|| format!("asking {jid} for their presence"))?;
            }
        }
        Command::Contact(ContactCommand::List) => {
            let profile = Profile::open(&dir)?;
            let names: BTreeMap<String, Option<String>> =
                profile.store()?.contacts()?.into_iter().collect();
            let mut session = connect(&profile, cli.server).await?;
            let roster = session.roster().await;
            session.close().await;
            let mut subscriptions: BTreeMap<String, (String, bool)> = roster
                .context("reading your roster")?
                .into_iter()
                .map(|item| (item.jid.to_string(), (item.subscription, item.asked)))
                .collect();
            for jid in names.keys() {
                subscriptions
                    .entry(jid.clone())
                    .or_insert_with(|| ("none".to_owned(), false));
            }
            for (jid, (subscription, asked)) in &subscriptions {
                let name = names.get(jid).cloned().flatten();
                out.contact(jid, name.as_deref(), subscription, *asked);
            }
        }
        Command::Group(command) => group(command, &dir, cli.server, &out).await?,
        Command::Send { peer, text } => {
            let profile = Profile::open(&dir)?;
            let peer = parse_jid(&peer)?;
            let mut session = connect(&profile, cli.server).await?;
            catch_up(&mut session, &out).await?;
            let id = session.conversation_with(&peer).await?;
            let envelope = session.send(&id, vec![Content::Body(text)]).await?;
            session.close().await;
            out.sent(&peer, &envelope.id);
        }
        Command::Chat { peer } => {
            let profile = Profile::open(&dir)?;
            let peer = parse_jid(&peer)?;
            let mut session = connect(&profile, cli.server).await?;
            session.catch_up().await?;
            let id = session.conversation_with(&peer).await?;
            let result = chat::run(&mut session, id, cli.json).await;
            session.close().await;
            result?;
        }
        Command::File(FileCommand::Send { peer, path }) => {
            let profile = Profile::open(&dir)?;
            let peer = parse_jid(&peer)?;
            let mut session = connect(&profile, cli.server).await?;
            catch_up(&mut session, &out).await?;
            let id = session.conversation_with(&peer).await?;
            let sent = files::send(&mut session, &id, &path).await;
            session.close().await;
            out.sent(&peer, &sent?.id);
        }
        Command::File(FileCommand::Get {
            message_id,
            out: target,
        }) => {
            let profile = Profile::open(&dir)?;
            let saved = files::get(&profile.store()?, &message_id, target).await?;
            out.saved(&saved);
        }
        Command::Verify {
            jid,
            device,
            mark_verified,
        } => {
            let profile = Profile::open(&dir)?;
            let user = parse_jid(&jid)?;
            let mut session = connect(&profile, cli.server).await?;
            let theirs = session.device_list(&user).await?;
            let ours = session.device_list(&profile.jid()?).await?;
            session.close().await;
            verify(
                &profile,
                &user,
                &theirs,
                &ours,
                device.as_deref(),
                mark_verified,
                &out,
            )?;
        }
        Command::Recv { wait } => {
            let profile = Profile::open(&dir)?;
            let mut session = connect(&profile, cli.server).await?;
            session.catch_up().await?;
            while let Some(event) = session.next_event(Duration::from_secs(wait)).await? {
                out.event(session.device(), &event).await;
                session.acknowledge(&event).await?;
            }
            session.replenish_key_packages(KEY_PACKAGE_STOCK).await?;
            session.close().await;
        }
        Command::History {
            peer,
            search,
            limit,
        } => {
            let profile = Profile::open(&dir)?;
            let store = profile.store()?;
            let device = profile.device_in(store.clone()).await?;
            let messages = match (&peer, &search) {
                (_, Some(words)) => store.search(words, limit)?,
                (Some(peer), None) => {
                    let peer = parse_jid(peer)?;
                    let id = device
                        .direct_conversation(&peer)
                        .await?
                        .with_context(|| format!("no conversation with {peer} yet"))?;
                    store.history(&id.0, limit)?
                }
                (None, None) => {
                    let mut all = Vec::new();
                    for (id, _) in device.conversations()? {
                        all.extend(store.history(&id.0, limit)?);
                    }
                    all
                }
            };
            for message in &messages {
                out.stored(message);
            }
        }
    }
    Ok(())
}

async fn group(
    command: GroupCommand,
    dir: &std::path::Path,
    server: Option<String>,
    out: &Output,
) -> Result<()> {
    let profile = Profile::open(dir)?;
    if let GroupCommand::List = command {
        let store = profile.store()?;
        let device = profile.device_in(store.clone()).await?;
        let names: std::collections::HashMap<String, Option<String>> =
            store.contacts()?.into_iter().collect();
        for (id, address) in device.conversations()? {
            let Some(users) = device.member_users(&id).await? else {
                continue;
            };
            let members: BTreeSet<String> = users.iter().map(BareJid::to_string).collect();
            let address = address.map(|a| a.to_string()).unwrap_or_default();
            let name = names.get(&address).cloned().flatten();
            out.group(&address, name.as_deref(), &members);
        }
        return Ok(());
    }
    let mut session = connect(&profile, server).await?;
    catch_up(&mut session, out).await?;
    match command {
        GroupCommand::Create { name, members } => {
            let members = members
                .iter()
                .map(|m| parse_jid(m))
                .collect::<Result<Vec<_>>>()?;
            let (_, address) = session.create_conversation(&members).await?;
            // Group names stay on this device, as the name of the group's
            // address among the contacts.
            session
                .device()
                .store()
                .add_contact(address.as_str(), Some(&name))?;
            out.created(&address, &name);
        }
        GroupCommand::Add { group, jid } => {
            let id = known_group(&session, &group)?;
            session.add_users(&id, &[parse_jid(&jid)?]).await?;
        }
        GroupCommand::Remove { group, jid } => {
            let id = known_group(&session, &group)?;
            session.remove_user(&id, &parse_jid(&jid)?).await?;
        }
        GroupCommand::Leave { group } => {
            let id = known_group(&session, &group)?;
            session.leave(&id).await?;
        }
        GroupCommand::List => {}
    }
    session.close().await;
    Ok(())
}

/// `tern verify`: prints the safety number and the devices, marking them
/// verified when asked.
fn verify(
    profile: &Profile,
    user: &BareJid,
    theirs: &DeviceList,
    ours: &DeviceList,
    only: Option<&str>,
    mark: bool,
    out: &Output,
) -> Result<()> {
    if theirs.devices.is_empty() {
        bail!("{user} has published no devices: they need to log in once with a Tern client");
    }
    let keys = |list: &DeviceList| {
        list.devices
            .iter()
            .map(|d| d.key.clone())
            .collect::<Vec<_>>()
    };
    let number = safety_number((&profile.jid()?, &keys(ours)), (user, &keys(theirs)));
    out.safety_number(user, &number);
    let store = profile.store()?;
    let known = store.known_devices(user.as_str())?;
    let mut matched = false;
    for device in theirs
        .devices
        .iter()
        .filter(|d| only.is_none_or(|id| d.id == id))
    {
        matched = true;
        let mut verified = known
            .iter()
            .any(|k| k.device == device.id && k.signature_key == device.key && k.verified);
        if mark && !verified {
            if !store.mark_verified(user.as_str(), &device.id, &device.key)? {
                bail!(
                    "device {} of {user} now publishes another key than the one seen in your conversations: do not trust it before asking {user}",
                    device.id
                );
            }
            verified = true;
        }
        out.verified_device(
            user,
            &device.id,
            &fingerprint(&device.key),
            device.label.as_deref(),
            verified,
        );
    }
    if !matched {
        bail!("{user} has no device {}", only.unwrap_or_default());
    }
    Ok(())
}

fn known_group(session: &Session, group: &str) -> Result<ConversationId> {
    let address =
        BareJid::new(group).with_context(|| format!("{group:?} is not a group address"))?;
    session
        .conversation_at(&address)?
        .with_context(|| format!("you are not in a group at {address}"))
}

/// Catches up on every conversation and prints what arrived: every
/// command shows the messages it was the first to read.
async fn catch_up(session: &mut Session, out: &Output) -> Result<()> {
    session.catch_up().await?;
    while let Some(event) = session.next_event(Duration::ZERO).await? {
        out.event(session.device(), &event).await;
        session.acknowledge(&event).await?;
    }
    Ok(())
}

/// Logs the profile's device in, publishes it and stocks its key packages.
async fn set_up_device(
    profile: &Profile,
    options: SessionOptions,
    label: Option<&str>,
    out: &Output,
) -> Result<()> {
    let mut session = connect_with(profile, options).await?;
    session.publish_device(label).await?;
    let uploaded = session.replenish_key_packages(KEY_PACKAGE_STOCK).await?;
    let joined = session.join_existing_conversations().await?;
    let device = session.close().await;
    out.logged_in(&device, uploaded, joined);
    Ok(())
}

async fn connect(profile: &Profile, server: Option<String>) -> Result<Session> {
    connect_with(profile, profile.session_options(server)?).await
}

async fn connect_with(profile: &Profile, options: SessionOptions) -> Result<Session> {
    let device = profile.device().await?;
    let jid = options.jid.clone();
    Session::connect(device, options)
        .await
        .map_err(|e| anyhow::anyhow!("{e}{}", hint(&e)))
        .with_context(|| format!("logging in as {jid}"))
}

/// What to try when logging in failed.
fn hint(error: &SessionError) -> &'static str {
    match error {
        SessionError::Connect(why) if why.contains("certificate") => {
            "\n(the server's certificate is not trusted: for a private CA, pass it with --ca-file PEM)"
        }
        SessionError::Connect(why) if why.contains("cannot reach") => {
            "\n(is the server running? name its address with --server HOST:PORT)"
        }
        _ => "",
    }
}

fn parse_jid(text: &str) -> Result<BareJid> {
    match BareJid::new(text) {
        Ok(jid) if jid.node().is_some() => Ok(jid),
        _ => bail!("{text:?} is not a JID like alice@example.org"),
    }
}
