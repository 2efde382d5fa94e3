//! `tern chat PEER`: one conversation, live. Incoming messages print as
//! they arrive, numbered so that lines can refer to them; what the user
//! types is sent. Slash commands: `/reply N TEXT`, `/edit [N] TEXT`,
//! `/react N EMOJI…`, `/file PATH`, `/help`, `/quit`.
//!
//! At a terminal the input line is edited with rustyline (history, cursor
//! keys) and output prints above it; otherwise lines are read from
//! standard input as they come, which lets scripts drive a chat.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use jid::BareJid;
use tern_e2ee::envelope::{Content, Envelope};
use tern_e2ee::{ConversationId, Event, Session};
use tokio::sync::mpsc;

use crate::files;
use crate::output::{short_id, Output, Printer};

/// Messages of the history shown when the chat opens.
const HISTORY_SHOWN: u32 = 10;

const HELP: &str = "/reply N TEXT   answer message #N\n\
                    /edit [N] TEXT  correct your message #N (default: your last)\n\
                    /react N EMOJI  react to message #N (no emoji: take reactions back)\n\
                    /file PATH      send a file, encrypted\n\
                    /quit           leave (Ctrl-D too)";

/// What a line of input asks for.
#[derive(Debug, PartialEq)]
enum Line {
    Text(String),
    Reply(usize, String),
    Edit(Option<usize>, String),
    React(usize, Vec<String>),
    File(PathBuf),
    Help,
    Quit,
    Empty,
    Invalid(String),
}

fn parse(line: &str) -> Line {
    let line = line.trim_end_matches(['\r', '\n']);
    let Some(command) = line.strip_prefix('/') else {
        return if line.trim().is_empty() {
            Line::Empty
        } else {
            Line::Text(line.to_owned())
        };
    };
    let (name, rest) = command.split_once(' ').unwrap_or((command, ""));
    let rest = rest.trim();
    let number_and_text = |rest: &str| -> Option<(usize, String)> {
        let (n, text) = rest.split_once(' ').unwrap_or((rest, ""));
        let n = n.trim_start_matches('#').parse().ok()?;
        Some((n, text.trim().to_owned()))
    };
    match name {
        "quit" | "q" => Line::Quit,
        "help" => Line::Help,
        "reply" => match number_and_text(rest) {
            Some((n, text)) if !text.is_empty() => Line::Reply(n, text),
            _ => Line::Invalid("usage: /reply N TEXT".into()),
        },
        "edit" => match number_and_text(rest) {
            Some((n, text)) if !text.is_empty() => Line::Edit(Some(n), text),
            Some(_) => Line::Invalid("usage: /edit [N] TEXT".into()),
            None if !rest.is_empty() => Line::Edit(None, rest.to_owned()),
            None => Line::Invalid("usage: /edit [N] TEXT".into()),
        },
        "react" => match number_and_text(rest) {
            Some((n, emojis)) => {
                Line::React(n, emojis.split_whitespace().map(str::to_owned).collect())
            }
            None => Line::Invalid("usage: /react N EMOJI".into()),
        },
        "file" if !rest.is_empty() => Line::File(PathBuf::from(rest)),
        "file" => Line::Invalid("usage: /file PATH".into()),
        // `//text` sends "/text".
        _ if command.starts_with('/') => Line::Text(command.to_owned()),
        _ => Line::Invalid(format!("unknown command /{name}; /help lists them")),
    }
}

/// The messages shown so far, by number.
#[derive(Default)]
struct Shown {
    ids: Vec<(String, BareJid)>,
    numbers: HashMap<String, usize>,
}

impl Shown {
    /// Numbers a message (1, 2, …).
    fn number(&mut self, envelope: &Envelope) -> usize {
        if let Some(n) = self.numbers.get(&envelope.id) {
            return *n;
        }
        self.ids.push((envelope.id.clone(), envelope.from.clone()));
        let n = self.ids.len();
        self.numbers.insert(envelope.id.clone(), n);
        n
    }

    fn get(&self, n: usize) -> Option<&(String, BareJid)> {
        n.checked_sub(1).and_then(|i| self.ids.get(i))
    }

