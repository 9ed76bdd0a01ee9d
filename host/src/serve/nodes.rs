//! This node among the others on one store: its stable id, joining, the heartbeat, the
//! takeover of dead nodes' leases, and leadership for the periodic jobs only one node
//! runs.
//!
//! The node id is what this node's leases carry, so it must survive a restart: a
//! restarted node then finds its own leases at once (and gives them back, due now)
//! instead of waiting for them to run out. It is `[server] node_id` when given; else on
//! SQLite the id kept in a file beside the database (made from the host name the first
//! time), and on PostgreSQL the host name with `[server] node_suffix`. Two processes on
//! one id would share leases, so a second one is refused: on SQLite by a lock on a file
//! beside the database (one store, one node), on PostgreSQL by a live heartbeat under the
//! id in the `nodes` table.
//!
//! Every heartbeat interval the node writes its heartbeat, expires the leases of nodes
//! whose heartbeat is older than `dead_after_heartbeats` intervals (they are leased again
//! at once by whoever looks first), and claims or renews leadership for a term of the same
//! length. Leadership only saves work: the jobs it gates are idempotent.

use super::clock::now_ms;
use crate::config::{Pipeline, valid_node_name};
use crate::store::{Joined, NodeJoin, Store};
use anyhow::{Context, bail};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Who this process is among the nodes of its store.
pub struct Node {
    /// The stable node id its leases carry.
    pub id: String,
    /// New for every process: tells this process from an earlier or a rival one.
    pub incarnation: String,
    pub started_at_ms: i64,
    /// How often the heartbeat is written.
    pub heartbeat: Duration,
    /// A heartbeat older than this marks a node dead.
    pub dead_after: Duration,
    pub(super) leader: AtomicBool,
    /// The monotonic origin of `confirmed_ms`.
    origin: Instant,
    /// When the store last confirmed this process as the id's current incarnation (its
    /// join or a heartbeat), in milliseconds since `origin`. A process that was stopped
    /// (SIGSTOP, a VM pause, a long swap) sees this go stale at once on waking, since
    /// the monotonic clock ran on while it slept.
    confirmed_ms: AtomicU64,
    /// The HTTP address it joined with, to join again into a re-created database.
    address: std::sync::OnceLock<String>,
    /// Held for the life of the process on SQLite: no second process on the same store.
    _lock: Option<File>,
}

impl Node {
    /// Whether this node led at its last heartbeat (then it runs the single-node jobs).
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    pub(super) fn dead_after_ms(&self) -> i64 {
        self.dead_after.as_millis() as i64
    }

    /// Records that the store just confirmed this process as the id's incarnation.
    pub(super) fn confirm(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.confirmed_ms.store(ms, Ordering::SeqCst);
    }

    /// Whether this process was confirmed as the id's incarnation recently enough that
    /// no other process can have taken the id over since: the others wait `dead_after`
    /// after the last heartbeat; half of it leaves room for the check's own time. A
    /// lease checked without a store round trip is only trusted while this holds.
    pub fn confirmed_recently(&self) -> bool {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let since = now.saturating_sub(self.confirmed_ms.load(Ordering::SeqCst));
        u128::from(since) < self.dead_after.as_millis() / 2
    }

    /// Works out the node id and, on SQLite, takes the store's lock.
    pub fn resolve(pipeline: &Pipeline) -> anyhow::Result<Node> {
        let s = &pipeline.server;
        let (id, lock) = match pipeline.store.url.strip_prefix("sqlite://") {
            Some(path) => {
                let lock = lock_store(Path::new(path))?;
                let id = match &s.node_id {
                    Some(id) => id.clone(),
                    None => kept_id(Path::new(path), s.node_suffix.as_deref())?,
                };
                (id, Some(lock))
            }
            None => {
                let id = match &s.node_id {
                    Some(id) => id.clone(),
                    None => derived_id(s.node_suffix.as_deref()),
                };
                (id, None)
            }
        };
        let incarnation = format!(
            "{}-{}",
            std::process::id(),
            hex::encode(rand::random::<[u8; 8]>())
        );
        Ok(Node {
            id,
            incarnation,
            started_at_ms: now_ms(),
            heartbeat: s.heartbeat,
            dead_after: s.heartbeat * s.dead_after_heartbeats,
            leader: AtomicBool::new(false),
            origin: Instant::now(),
            // Nothing is leased before the join, which confirms it again.
            confirmed_ms: AtomicU64::new(0),
            address: std::sync::OnceLock::new(),
            _lock: lock,
        })
    }

