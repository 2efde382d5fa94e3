//! Queries of the MUC service: rooms and their affiliations (the room
//! archive is in [`super::archive`]).

use sqlx::Row;

use super::{now_rfc3339, Result, Storage};

/// A stored room.
#[derive(Debug, Clone, Default)]
pub struct StoredRoom {
    /// Its name, as the owner set it.
    pub name: String,
    /// Its description.
    pub description: String,
    /// `(bare JID, affiliation)` of everyone with one.
    pub affiliations: Vec<(String, String)>,
}

/// How many rooms may be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomLimits {
    /// Rooms one user may own (`muc.max_rooms_per_user`).
    pub per_owner: u32,
    /// Rooms on the service (`muc.max_rooms`).
    pub total: u32,
}

/// What [`Storage::muc_create`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomCreation {
    /// The room is new, owned by its creator.
    Created,
    /// The room was created meanwhile by someone else.
    Exists,
    /// The creator owns as many rooms as allowed, or the service holds
    /// as many as allowed.
    TooMany,
}

impl Storage {
    /// A room, if it exists.
    pub async fn muc_room(&self, room: &str) -> Result<Option<StoredRoom>> {
        let Some(row) = sqlx::query("SELECT name, description FROM muc_rooms WHERE room = ?")
            .bind(room)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let affiliations = sqlx::query(
            "SELECT jid, affiliation FROM muc_affiliations WHERE room = ? ORDER BY jid",
        )
        .bind(room)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
        Ok(Some(StoredRoom {
            name: row.get(0),
            description: row.get(1),
            affiliations,
        }))
    }

    /// Creates a room owned by `owner` (a bare JID).
    pub async fn muc_create(
        &self,
        room: &str,
        owner: &str,
        limits: RoomLimits,
    ) -> Result<RoomCreation> {
        // IMMEDIATE: it counts before it writes (see store_key_packages).
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let owned: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM muc_affiliations WHERE jid = ? AND affiliation = 'owner'",
        )
        .bind(owner)
        .fetch_one(&mut *tx)
        .await?;
        let rooms: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM muc_rooms")
            .fetch_one(&mut *tx)
            .await?;
        if owned >= i64::from(limits.per_owner) || rooms >= i64::from(limits.total) {
            return Ok(RoomCreation::TooMany);
        }
        let created =
            sqlx::query("INSERT OR IGNORE INTO muc_rooms (room, created_at) VALUES (?, ?)")
                .bind(room)
                .bind(now_rfc3339())
                .execute(&mut *tx)
                .await?;
        if created.rows_affected() == 0 {
            // Another first join made it a moment ago: its creator owns it.
            return Ok(RoomCreation::Exists);
        }
        sqlx::query(
            "INSERT OR REPLACE INTO muc_affiliations (room, jid, affiliation) VALUES (?, ?, 'owner')",
        )
        .bind(room)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RoomCreation::Created)
    }

    /// Sets a room's name and description.
    pub async fn muc_describe(&self, room: &str, name: &str, description: &str) -> Result<()> {
        sqlx::query("UPDATE muc_rooms SET name = ?, description = ? WHERE room = ?")
            .bind(name)
            .bind(description)
            .bind(room)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sets (or with `None` removes) the affiliation of `jid`.
    pub async fn muc_affiliate(
        &self,
        room: &str,
        jid: &str,
        affiliation: Option<&str>,
    ) -> Result<()> {
        match affiliation {
            Some(affiliation) => sqlx::query(
                "INSERT OR REPLACE INTO muc_affiliations (room, jid, affiliation) VALUES (?, ?, ?)",
            )
            .bind(room)
            .bind(jid)
            .bind(affiliation)
            .execute(&self.pool)
            .await?,
            None => {
                sqlx::query("DELETE FROM muc_affiliations WHERE room = ? AND jid = ?")
                    .bind(room)
                    .bind(jid)
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(())
    }

    /// Deletes a room with its affiliations and archive.
    pub async fn muc_destroy(&self, room: &str) -> Result<()> {
        sqlx::query("DELETE FROM muc_rooms WHERE room = ?")
            .bind(room)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The rooms where `jid` has an affiliation other than outcast.
    pub async fn muc_rooms_of(&self, jid: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT room FROM muc_affiliations WHERE jid = ? AND affiliation != 'outcast' ORDER BY room",
        )
        .bind(jid)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }
}