    fn reference(&self, id: &str) -> String {
        match self.numbers.get(id) {
            Some(n) => format!("#{n}"),
            None => short_id(id),
        }
    }

    /// The number of `from`'s last message.
    fn last_of(&self, from: &BareJid) -> Option<usize> {
        self.ids.iter().rposition(|(_, f)| f == from).map(|i| i + 1)
    }
}

/// Runs the chat in `id` until `/quit` or the end of input.
pub async fn run(session: &mut Session, id: ConversationId, json: bool) -> Result<()> {
    let (mut lines, printer) = spawn_input()?;
    let out = match printer {
        Some(printer) => Output::through(json, printer),
        None => Output::new(json),
    };
    let me = session.device().name().jid.clone();
    let mut shown = Shown::default();
    for message in session.device().store().history(&id.0, HISTORY_SHOWN)? {
        show(
            &out,
            &mut shown,
            message.seq,
            &message.sender,
            &message.envelope,
        );
    }
    out.notice("ready", "type to send; /help for commands");
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else { break };
                match compose(&parse(&line), &shown, &me) {
                    Ok(Composed::Send(contents)) => {
                        let envelope = session.send(&id, contents).await?;
                        let sender = session.device().name().to_string();
                        show(&out, &mut shown, None, &sender, &envelope);
                    }
                    Ok(Composed::SendFile(path)) => match files::send(session, &id, &path).await {
                        Ok(envelope) => {
                            let sender = session.device().name().to_string();
                            show(&out, &mut shown, None, &sender, &envelope);
                        }
                        Err(e) => out.notice("error", &format!("{e:#}")),
                    },
                    Ok(Composed::Quit) => break,
                    Ok(Composed::Nothing) => {}
                    Ok(Composed::Help) => out.notice("help", HELP),
                    Err(problem) => out.notice("error", &problem),
                }
            }
            ready = session.readable() => {
                ready.context("the connection to the server ended")?;
                while let Some(event) = session.next_event(Duration::ZERO).await? {
                    show_event(&out, &mut shown, &id, &event);
                    session.acknowledge(&event).await?;
                }
            }
        }
    }
    Ok(())
}

/// What to do about a line.
enum Composed {
    Send(Vec<Content>),
    SendFile(PathBuf),
    Help,
    Quit,
    Nothing,
}

fn compose(line: &Line, shown: &Shown, me: &BareJid) -> Result<Composed, String> {
    let message = |n: usize| {
        shown
            .get(n)
            .ok_or_else(|| format!("there is no message #{n}"))
    };
    Ok(match line {
        Line::Text(text) => Composed::Send(vec![Content::Body(text.clone())]),
        Line::Reply(n, text) => {
            let (id, from) = message(*n)?;
            Composed::Send(vec![
                Content::Reply {
                    to: Some(from.clone()),
                    id: id.clone(),
                },
                Content::Body(text.clone()),
            ])
        }
        Line::Edit(n, text) => {
            let n = match n {
                Some(n) => *n,
                None => shown
                    .last_of(me)
                    .ok_or("you have sent nothing to edit yet")?,
            };
            let (id, from) = message(n)?;
            if from != me {
                return Err(format!("#{n} is not yours to edit"));
            }
            Composed::Send(vec![
                Content::Correction { id: id.clone() },
                Content::Body(text.clone()),
            ])
        }
        Line::React(n, emojis) => Composed::Send(vec![Content::Reactions {
            id: message(*n)?.0.clone(),
            emojis: emojis.clone(),
        }]),
        Line::File(path) => Composed::SendFile(path.clone()),
        Line::Help => Composed::Help,
        Line::Quit => Composed::Quit,
        Line::Empty => Composed::Nothing,
        Line::Invalid(problem) => return Err(problem.clone()),
    })
}

fn show(out: &Output, shown: &mut Shown, seq: Option<u64>, sender: &str, envelope: &Envelope) {
    let n = shown.number(envelope);
    out.chat_message(n, sender, seq, envelope, &|id| shown.reference(id));
}

