//! The writes of one operation, applied in one transaction.
//!
//! An operation reads what it needs first, collects its writes here (its
//! own records and, in [`Journal`], the MLS state openmls wrote), and
//! [`ClientStore::apply`](super::ClientStore::apply) writes them in one
//! short transaction at the end, so the database's write lock is held for
//! the writes only, never across cryptography. A failed operation drops
//! its batch: nothing of it reaches the database.

use std::borrow::Cow;

use rusqlite::types::{ToSqlOutput, Value};
use rusqlite::ToSql;

use crate::mls_storage::Journal;

/// A value bound to a statement of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl From<i64> for Arg {
    fn from(value: i64) -> Self {
        Arg::Int(value)
    }
}

impl From<u64> for Arg {
    /// Log positions and counts; SQLite integers are signed 64-bit.
    fn from(value: u64) -> Self {
        Arg::Int(value as i64)
    }
}

impl From<bool> for Arg {
    fn from(value: bool) -> Self {
        Arg::Int(value.into())
    }
}

impl From<&str> for Arg {
    fn from(value: &str) -> Self {
        Arg::Text(value.to_owned())
    }
}

impl From<String> for Arg {
    fn from(value: String) -> Self {
        Arg::Text(value)
    }
}

impl From<&[u8]> for Arg {
    fn from(value: &[u8]) -> Self {
        Arg::Blob(value.to_vec())
    }
}

impl From<Vec<u8>> for Arg {
    fn from(value: Vec<u8>) -> Self {
        Arg::Blob(value)
    }
}

impl<T: Into<Arg>> From<Option<T>> for Arg {
    fn from(value: Option<T>) -> Self {
        value.map_or(Arg::Null, Into::into)
    }
}

impl ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Arg::Null => ToSqlOutput::Owned(Value::Null),
            Arg::Int(value) => ToSqlOutput::from(*value),
            Arg::Text(value) => ToSqlOutput::from(value.as_str()),
            Arg::Blob(value) => ToSqlOutput::from(value.as_slice()),
        })
    }
}

/// One statement of a batch.
#[derive(Debug)]
pub(super) struct Statement {
    /// SQL with `?` placeholders.
    pub(super) sql: Cow<'static, str>,
    /// Bound in order.
    pub(super) args: Vec<Arg>,
}

/// The writes of one operation.
#[derive(Debug, Default)]
pub struct Batch {
    statements: Vec<Statement>,
    journal: Journal,
}

impl Batch {
    /// Adds a statement (`?` placeholders, bound in order to `args`).
    pub fn add<const N: usize>(&mut self, sql: &'static str, args: [Arg; N]) {
        debug_assert_eq!(sql.matches('?').count(), N, "{sql}");
        self.statements.push(Statement {
            sql: Cow::Borrowed(sql),
            args: args.into(),
        });
    }

    /// The MLS state written by providers on this batch.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The statements, the MLS state's last.
    pub(super) fn into_statements(mut self) -> Vec<Statement> {
        let journal = std::mem::take(&mut self.journal);
        for (key, value) in journal.into_changes() {
            match value {
                Some(value) => self.add(
                    "INSERT INTO mls_state (key, value) VALUES (?, ?)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [Arg::Blob(key), Arg::Blob(value)],
                ),
                None => self.add("DELETE FROM mls_state WHERE key = ?", [Arg::Blob(key)]),
            }
        }
        self.statements
    }
}
