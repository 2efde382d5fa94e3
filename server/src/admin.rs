//! The local admin socket (`<data_dir>/admin.sock`, owner-only): the
//! running server answers one-line commands from `tern-server` itself,
//! such as `federation status`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::config::Config;
use crate::server::Server;

/// Longest command line accepted.
const MAX_COMMAND: u64 = 256;

/// Where the admin socket of the server with `config` is.
pub fn socket_path(config: &Config) -> PathBuf {
    config.data_dir.join("admin.sock")
}

/// Listens on the admin socket until shutdown.
pub fn serve(server: Arc<Server>) -> std::io::Result<()> {
    let path = socket_path(&server.config);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = server.shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            if let Ok((stream, _)) = accepted {
                tokio::spawn(answer(server.clone(), stream));
            }
        }
        let _ = std::fs::remove_file(socket_path(&server.config));
    });
    Ok(())
}

async fn answer(server: Arc<Server>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_COMMAND));
    let read = reader.read_line(&mut line);
    if tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .is_err()
    {
        return;
    }
    let reply = match line.trim() {
        "federation status" => federation_status(&server, false).await,
        "federation status json" => federation_status(&server, true).await,
        other => format!("unknown command: {other}\n"),
    };
    let _ = write.write_all(reply.as_bytes()).await;
    let _ = write.shutdown().await;
}

/// The federation status, as text or JSON.
async fn federation_status(server: &Server, json: bool) -> String {
    let Some(federation) = &server.federation else {
        return "federation is disabled on this server\n".to_owned();
    };
    let status = federation.status().await;
    if json {
        serde_json::to_string_pretty(&status).unwrap_or_default() + "\n"
    } else {
        status.to_string()
    }
}

/// Sends `command` to the running server and returns its answer.
pub async fn ask(config: &Config, command: &str) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(socket_path(config)).await?;
    stream.write_all(format!("{command}\n").as_bytes()).await?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
    Ok(answer)
}