fn show_event(out: &Output, shown: &mut Shown, id: &ConversationId, event: &Event) {
    match event {
        Event::Message {
            conversation,
            seq,
            sender,
            envelope,
        } if conversation == id => show(out, shown, Some(*seq), &sender.to_string(), envelope),
        Event::Message { envelope, .. } => out.notice(
            "elsewhere",
            &format!("({} wrote in another conversation)", envelope.from),
        ),
        Event::MembersChanged {
            conversation,
            added,
            removed,
            ..
        } if conversation == id => {
            for device in added {
                out.notice("joined", &format!("{device} joined"));
            }
            for device in removed {
                out.notice("left", &format!("{device} left"));
            }
        }
        Event::VerificationReset { device, .. } => out.notice(
            "verification_reset",
            &format!(
                "device {} of {} has a new key and is no longer verified",
                device.device, device.jid
            ),
        ),
        Event::Removed { conversation } if conversation == id => {
            out.notice("removed", "you were removed from this conversation")
        }
        Event::Rejected {
            conversation,
            reason,
            ..
        } if conversation == id => out.notice(
            "rejected",
            &format!("a message could not be read: {reason}"),
        ),
        _ => {}
    }
}

/// Reads input lines on a thread of their own; at a terminal with
/// rustyline, whose printer then carries the output.
fn spawn_input() -> Result<(mpsc::Receiver<String>, Option<Printer>)> {
    let (tx, rx) = mpsc::channel(16);
    if !std::io::stdin().is_terminal() {
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        return Ok((rx, None));
    }
    let mut editor = rustyline::DefaultEditor::new().context("setting the terminal up")?;
    let mut external = editor
        .create_external_printer()
        .context("setting the terminal up")?;
    let printer: Printer = Box::new(move |line| {
        use rustyline::ExternalPrinter;
        let _ = external.print(format!("{line}\n"));
    });
    std::thread::spawn(move || loop {
        match editor.readline("> ") {
            Ok(line) => {
                let _ = editor.add_history_entry(line.as_str());
                let quit = parse(&line) == Line::Quit;
                if tx.blocking_send(line).is_err() || quit {
                    break;
                }
            }
            Err(rustyline::error::ReadlineError::Interrupted) => {
                let _ = tx.blocking_send("/quit".into());
                break;
            }
            Err(_) => break,
        }
    });
    Ok((rx, Some(printer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_commands() {
        assert_eq!(parse("hello"), Line::Text("hello".into()));
        assert_eq!(parse("/reply 3 yes"), Line::Reply(3, "yes".into()));
        assert_eq!(parse("/reply #3 yes"), Line::Reply(3, "yes".into()));
        assert_eq!(parse("/edit fixed"), Line::Edit(None, "fixed".into()));
        assert_eq!(parse("/edit 2 fixed"), Line::Edit(Some(2), "fixed".into()));
        assert_eq!(
            parse("/react 1 👍 🎉"),
            Line::React(1, vec!["👍".into(), "🎉".into()])
        );
        assert_eq!(parse("/react 1"), Line::React(1, vec![]));
        assert_eq!(parse("//slash"), Line::Text("/slash".into()));
        assert_eq!(parse("/quit"), Line::Quit);
        assert_eq!(parse("   "), Line::Empty);
        assert!(matches!(parse("/reply x"), Line::Invalid(_)));
        assert!(matches!(parse("/nope"), Line::Invalid(_)));
    }

    #[test]
    fn edits_only_touch_own_messages() {
        let me = BareJid::new("me@example.org").unwrap();
        let other = BareJid::new("you@example.org").unwrap();
        let mut shown = Shown::default();
        shown.number(&Envelope::new(other, vec![Content::Body("hi".into())]));
        assert!(compose(&Line::Edit(None, "x".into()), &shown, &me).is_err());
        assert!(compose(&Line::Edit(Some(1), "x".into()), &shown, &me).is_err());
        shown.number(&Envelope::new(
            me.clone(),
            vec![Content::Body("hey".into())],
        ));
        assert!(matches!(
            compose(&Line::Edit(None, "x".into()), &shown, &me),
            Ok(Composed::Send(_))
        ));
        assert!(compose(&Line::Reply(9, "x".into()), &shown, &me).is_err());
    }
}
