//! Queries of the group hub: groups, their public MLS state, members and
//! ordered logs.

use std::collections::HashMap;

use sqlx::Row;

use super::{now_rfc3339, Result, Storage, StorageError};

/// A group as the hub keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubGroup {
    /// The MLS group id.
    pub group_id: Vec<u8>,
    /// The bare JID that created it.
    pub creator: String,
    /// The current epoch.
    pub epoch: u64,
    /// The position of the last log entry (0: none yet).
    pub last_seq: u64,
    /// The GroupInfo of the current epoch, TLS-serialised.
    pub group_info: Vec<u8>,
}

/// A change to a group's state rows: the new value, or `None` to delete.
pub type StateChange = (Vec<u8>, Option<Vec<u8>>);

/// A message to append to a group's log.
#[derive(Debug, Clone)]
pub struct LogAppend<'a> {
    /// The epoch the message belongs to (checked, see [`Storage::hub_append`]).
    pub epoch: u64,
    /// The MLS message.
    pub message: &'a [u8],
    /// For a commit: the epoch it creates, the new GroupInfo and members.
    pub commit: Option<CommitUpdate<'a>>,
    /// Changes to the public state rows.
    pub state: Vec<StateChange>,
}

/// What an accepted commit changes besides the log.
#[derive(Debug, Clone)]
pub struct CommitUpdate<'a> {
    /// The new epoch.
    pub epoch: u64,
    /// Its GroupInfo.
    pub group_info: &'a [u8],
    /// The members' bare JIDs in the new epoch.
    pub members: Vec<String>,
}

/// What appending did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Appended at this position.
    At(u64),
    /// A commit for an epoch that is not current (another commit won).
    StaleEpoch {
        /// The current epoch.
        epoch: u64,
        /// The last position.
        seq: u64,
    },
    /// No such group.
    NoGroup,
}

impl Storage {
    /// Records a new group with its first state. Returns false (storing
    /// nothing) if a group with this id exists.
    pub async fn hub_create(
        &self,
        group: &HubGroup,
        members: &[String],
        state: Vec<StateChange>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let created = sqlx::query(
            "INSERT INTO hub_groups (group_id, creator, epoch, last_seq, group_info, created_at)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&group.group_id)
        .bind(&group.creator)
        .bind(group.epoch as i64)
        .bind(group.last_seq as i64)
        .bind(&group.group_info)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !created {
            return Ok(false);
        }
        write_state(&mut tx, &group.group_id, state).await?;
        write_members(&mut tx, &group.group_id, members).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// How many groups `creator` created.
    pub async fn hub_groups_created_by(&self, creator: &str) -> Result<u32> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hub_groups WHERE creator = ?")
            .bind(creator)
            .fetch_one(&self.pool)
            .await?;
        u32::try_from(count).map_err(|_| StorageError::Corrupt("group count".into()))
    }

    /// A group, if it exists.
    pub async fn hub_group(&self, group_id: &[u8]) -> Result<Option<HubGroup>> {
        let row = sqlx::query(
            "SELECT creator, epoch, last_seq, group_info FROM hub_groups WHERE group_id = ?",
        )
        .bind(group_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| HubGroup {
            group_id: group_id.to_vec(),
            creator: row.get(0),
            epoch: row.get::<i64, _>(1) as u64,
            last_seq: row.get::<i64, _>(2) as u64,
            group_info: row.get(3),
        }))
    }

