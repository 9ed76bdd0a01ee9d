//! The store's one error type; every message names the operation and the id involved.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The thing the operation names does not exist (or belongs to another tenant);
    /// the text names the operation and the id, e.g. `get_relay: relay "eu-1"`.
    #[error("{0} not found")]
    NotFound(String),
    /// The write would collide with what is there (e.g. a tenant id already taken).
    #[error("{0} already exists")]
    Conflict(String),
    /// The caller passed something the store refuses to write; the text names the
    /// operation and quotes the bad value.
    #[error("{0}")]
    Invalid(String),
    /// The database said no; `context` names the operation and the id.
    #[error("{context}")]
    Database {
        context: String,
        #[source]
        source: sqlx::Error,
    },
    /// Migrations could not be applied on open.
    #[error("migrating the {backend} store")]
    Migrate {
        backend: &'static str,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// The URL names no store Sluice knows.
    #[error("store url {0:?}: expected sqlite://PATH or postgres://...")]
    Url(String),
    /// A stored value could not be read back (a column holds what the code never writes).
    #[error("{context}: stored value {value:?} is not valid")]
    Corrupt { context: String, value: String },
    /// COMMIT failed: whether the write reached the disk is unknown. The caller should
    /// answer "try again" (with an idempotency key a retry is safe).
    #[error("{0}; whether it was stored is unknown")]
    CommitUnknown(String),
    /// The store could not be written at all (e.g. no write connection could be had);
    /// nothing was written. The text names the operation and the cause.
    #[error("{0}")]
    Unavailable(String),
    /// The group-commit writer task is gone (the runtime is shutting down).
    #[error("accept: the store's writer task has stopped")]
    WriterGone,
}

impl StoreError {
    /// Wraps a database error with the operation (and id) it happened in.
    pub(crate) fn db(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Database { context, source }
    }

    pub(crate) fn invalid(op: &str, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Invalid(format!("{op}: {reason}"))
    }

    pub(crate) fn not_found(op: &str, what: &str, id: &str) -> StoreError {
        StoreError::NotFound(format!("{op}: {what} {id:?}"))
    }

    pub(crate) fn conflict(op: &str, what: &str, id: &str) -> StoreError {
        StoreError::Conflict(format!("{op}: {what} {id:?}"))
    }
}