    /// Joins again after the database was dropped and created again: the new `nodes`
    /// table has no row for this id, so without it the next heartbeat would read as
    /// another process having taken the id over, and the node would stop.
    pub async fn rejoin(&self, store: &Store) -> anyhow::Result<()> {
        let address = self.address.get().cloned().unwrap_or_default();
        self.join(store, &address).await.map(|_| ())
    }

    /// Joins the store under this node's id, waiting while another process's heartbeat
    /// under the id is fresh (a node killed a moment ago) and refusing to start if it
    /// goes on beating (a second live process on the id). On SQLite the lock already
    /// says no other process runs, so the row's heartbeat is not waited for.
    pub async fn join(&self, store: &Store, address: &str) -> anyhow::Result<u64> {
        let _ = self.address.set(address.to_owned());
        let me = NodeJoin {
            id: self.id.clone(),
            incarnation: self.incarnation.clone(),
            address: address.to_owned(),
            started_at_ms: self.started_at_ms,
        };
        let dead_after_ms = if self._lock.is_some() {
            0
        } else {
            self.dead_after_ms()
        };
        // A killed node's last heartbeat goes stale within `dead_after`; one more beat
        // of room for a slow store.
        let give_up = Instant::now() + self.dead_after + self.heartbeat;
        let mut waited = false;
        loop {
            match store
                .join_node(&me, now_ms(), dead_after_ms)
                .await
                .with_context(|| format!("node {:?} cannot join the store", self.id))?
            {
                Joined::Joined { reclaimed } => {
                    self.confirm();
                    return Ok(reclaimed);
                }
                Joined::InUse {
                    address,
                    heartbeat_at_ms,
                } => {
                    if Instant::now() >= give_up {
                        bail!(
                            "node id {:?} is in use by a live node at {address} (its last \
                             heartbeat {} ms ago); give each node its own [server] node_id \
                             or node_suffix",
                            self.id,
                            now_ms() - heartbeat_at_ms
                        );
                    }
                    if !waited {
                        waited = true;
                        tracing::warn!(node = %self.id, other = %address, "another process beat under this node id a moment ago; waiting for its heartbeat to go stale");
                    }
                    tokio::time::sleep(self.heartbeat).await;
                }
            }
        }
    }
}

/// Takes the lock on `<db>.lock` beside the SQLite database, or says which store is in
/// use by another process.
fn lock_store(db: &Path) -> anyhow::Result<File> {
    let path = beside(db, "lock");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the store's lock {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another sluice serve uses the store {} (it holds {}); a SQLite store takes one node",
            db.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// `<db>.<ext>`, beside the database file.
fn beside(db: &Path, ext: &str) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{ext}"));
    db.with_file_name(name)
}

/// The node id kept in `<db>.node-id`, written there the first time (from the host name
/// and `suffix`), so the id stays when the host is renamed.
fn kept_id(db: &Path, suffix: Option<&str>) -> anyhow::Result<String> {
    let path = beside(db, "node-id");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let id = text.trim();
            if !valid_node_name(id, 64) {
                bail!(
                    "{} does not hold a node id (1-64 of A-Z a-z 0-9 - _ .); remove it to \
                     make a new one, or set [server] node_id",
                    path.display()
                );
            }
            Ok(id.to_owned())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = derived_id(suffix);
            // Written whole or not at all: a crash leaves no half id behind.
            let tmp = beside(db, "node-id.tmp");
            let mut f =
                File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
            f.write_all(format!("{id}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The host name, cut to what a node id may hold, with `-suffix` when given.
fn derived_id(suffix: Option<&str>) -> String {
    let host: String = hostname()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(47)
        .collect();
    let host = host.trim_start_matches('.');
    let host = if host.is_empty() { "sluice" } else { host };
    match suffix {
        Some(s) => format!("{host}-{s}"),
        None => host.to_owned(),
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_derived_id_is_a_valid_node_name() {
        assert!(valid_node_name(&derived_id(None), 64));
        assert!(valid_node_name(&derived_id(Some("b-2")), 64));
        assert!(derived_id(Some("b-2")).ends_with("-b-2"));
    }

    #[test]
    fn the_kept_id_survives_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let first = kept_id(&db, Some("x")).unwrap();
        assert_eq!(kept_id(&db, Some("y")).unwrap(), first);
        std::fs::write(beside(&db, "node-id"), "bad id\n").unwrap();
        let e = kept_id(&db, None).unwrap_err().to_string();
        assert!(e.contains("s.db.node-id"), "{e}");
    }

    #[test]
    fn a_second_lock_on_one_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let _held = lock_store(&db).unwrap();
        let e = lock_store(&db).unwrap_err().to_string();
        assert!(e.contains("another sluice serve"), "{e}");
    }
}