    /// A group's public state rows.
    pub async fn hub_state(&self, group_id: &[u8]) -> Result<HashMap<Vec<u8>, Vec<u8>>> {
        let rows = sqlx::query("SELECT key, value FROM hub_state WHERE group_id = ?")
            .bind(group_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// Whether `jid` has a device in the group's current epoch.
    pub async fn hub_is_member(&self, group_id: &[u8], jid: &str) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 FROM hub_members WHERE group_id = ? AND jid = ?")
                .bind(group_id)
                .bind(jid)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// The groups `jid` has a device in.
    pub async fn hub_groups_of(&self, jid: &str) -> Result<Vec<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT group_id FROM hub_members WHERE jid = ? ORDER BY group_id")
                .bind(jid)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// For a user removed from the group: the position of the commit that
    /// removed them (they may read the log up to it).
    pub async fn hub_former_member_until(&self, group_id: &[u8], jid: &str) -> Result<Option<u64>> {
        Ok(sqlx::query_scalar::<_, i64>(
            "SELECT until_seq FROM hub_former_members WHERE group_id = ? AND jid = ?",
        )
        .bind(group_id)
        .bind(jid)
        .fetch_optional(&self.pool)
        .await?
        .map(|seq| seq as u64))
    }

    /// The members' bare JIDs in the current epoch.
    pub async fn hub_members(&self, group_id: &[u8]) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT jid FROM hub_members WHERE group_id = ? ORDER BY jid")
                .bind(group_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Appends a message to a group's log in one transaction, with the
    /// state it changes. A commit is appended only if its epoch is still
    /// the group's current one (exactly one commit per epoch); another
    /// message only if its epoch is at most `window` epochs old.
    pub async fn hub_append(
        &self,
        group_id: &[u8],
        append: LogAppend<'_>,
        window: u64,
    ) -> Result<Appended> {
        let mut tx = self.pool.begin().await?;
        // The write first: it takes the database's write lock, so the
        // check and the append cannot interleave with another append.
        let claimed = sqlx::query(
            "UPDATE hub_groups SET last_seq = last_seq + 1
             WHERE group_id = ? RETURNING epoch, last_seq",
        )
        .bind(group_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = claimed else {
            return Ok(Appended::NoGroup);
        };
        let current = row.get::<i64, _>(0) as u64;
        let seq = row.get::<i64, _>(1) as u64;
        let acceptable = match &append.commit {
            Some(_) => append.epoch == current,
            None => append.epoch <= current && current - append.epoch <= window,
        };
        if !acceptable {
            return Ok(Appended::StaleEpoch {
                epoch: current,
                seq: seq - 1,
            });
        }
        sqlx::query("INSERT INTO hub_log (group_id, seq, epoch, message) VALUES (?, ?, ?, ?)")
            .bind(group_id)
            .bind(seq as i64)
            .bind(append.epoch as i64)
            .bind(append.message)
            .execute(&mut *tx)
            .await?;
        if let Some(commit) = &append.commit {
            sqlx::query("UPDATE hub_groups SET epoch = ?, group_info = ? WHERE group_id = ?")
                .bind(commit.epoch as i64)
                .bind(commit.group_info)
                .bind(group_id)
                .execute(&mut *tx)
                .await?;
            record_departures(&mut tx, group_id, &commit.members, seq).await?;
            write_members(&mut tx, group_id, &commit.members).await?;
        }
        write_state(&mut tx, group_id, append.state).await?;
        tx.commit().await?;
        Ok(Appended::At(seq))
    }

    /// Up to `max` log entries after position `after`, in order, as
    /// (seq, message).
    pub async fn hub_log(
        &self,
        group_id: &[u8],
        after: u64,
        max: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let rows = sqlx::query(
            "SELECT seq, message FROM hub_log WHERE group_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(group_id)
        .bind(after as i64)
        .bind(max as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| (row.get::<i64, _>(0) as u64, row.get(1)))
            .collect())
    }
}

async fn write_state(
    tx: &mut sqlx::SqliteConnection,
    group_id: &[u8],
    state: Vec<StateChange>,
) -> Result<()> {
    for (key, value) in state {
        match value {
            Some(value) => {
                sqlx::query(
                    "INSERT INTO hub_state (group_id, key, value) VALUES (?, ?, ?)
                     ON CONFLICT (group_id, key) DO UPDATE SET value = excluded.value",
                )
                .bind(group_id)
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM hub_state WHERE group_id = ? AND key = ?")
                    .bind(group_id)
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    Ok(())
}

/// Remembers who a commit at `seq` removes (members now absent), and
/// forgets former membership of those it brings back.
async fn record_departures(
    tx: &mut sqlx::SqliteConnection,
    group_id: &[u8],
    members: &[String],
    seq: u64,
) -> Result<()> {
    let current: Vec<String> = sqlx::query_scalar("SELECT jid FROM hub_members WHERE group_id = ?")
        .bind(group_id)
        .fetch_all(&mut *tx)
        .await?;
    for jid in current.iter().filter(|jid| !members.contains(jid)) {
        sqlx::query(
            "INSERT OR REPLACE INTO hub_former_members (group_id, jid, until_seq) VALUES (?, ?, ?)",
        )
        .bind(group_id)
        .bind(jid)
        .bind(seq as i64)
        .execute(&mut *tx)
        .await?;
    }
    for jid in members {
        sqlx::query("DELETE FROM hub_former_members WHERE group_id = ? AND jid = ?")
            .bind(group_id)
            .bind(jid)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

async fn write_members(
    tx: &mut sqlx::SqliteConnection,
    group_id: &[u8],
    members: &[String],
) -> Result<()> {
    sqlx::query("DELETE FROM hub_members WHERE group_id = ?")
        .bind(group_id)
        .execute(&mut *tx)
        .await?;
    for jid in members {
        sqlx::query("INSERT OR IGNORE INTO hub_members (group_id, jid) VALUES (?, ?)")
            .bind(group_id)
            .bind(jid)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}
