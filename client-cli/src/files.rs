//! `tern file send|get` (and `/file` in a chat): files are encrypted on
//! this device, uploaded as opaque blobs, and their reference sent in the
//! conversation; fetching downloads, checks and decrypts them.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tern_e2ee::envelope::{Content, Envelope, FileRef};
use tern_e2ee::transfer::Progress;
use tern_e2ee::{ClientStore, ConversationId, Session};

/// Encrypts, uploads and sends the file at `path`.
pub async fn send(session: &mut Session, id: &ConversationId, path: &Path) -> Result<Envelope> {
    let data = tokio::fs::read(path)
        .await
        .with_context(|| format!("reading {}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_owned());
    let (progress, bar) = progress(data.len() as u64, "uploading");
    let sent = session.send_file(id, &name, &data, progress).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    sent.with_context(|| format!("sending {}", path.display()))
}

/// Fetches the file of message `message_id` into `out` (default: its name
/// in the current directory, never overwriting); returns where it went.
pub async fn get(store: &ClientStore, message_id: &str, out: Option<PathBuf>) -> Result<PathBuf> {
    let message = store.message(message_id)?.with_context(|| {
        format!("no message {message_id} in your history (see `tern history --json`)")
    })?;
    let reference = file_of(&message.envelope)
        .with_context(|| format!("message {message_id} carries no file"))?;
    let target = match out {
        Some(out) => out,
        None => {
            let target = PathBuf::from(safe_name(&reference.name));
            if target.exists() {
                bail!(
                    "{} exists already: choose where with --out PATH",
                    target.display()
                );
            }
            target
        }
    };
    let (progress, bar) = progress(reference.size, "downloading");
    let fetched = tern_e2ee::session::fetch_file(reference, progress).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let data = fetched.with_context(|| format!("fetching {}", reference.name))?;
    tokio::fs::write(&target, data)
        .await
        .with_context(|| format!("writing {}", target.display()))?;
    Ok(target)
}

fn file_of(envelope: &Envelope) -> Option<&FileRef> {
    envelope.contents.iter().find_map(|c| match c {
        Content::File(file) => Some(file),
        _ => None,
    })
}

/// A sender-chosen name made safe as a file name here: no directories,
/// no hidden or empty names.
fn safe_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim_start_matches('.')
        .to_owned();
    if cleaned.trim().is_empty() {
        "received-file".to_owned()
    } else {
        cleaned
    }
}

/// A progress bar on standard error when it is a terminal.
fn progress(total: u64, verb: &str) -> (Progress, Option<ProgressBar>) {
    if !std::io::stderr().is_terminal() {
        return (Arc::new(|_| {}), None);
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(verb.to_owned());
    let counter = bar.clone();
    (Arc::new(move |n| counter.inc(n)), Some(bar))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_names_stay_in_the_directory() {
        assert_eq!(safe_name("photo.jpg"), "photo.jpg");
        assert_eq!(safe_name("../../.bashrc"), "bashrc");
        assert_eq!(safe_name("C:\\x\\y.txt"), "y.txt");
        assert_eq!(safe_name(".."), "received-file");
        assert_eq!(safe_name(""), "received-file");
    }
}
