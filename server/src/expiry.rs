//! Deletes what has outlived its keeping time: archived messages after
//! `archive.expire_after_days`, uploaded files after
//! `upload.expire_after_days`, and upload slots never used within a day;
//! and compacts the archive's message log, so that deleted messages leave
//! the disk. Runs at start-up and then every hour.

use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};

use crate::server::Server;

/// Time between sweeps.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// How long an upload slot may go unused.
const UNUSED_SLOT_DAYS: i64 = 1;

/// Sweeps until the server shuts down.
pub async fn run(server: Arc<Server>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = server.shutdown.cancelled() => return,
            _ = every.tick() => sweep(&server).await,
        }
    }
}

async fn sweep(server: &Server) {
    let days_ago = |days: u32| Utc::now() - chrono::Duration::days(i64::from(days));
    let archive_days = server.config.archive.expire_after_days;
    if archive_days > 0 {
        let before = days_ago(archive_days).timestamp_micros();
        match server.archive.expire(before).await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "expired archived messages"),
            Err(e) => tracing::error!("expiring archived messages failed: {e}"),
        }
    } else {
        // Accounts deleted from the command line while the server runs
        // leave their messages for this.
        server.archive.sweep().await;
    }
    let upload_days = server.config.upload.expire_after_days;
    let stamp = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    // With no expiry, a completed upload is older than no cut-off.
    let completed_before = match upload_days {
        0 => String::new(),
        days => stamp(days_ago(days)),
    };
    let unused_before = stamp(Utc::now() - chrono::Duration::days(UNUSED_SLOT_DAYS));
    match server
        .storage
        .uploads_expire(&completed_before, &unused_before)
        .await
    {
        Ok(tokens) => {
            for token in &tokens {
                let path = server.config.uploads_dir().join(token);
                if let Err(e) = tokio::fs::remove_file(&path).await {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!("cannot delete expired upload {}: {e}", path.display());
                    }
                }
            }
            if !tokens.is_empty() {
                tracing::info!(count = tokens.len(), "deleted expired uploads");
            }
        }
        Err(e) => tracing::error!("expiring uploads failed: {e}"),
    }
}
