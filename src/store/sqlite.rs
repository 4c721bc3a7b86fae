//! The embedded SQLite store: one file, WAL journal, migrations at open,
//! and one writer task that group-commits audit appends.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Executor, Row};
use tokio::sync::{mpsc, oneshot};

use super::sqlite_approvals as approvals;
use super::{
    AdminKeyRecord, AdminKeyRemoval, AgentRecord, CaRecord, DatabaseRole, EnrollmentRecord, EnrollmentTaken,
    FactorRecord, Lease, Reseal, Revocation, RevokeTarget, SecretRecord, SigningKeyRecord, Store, StoreError, Vote,
};
use crate::audit;
use crate::secrets::Sealed;

pub struct SqliteStore {
    pool: SqlitePool,
    /// Audit appends go to one writer task, which commits whatever has
    /// queued up in one transaction (group commit): one fsync for many
    /// events, each caller still answered only once its event is durable.
    appender: mpsc::Sender<Append>,
}

/// Most events one audit transaction commits.
const MAX_AUDIT_BATCH: usize = 256;

struct Append {
    /// A lease written in the same transaction, before its event.
    lease: Option<Lease>,
    event: audit::Event,
    at_ms: i64,
    done: oneshot::Sender<Result<audit::Record, StoreError>>,
}

impl SqliteStore {
    /// Opens (creating it, mode 0600, if missing) and migrates the database
    /// at `url` (`sqlite://PATH`).
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let open_err = |source| StoreError::Open {
            location: url.to_owned(),
            source,
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(open_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        precreate_private(options.get_filename());
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let (appender, queue) = mpsc::channel(4 * MAX_AUDIT_BATCH);
        tokio::spawn(append_batches(pool.clone(), queue));
        Ok(SqliteStore { pool, appender })
    }

    /// Opens a copy of a database file to read it: read-only, never created
    /// nor migrated (an auditor's copy stays as it was made).
    pub async fn open_copy(path: &Path) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .create_if_missing(false);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                location: path.display().to_string(),
                source,
            })?;
        let (appender, queue) = mpsc::channel(1);
        tokio::spawn(append_batches(pool.clone(), queue));
        Ok(SqliteStore { pool, appender })
    }

    /// Queues a write for the audit writer and waits until it is durable.
    async fn append(
        &self,
        lease: Option<Lease>,
        event: &audit::Event,
        at_ms: i64,
    ) -> Result<audit::Record, StoreError> {
        let (done, written) = oneshot::channel();
        let append = Append {
            lease,
            event: event.clone(),
            at_ms,
            done,
        };
        let closed = || StoreError::AuditWrite("the audit writer has stopped".into());
        self.appender.send(append).await.map_err(|_| closed())?;
        written.await.map_err(|_| closed())?
    }

    /// A store in a file under `dir`.
    pub async fn open_in(dir: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open(&format!("sqlite://{}", dir.join("valetkey.db").display())).await
    }
}

/// The audit writer: takes what has queued, appends it in one transaction,
/// answers each caller. Ends when the store is dropped.
async fn append_batches(pool: SqlitePool, mut queue: mpsc::Receiver<Append>) {
    let mut writer = Writer {
        pool,
        conn: None,
        head: None,
    };
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_AUDIT_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        match writer.commit(&batch).await {
            Ok(records) => {
                for (append, record) in batch.into_iter().zip(records) {
                    let _ = append.done.send(Ok(record));
                }
            }
            Err(e) => {
                let cause = e.to_string();
                for append in batch {
                    let _ = append.done.send(Err(StoreError::AuditWrite(cause.clone())));
                }
            }
        }
    }
}

/// The chain's last `(seq, hash)`.
type Head = (i64, String);

/// The audit writer's connection and what it knows of the chain.
///
/// Every request waits for its event to be durable, so a batch costs one
/// round trip to SQLite's thread, not one per statement: BEGIN, the inserts
/// and COMMIT go as one multi-statement query. The connection is the
/// writer's own, so a transaction a failed statement leaves open is nobody
/// else's, and the writer rolls it back before going on.
/// The chain's head is remembered from the last commit rather than read in
/// the transaction. Another writer on the same file may have appended
/// since: then the batch's first `seq` is taken, the primary key refuses
/// it, and the batch is written again with the head read under the write
/// lock (two more round trips, and certain to chain after the other
/// writer). So two writers can never fork the chain, nor fail each other.
struct Writer {
    pool: SqlitePool,
    conn: Option<SqliteConnection>,
    head: Option<Head>,
}

impl Writer {
    async fn commit(&mut self, batch: &[Append]) -> Result<Vec<audit::Record>, StoreError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(self.pool.acquire().await?.detach()),
        };
        if let Some(head) = self.head.take() {
            match write_batch(conn, Some(head), batch).await {
                Ok(records) => {
                    self.head = records.last().map(|r| (r.seq, r.hash.clone()));
                    return Ok(records);
                }
                // A stale head, or a real failure: the locked path below
                // tells which.
                Err(_) => rollback(conn).await,
            }
        }
        match write_batch(conn, None, batch).await {
            Ok(records) => {
                self.head = records.last().map(|r| (r.seq, r.hash.clone()));
                Ok(records)
            }
            Err(e) => {
                rollback(conn).await;
                Err(e)
            }
        }
    }
}

/// Ends the transaction a failed statement left open (and fails harmlessly
/// when there is none).
async fn rollback(conn: &mut SqliteConnection) {
    let _ = conn.execute("ROLLBACK").await;
}

async fn read_head<'e>(db: impl sqlx::SqliteExecutor<'e>) -> Result<Option<Head>, StoreError> {
    let row = sqlx::query("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        .fetch_optional(db)
        .await?;
    Ok(row.map(|r| (r.get("seq"), r.get("hash"))))
}

const INSERT_LEASE: &str =
    "INSERT INTO leases (id, session_id, agent, env, grants, kid, issued_at, expires_at, revoked_at, session_ends_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
const INSERT_EVENTS: &str =
    "INSERT INTO audit_events (seq, id, at_ms, kind, actor, agent, session_id, env, detail, prev_hash, hash) VALUES ";
const EVENT_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Appends `batch` in one transaction: its leases, then its events in one
/// multi-row insert, then COMMIT. After a remembered `head`, that is one
/// query, BEGIN included. Without one, the transaction begins first and the
/// head is read under its write lock, which no other writer can then move.
async fn write_batch(
    conn: &mut SqliteConnection,
    head: Option<Head>,
    batch: &[Append],
) -> Result<Vec<audit::Record>, StoreError> {
    let mut sql = String::new();
    let (mut seq, mut prev) = match head {
        Some(head) => {
            sql.push_str("BEGIN IMMEDIATE;");
            head
        }
        None => {
            conn.execute("BEGIN IMMEDIATE").await?;
            read_head(&mut *conn).await?.unwrap_or((0, audit::GENESIS.to_owned()))
        }
    };
    for _ in batch.iter().filter(|a| a.lease.is_some()) {
        sql.push_str(INSERT_LEASE);
        sql.push(';');
    }
    sql.push_str(INSERT_EVENTS);
    for i in 0..batch.len() {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(EVENT_ROW);
    }
    sql.push_str(";COMMIT;");

    // Built from the constants above only: every value is a bound parameter.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for lease in batch.iter().filter_map(|a| a.lease.as_ref()) {
        query = bind_lease(query, lease)?;
    }
    let mut records = Vec::with_capacity(batch.len());
    for append in batch {
        seq += 1;
        let record = audit::Record::new(
            seq,
            uuid::Uuid::now_v7().to_string(),
            append.at_ms,
            &append.event,
            &prev,
        );
        prev = record.hash.clone();
        records.push(record);
    }
    for r in &records {
        query = query
            .bind(r.seq)
            .bind(&r.id)
            .bind(r.at_ms)
            .bind(&r.kind)
            .bind(&r.actor)
            .bind(&r.agent)
            .bind(&r.session_id)
            .bind(&r.env)
            .bind(&r.detail)
            .bind(&r.prev_hash)
            .bind(&r.hash);
    }
    query.execute(conn).await?;
    Ok(records)
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

fn bind_lease<'q>(query: SqliteQuery<'q>, l: &'q Lease) -> Result<SqliteQuery<'q>, StoreError> {
    let grants = serde_json::to_string(&l.grants).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(query
        .bind(&l.id)
        .bind(&l.session_id)
        .bind(&l.agent)
        .bind(&l.env)
        .bind(grants)
        .bind(&l.kid)
        .bind(l.issued_at)
        .bind(l.expires_at)
        .bind(l.revoked_at)
        .bind(l.session_ends_at))
}

/// SQLite creates files with the process umask; the store holds hashes and
/// sealed records only, but it is still nobody else's to read.
fn precreate_private(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    if path.as_os_str().is_empty() || path == Path::new(":memory:") {
        return;
    }
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
}

fn conflict(what: &'static str, name: &str) -> impl FnOnce(sqlx::Error) -> StoreError {
    let name = name.to_owned();
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict { what, name },
        _ => StoreError::Database(e),
    }
}

async fn insert_admin_key<'e>(
    db: impl sqlx::Executor<'e, Database = sqlx::Sqlite>,
    k: &AdminKeyRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO admin_keys (name, key_id, key_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?)")
        .bind(&k.name)
        .bind(&k.key_id)
        .bind(&k.key_hash)
        .bind(k.created_at)
        .bind(k.expires_at)
        .execute(db)
        .await?;
    Ok(())
}

fn admin_key_record(r: &SqliteRow) -> AdminKeyRecord {
    AdminKeyRecord {
        name: r.get("name"),
        key_id: r.get("key_id"),
        key_hash: r.get("key_hash"),
        created_at: r.get("created_at"),
        expires_at: r.get("expires_at"),
    }
}

fn agent(row: &SqliteRow) -> AgentRecord {
    AgentRecord {
        name: row.get("name"),
        key_id: row.get("key_id"),
        key_hash: row.get("key_hash"),
        created_at: row.get("created_at"),
    }
}

fn lease(row: &SqliteRow) -> Result<Lease, StoreError> {
    let grants: String = row.get("grants");
    Ok(Lease {
        id: row.get("id"),
        session_id: row.get("session_id"),
        agent: row.get("agent"),
        env: row.get("env"),
        grants: serde_json::from_str(&grants).map_err(|e| StoreError::Corrupt(format!("lease grants: {e}")))?,
        kid: row.get("kid"),
        issued_at: row.get("issued_at"),
        expires_at: row.get("expires_at"),
        revoked_at: row.get("revoked_at"),
        session_ends_at: row.get("session_ends_at"),
    })
}

fn database_role(row: &SqliteRow) -> DatabaseRole {
    DatabaseRole {
        role: row.get("role"),
        lease_id: row.get("lease_id"),
        provider: row.get("provider"),
        env: row.get("env"),
        agent: row.get("agent"),
        database: row.get("database"),
        created_at: row.get("created_at"),
        expires_at: row.get("expires_at"),
        dropped_at: row.get("dropped_at"),
    }
}

fn audit_record(row: &SqliteRow) -> audit::Record {
    audit::Record {
        seq: row.get("seq"),
        id: row.get("id"),
        at_ms: row.get("at_ms"),
        kind: row.get("kind"),
        actor: row.get("actor"),
        agent: row.get("agent"),
        session_id: row.get("session_id"),
        env: row.get("env"),
        detail: row.get("detail"),
        prev_hash: row.get("prev_hash"),
        hash: row.get("hash"),
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn master_key_id(&self) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query("SELECT key_id FROM master_key WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.get(0)))
    }

    async fn claim_master_key_id(&self, key_id: &str, at: i64) -> Result<String, StoreError> {
        sqlx::query("INSERT INTO master_key (id, key_id, set_at) VALUES (1, ?, ?) ON CONFLICT (id) DO NOTHING")
            .bind(key_id)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query("SELECT key_id FROM master_key WHERE id = 1")
            .fetch_one(&self.pool)
            .await?
            .get(0))
    }

    async fn reseal_all(&self, old_id: &str, new_id: &str, at: i64, reseal: &Reseal<'_>) -> Result<usize, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let recorded: Option<String> = sqlx::query("SELECT key_id FROM master_key WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.get(0));
        if recorded.as_deref() != Some(old_id) {
            return Err(StoreError::MasterKeyMoved);
        }
        let fail = |e: crate::secrets::SecretsError| StoreError::Reseal(e.to_string());
        // Every table with sealed records: how to read them, how to write
        // one back, and the record id each was sealed for.
        let tables: [(&str, &str, fn(&str) -> String); 6] = [
            (
                "SELECT approver || ':' || credential_id, nonce, ciphertext FROM approver_passkeys",
                "UPDATE approver_passkeys SET nonce = ?, ciphertext = ? WHERE approver || ':' || credential_id = ?",
                crate::approvals::flow::passkey_record_id,
            ),
            (
                "SELECT name, nonce, ciphertext FROM secrets",
                "UPDATE secrets SET nonce = ?, ciphertext = ? WHERE name = ?",
                crate::secrets::secret_record_id,
            ),
            (
                "SELECT approver, nonce, ciphertext FROM approver_factors",
                "UPDATE approver_factors SET nonce = ?, ciphertext = ? WHERE approver = ?",
                crate::approvals::flow::factor_record_id,
            ),
            (
                "SELECT approver, nonce, ciphertext FROM approver_pending_factors",
                "UPDATE approver_pending_factors SET nonce = ?, ciphertext = ? WHERE approver = ?",
                crate::approvals::flow::pending_factor_record_id,
            ),
            (
                "SELECT kid, nonce, ciphertext FROM signing_keys",
                "UPDATE signing_keys SET nonce = ?, ciphertext = ? WHERE kid = ?",
                crate::credentials::signing_key_record_id,
            ),
            (
                "SELECT id, nonce, ciphertext FROM forward_cas",
                "UPDATE forward_cas SET nonce = ?, ciphertext = ? WHERE id = ?",
                crate::forward::ca_record_id,
            ),
        ];
        let mut count = 0;
        for (select, update, record_id) in tables {
            for row in sqlx::query(select).fetch_all(&mut *tx).await? {
                let id: String = row.get(0);
                let sealed = Sealed {
                    nonce: row.get(1),
                    ciphertext: row.get(2),
                };
                let sealed = reseal(&record_id(&id), &sealed).map_err(fail)?;
                sqlx::query(update)
                    .bind(&sealed.nonce)
                    .bind(&sealed.ciphertext)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                count += 1;
            }
        }
        sqlx::query("UPDATE master_key SET key_id = ?, set_at = ? WHERE id = 1")
            .bind(new_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(count)
    }

    async fn probe_write(&self, now: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE store_probe SET at = ? WHERE id = 1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_agent(&self, a: &AgentRecord) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO agents (name, key_id, key_hash, created_at) VALUES (?, ?, ?, ?)")
            .bind(&a.name)
            .bind(&a.key_id)
            .bind(&a.key_hash)
            .bind(a.created_at)
            .execute(&self.pool)
            .await
            .map_err(conflict("agent", &a.name))?;
        Ok(())
    }

    async fn agent_by_key_id(&self, key_id: &str) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM agents WHERE key_id = ?")
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(agent))
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM agents ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(agent).collect())
    }

    async fn delete_agent(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM agents WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_admin_key(&self, k: &AdminKeyRecord) -> Result<(), StoreError> {
        insert_admin_key(&self.pool, k)
            .await
            .map_err(conflict("admin", &k.name))?;
        Ok(())
    }

    async fn admin_key(&self, key_id: &str) -> Result<Option<AdminKeyRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM admin_keys WHERE key_id = ?")
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(admin_key_record))
    }

    async fn list_admin_keys(&self) -> Result<Vec<AdminKeyRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM admin_keys ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(admin_key_record).collect())
    }

    async fn delete_admin_key(&self, name: &str, now: i64) -> Result<AdminKeyRemoval, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let live: i64 = sqlx::query("SELECT COUNT(*) FROM admin_keys WHERE expires_at > ? AND name <> ?")
            .bind(now)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        let target_live: Option<bool> = sqlx::query("SELECT expires_at > ? FROM admin_keys WHERE name = ?")
            .bind(now)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.get(0));
        let outcome = match target_live {
            None => AdminKeyRemoval::NotFound,
            Some(true) if live == 0 => AdminKeyRemoval::LastLive,
            Some(_) => {
                sqlx::query("DELETE FROM admin_keys WHERE name = ?")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                AdminKeyRemoval::Removed
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn replace_bootstrap_admin_key(&self, k: &AdminKeyRecord, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let live: i64 = sqlx::query("SELECT COUNT(*) FROM admin_keys WHERE expires_at > ?")
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        if live > 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM admin_keys WHERE name = ?")
            .bind(&k.name)
            .execute(&mut *tx)
            .await?;
        insert_admin_key(&mut *tx, k).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn rotate_signing_key(&self, k: &SigningKeyRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL")
            .bind(k.created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, public_key, nonce, ciphertext, created_at, retired_at) VALUES (?, ?, ?, ?, ?, NULL)",
        )
        .bind(&k.kid)
        .bind(&k.public_key)
        .bind(&k.sealed.nonce)
        .bind(&k.sealed.ciphertext)
        .bind(k.created_at)
        .execute(&mut *tx)
        .await
        .map_err(conflict("signing key", &k.kid))?;
        tx.commit().await?;
        Ok(())
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at DESC, rowid DESC")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| SigningKeyRecord {
                kid: r.get("kid"),
                public_key: r.get("public_key"),
                sealed: Sealed {
                    nonce: r.get("nonce"),
                    ciphertext: r.get("ciphertext"),
                },
                created_at: r.get("created_at"),
                retired_at: r.get("retired_at"),
            })
            .collect())
    }

    async fn last_expiry_signed_by(&self, kid: &str) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query("SELECT MAX(expires_at) FROM leases WHERE kid = ?")
            .bind(kid)
            .fetch_one(&self.pool)
            .await?
            .get(0))
    }

    async fn current_ca(&self) -> Result<Option<CaRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM forward_cas WHERE retired_at IS NULL")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| CaRecord {
            id: r.get("id"),
            cert_der: r.get("cert_der"),
            sealed: Sealed {
                nonce: r.get("nonce"),
                ciphertext: r.get("ciphertext"),
            },
            created_at: r.get("created_at"),
        }))
    }

    async fn adopt_ca(&self, ca: &CaRecord) -> Result<CaRecord, StoreError> {
        // The partial unique index lets one current row in; a broker that
        // lost the race reads the winner's.
        sqlx::query(
            "INSERT INTO forward_cas (id, cert_der, nonce, ciphertext, created_at, retired_at) VALUES (?, ?, ?, ?, ?, NULL) ON CONFLICT DO NOTHING",
        )
        .bind(&ca.id)
        .bind(&ca.cert_der)
        .bind(&ca.sealed.nonce)
        .bind(&ca.sealed.ciphertext)
        .bind(ca.created_at)
        .execute(&self.pool)
        .await?;
        self.current_ca()
            .await?
            .ok_or_else(|| StoreError::Corrupt("the forward proxy's CA was stored, then not found".into()))
    }

    async fn rotate_ca(&self, ca: &CaRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("UPDATE forward_cas SET retired_at = ? WHERE retired_at IS NULL")
            .bind(ca.created_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO forward_cas (id, cert_der, nonce, ciphertext, created_at, retired_at) VALUES (?, ?, ?, ?, ?, NULL)",
        )
        .bind(&ca.id)
        .bind(&ca.cert_der)
        .bind(&ca.sealed.nonce)
        .bind(&ca.sealed.ciphertext)
        .bind(ca.created_at)
        .execute(&mut *tx)
        .await
        .map_err(conflict("forward proxy CA", &ca.id))?;
        tx.commit().await?;
        Ok(())
    }

    async fn put_secret(&self, s: &SecretRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO secrets (name, nonce, ciphertext, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (name) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext,
             updated_at = excluded.updated_at",
        )
        .bind(&s.name)
        .bind(&s.sealed.nonce)
        .bind(&s.sealed.ciphertext)
        .bind(s.created_at)
        .bind(s.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn secret_ages(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT name, updated_at FROM secrets ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get("name"), r.get("updated_at"))).collect())
    }

    async fn delete_secret(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM secrets WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn secret(&self, name: &str) -> Result<Option<SecretRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM secrets WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| SecretRecord {
            name: r.get("name"),
            sealed: Sealed {
                nonce: r.get("nonce"),
                ciphertext: r.get("ciphertext"),
            },
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
        }))
    }

    async fn insert_lease(&self, l: &Lease) -> Result<(), StoreError> {
        bind_lease(sqlx::query(INSERT_LEASE), l)?
            .execute(&self.pool)
            .await
            .map_err(conflict("lease", &l.id))?;
        Ok(())
    }

    async fn insert_lease_with_event(
        &self,
        lease: &Lease,
        event: &audit::Event,
        at_ms: i64,
    ) -> Result<audit::Record, StoreError> {
        self.append(Some(lease.clone()), event, at_ms).await
    }

    async fn lease(&self, id: &str) -> Result<Option<Lease>, StoreError> {
        let row = sqlx::query("SELECT * FROM leases WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(lease).transpose()
    }

    async fn live_leases(&self, now: i64, limit: i64) -> Result<Vec<Lease>, StoreError> {
        sqlx::query(
            "SELECT * FROM leases WHERE revoked_at IS NULL AND expires_at > ? ORDER BY issued_at DESC, id LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(lease)
        .collect()
    }

    async fn session_agent(&self, session_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT agent FROM leases WHERE session_id = ? LIMIT 1")
            .bind(session_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get("agent")))
    }

    async fn session_leases(&self, session_id: &str) -> Result<Vec<Lease>, StoreError> {
        sqlx::query("SELECT * FROM leases WHERE session_id = ? ORDER BY issued_at, id")
            .bind(session_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(lease)
            .collect()
    }

    async fn revoke(&self, target: &RevokeTarget, now: i64) -> Result<Vec<Revocation>, StoreError> {
        let (select, value) = match target {
            RevokeTarget::Lease(id) => (
                "SELECT id, COALESCE(session_ends_at, expires_at) AS ends FROM leases WHERE id = ? AND revoked_at IS NULL AND COALESCE(session_ends_at, expires_at) > ?",
                id,
            ),
            RevokeTarget::Session(sid) => (
                "SELECT id, COALESCE(session_ends_at, expires_at) AS ends FROM leases WHERE session_id = ? AND revoked_at IS NULL AND COALESCE(session_ends_at, expires_at) > ?",
                sid,
            ),
            RevokeTarget::Agent(name) => (
                "SELECT id, COALESCE(session_ends_at, expires_at) AS ends FROM leases WHERE agent = ? AND revoked_at IS NULL AND COALESCE(session_ends_at, expires_at) > ?",
                name,
            ),
        };
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(select).bind(value).bind(now).fetch_all(&mut *tx).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.get("id");
            // The credential's own end: a session's, not its last heartbeat's,
            // so the revocation outlives every copy of the credential.
            let expires_at: i64 = row.get("ends");
            sqlx::query("UPDATE leases SET revoked_at = ? WHERE id = ?")
                .bind(now)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            let seq: i64 = sqlx::query(
                "INSERT INTO revocations (lease_id, expires_at, revoked_at) VALUES (?, ?, ?) RETURNING seq",
            )
            .bind(&id)
            .bind(expires_at)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
            out.push(Revocation {
                seq,
                lease_id: id,
                expires_at,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn keep_session_alive(
        &self,
        session_id: &str,
        until: i64,
        now: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            // Compared with the later of the caller's clock and SQLite's own
            // at the write, so a heartbeat handled late cannot revive a
            // session that lapsed meanwhile; a deadline never moves back.
            "UPDATE leases SET expires_at = MAX(expires_at, MIN(?, session_ends_at))
             WHERE session_id = ? AND session_ends_at IS NOT NULL AND revoked_at IS NULL
               AND expires_at > MAX(?, unixepoch()) AND session_ends_at > MAX(?, unixepoch())
             RETURNING id, expires_at",
        )
        .bind(until)
        .bind(session_id)
        .bind(now)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get("id"), r.get("expires_at"))).collect())
    }

    async fn session_deadlines(&self, now: i64) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, expires_at FROM leases
             WHERE session_ends_at IS NOT NULL AND revoked_at IS NULL AND expires_at > ?",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get("id"), r.get("expires_at"))).collect())
    }

    async fn insert_database_roles(&self, roles: &[DatabaseRole]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for r in roles {
            sqlx::query(
                "INSERT INTO database_roles (role, lease_id, provider, env, agent, database, created_at, expires_at, dropped_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&r.role)
            .bind(&r.lease_id)
            .bind(&r.provider)
            .bind(&r.env)
            .bind(&r.agent)
            .bind(&r.database)
            .bind(r.created_at)
            .bind(r.expires_at)
            .bind(r.dropped_at)
            .execute(&mut *tx)
            .await
            .map_err(conflict("database role", &r.role))?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn database_roles_due(&self, now: i64) -> Result<Vec<DatabaseRole>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.* FROM database_roles r LEFT JOIN leases l ON l.id = r.lease_id
             WHERE r.dropped_at IS NULL
               AND (r.expires_at <= ? OR l.expires_at <= ? OR l.revoked_at IS NOT NULL OR l.id IS NULL)
             ORDER BY r.expires_at",
        )
        .bind(now)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(database_role).collect())
    }

    async fn live_database_roles(&self) -> Result<Vec<DatabaseRole>, StoreError> {
        let rows = sqlx::query("SELECT * FROM database_roles WHERE dropped_at IS NULL ORDER BY env, created_at, role")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(database_role).collect())
    }

    async fn lease_database_roles(&self, lease_id: &str) -> Result<Vec<DatabaseRole>, StoreError> {
        let rows = sqlx::query("SELECT * FROM database_roles WHERE lease_id = ? AND dropped_at IS NULL ORDER BY role")
            .bind(lease_id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(database_role).collect())
    }

    async fn database_role_extended(&self, role: &str, expires_at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE database_roles SET expires_at = ? WHERE role = ? AND dropped_at IS NULL")
            .bind(expires_at)
            .bind(role)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn database_role_dropped(&self, role: &str, at: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE database_roles SET dropped_at = ? WHERE role = ? AND dropped_at IS NULL")
            .bind(at)
            .bind(role)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn revocations_since(&self, seq: i64, now: i64) -> Result<Vec<Revocation>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, lease_id, expires_at FROM revocations WHERE seq > ? AND expires_at > ? ORDER BY seq",
        )
        .bind(seq)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Revocation {
                seq: r.get("seq"),
                lease_id: r.get("lease_id"),
                expires_at: r.get("expires_at"),
            })
            .collect())
    }

    async fn hold_request(
        &self,
        approval: &crate::approvals::Approval,
        most_open: i64,
        now_ms: i64,
    ) -> Result<Option<(crate::approvals::Approval, bool)>, StoreError> {
        approvals::hold_request(&self.pool, approval, most_open, now_ms).await
    }

    async fn approval(&self, id: &str) -> Result<Option<crate::approvals::Approval>, StoreError> {
        approvals::approval(&self.pool, id).await
    }

    async fn approved_for(
        &self,
        session_id: &str,
        digest: &str,
        now_ms: i64,
    ) -> Result<Option<crate::approvals::Approval>, StoreError> {
        approvals::approved_for(&self.pool, session_id, digest, now_ms).await
    }

    async fn open_approvals(&self) -> Result<Vec<crate::approvals::Approval>, StoreError> {
        approvals::open_approvals(&self.pool).await
    }

    async fn vote_approval(
        &self,
        id: &str,
        approver: &str,
        factor: &str,
        now_ms: i64,
        execute_by_ms: i64,
    ) -> Result<Vote, StoreError> {
        approvals::vote(&self.pool, id, approver, factor, now_ms, execute_by_ms).await
    }

    async fn deny_approval(&self, id: &str, approver: &str, reason: &str, now_ms: i64) -> Result<bool, StoreError> {
        approvals::deny(&self.pool, id, approver, reason, now_ms).await
    }

    async fn spend_approval(&self, id: &str, session_id: &str, digest: &str, now_ms: i64) -> Result<bool, StoreError> {
        approvals::spend(&self.pool, id, session_id, digest, now_ms).await
    }

    async fn expire_approvals(&self, now_ms: i64) -> Result<Vec<crate::approvals::Approval>, StoreError> {
        approvals::expire(&self.pool, now_ms).await
    }

    async fn insert_enrollment(&self, enrollment: &EnrollmentRecord) -> Result<(), StoreError> {
        approvals::insert_enrollment(&self.pool, enrollment).await
    }

    async fn redeem_enrollment(
        &self,
        code_hash: &[u8],
        approver: &str,
        pending: &Sealed,
        cutoff: i64,
        now: i64,
    ) -> Result<EnrollmentTaken, StoreError> {
        approvals::redeem_enrollment(&self.pool, code_hash, approver, pending, cutoff, now).await
    }

    async fn take_enrollment(
        &self,
        code_hash: &[u8],
        approver: &str,
        cutoff: i64,
        now: i64,
    ) -> Result<EnrollmentTaken, StoreError> {
        approvals::take_enrollment(&self.pool, code_hash, approver, cutoff, now).await
    }

    async fn put_passkey(
        &self,
        approver: &str,
        credential_id: &str,
        sealed: &Sealed,
        now: i64,
    ) -> Result<bool, StoreError> {
        approvals::put_passkey(&self.pool, approver, credential_id, sealed, now).await
    }

    async fn awaiting_vouch(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        approvals::awaiting_vouch(&self.pool).await
    }

    async fn update_passkey(&self, approver: &str, credential_id: &str, sealed: &Sealed) -> Result<(), StoreError> {
        approvals::update_passkey(&self.pool, approver, credential_id, sealed).await
    }

    async fn vouch_factors(
        &self,
        approver: &str,
        totp: Option<(&Sealed, i64, &[u8])>,
        voucher: &str,
        cutoff: i64,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        approvals::vouch_factors(&self.pool, approver, totp, voucher, cutoff, now).await
    }

    async fn passkeys(&self, approver: &str) -> Result<Vec<(String, Sealed)>, StoreError> {
        approvals::passkeys(&self.pool, approver).await
    }

    async fn pending_factor(&self, approver: &str) -> Result<Option<(Sealed, Option<i64>)>, StoreError> {
        approvals::pending_factor(&self.pool, approver).await
    }

    async fn confirm_factor(
        &self,
        approver: &str,
        sealed: &Sealed,
        step: i64,
        configured: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        approvals::confirm_factor(&self.pool, approver, sealed, step, configured, now).await
    }

    async fn factor(&self, approver: &str) -> Result<Option<FactorRecord>, StoreError> {
        approvals::factor(&self.pool, approver).await
    }

    async fn factors(&self) -> Result<Vec<FactorRecord>, StoreError> {
        approvals::factors(&self.pool).await
    }

    async fn take_factor_step(
        &self,
        approver: &str,
        step: i64,
        attempt: i64,
        lock_after: i64,
    ) -> Result<bool, StoreError> {
        approvals::take_factor_step(&self.pool, approver, step, attempt, lock_after).await
    }

    async fn reserve_attempt(
        &self,
        approver: &str,
        lock_after: i64,
        now: i64,
        lock_until: i64,
    ) -> Result<Option<i64>, StoreError> {
        approvals::reserve_attempt(&self.pool, approver, lock_after, now, lock_until).await
    }

    async fn append_audit(&self, event: &audit::Event, at_ms: i64) -> Result<audit::Record, StoreError> {
        self.append(None, event, at_ms).await
    }

    async fn audit_events(&self) -> Result<Vec<audit::Record>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_events ORDER BY seq")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(audit_record).collect())
    }

    async fn session_event(&self, id: &str, session_id: &str) -> Result<Option<audit::Record>, StoreError> {
        let row = sqlx::query("SELECT * FROM audit_events WHERE id = ? AND session_id = ?")
            .bind(id)
            .bind(session_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(audit_record))
    }

    async fn search_audit(&self, filter: &audit::Filter) -> Result<Vec<audit::Record>, StoreError> {
        let mut query = sqlx::QueryBuilder::new("SELECT * FROM audit_events WHERE 1 = 1");
        if let Some(agent) = &filter.agent {
            query.push(" AND agent = ").push_bind(agent);
        }
        if let Some(env) = &filter.env {
            query.push(" AND env = ").push_bind(env);
        }
        if let Some(kind) = &filter.kind {
            query.push(" AND kind = ").push_bind(kind);
        }
        if let Some(since) = filter.since_ms {
            query.push(" AND at_ms >= ").push_bind(since);
        }
        if let Some(after) = filter.after_seq {
            query.push(" AND seq > ").push_bind(after);
        }
        query.push(if filter.newest {
            " ORDER BY seq DESC"
        } else {
            " ORDER BY seq"
        });
        query.push(" LIMIT ").push_bind(filter.limit.max(0));
        let rows = query.build().fetch_all(&self.pool).await?;
        let mut records: Vec<audit::Record> = rows.iter().map(audit_record).collect();
        if filter.newest {
            records.reverse();
        }
        Ok(records)
    }

    async fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        read_head(&self.pool).await
    }

    async fn insert_checkpoint(&self, c: &audit::Checkpoint) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit_checkpoints (seq, head_hash, at_ms, kid, signature) VALUES (?, ?, ?, ?, ?)")
            .bind(c.seq)
            .bind(&c.head_hash)
            .bind(c.at_ms)
            .bind(&c.kid)
            .bind(&c.signature)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn last_checkpoint_seq(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT MAX(seq) FROM audit_checkpoints")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn checkpoints(&self) -> Result<Vec<audit::Checkpoint>, StoreError> {
        let rows = sqlx::query("SELECT * FROM audit_checkpoints ORDER BY seq")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| audit::Checkpoint {
                seq: r.get("seq"),
                head_hash: r.get("head_hash"),
                at_ms: r.get("at_ms"),
                kid: r.get("kid"),
                signature: r.get("signature"),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A migration a database has applied must never change: sqlx refuses
    /// to open a store whose applied migration's checksum differs. Add a
    /// new one instead, and its line here.
    #[test]
    fn landed_migrations_never_change() {
        const LANDED: [(&str, &str); 11] = [
            ("0001_init.sql", "e8691246d86cdfe9"),
            ("0002_audit_checkpoints.sql", "a6527b1604e48988"),
            ("0003_database_roles.sql", "910ef8de985fbbed"),
            ("0004_admins_and_probe.sql", "7d5f6eaf19924a5c"),
            ("0005_master_key.sql", "ad872a3edf7013a8"),
            ("0006_approvals.sql", "f784ee278659e8f8"),
            ("0007_passkeys.sql", "f17da51bae402dca"),
            ("0008_vouching.sql", "cf6a3bee05b95cb1"),
            ("0009_held_paths.sql", "ae9ec1c0b32f986c"),
            ("0010_sessions.sql", "49d27d4d3be635fc"),
            ("0011_forward_ca.sql", "3f5dc6d1be6b488d"),
        ];
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        let mut found: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        found.sort();
        let listed: Vec<&str> = LANDED.iter().map(|(name, _)| *name).collect();
        assert_eq!(found, listed, "every migration is listed here once it lands");
        for (name, sha) in LANDED {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
            assert_eq!(
                &digest[..16],
                sha,
                "{name} changed after it landed: add a new migration instead"
            );
        }
    }

    fn event(n: i64) -> audit::Event {
        audit::Event {
            kind: audit::EventKind::ProxyAllowed,
            actor: "agent:a".into(),
            agent: Some("a".into()),
            session_id: None,
            env: Some("staging".into()),
            detail: serde_json::json!({ "n": n }),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_form_one_unbroken_chain() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open_in(dir.path()).await.unwrap());
        let mut tasks = Vec::new();
        for n in 0..400 {
            let store = store.clone();
            tasks.push(tokio::spawn(
                async move { store.append_audit(&event(n), n).await.unwrap() },
            ));
        }
        let mut answered = Vec::new();
        for t in tasks {
            answered.push(t.await.unwrap());
        }
        let stored = store.audit_events().await.unwrap();
        assert_eq!(stored.len(), 400);
        assert_eq!(audit::verify(&stored, &[], |_| false).broken, None);
        // Each caller was answered with the record that was stored for it.
        for record in &answered {
            assert_eq!(&stored[(record.seq - 1) as usize], record);
        }
    }

    /// The server and a CLI command are two stores on one file, each writer
    /// remembering the head it last wrote: each must notice the other's
    /// appends and chain after them, never fork.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_writers_on_one_file_chain_after_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let server = Arc::new(SqliteStore::open_in(dir.path()).await.unwrap());
        let cli = Arc::new(SqliteStore::open_in(dir.path()).await.unwrap());
        let mut tasks = Vec::new();
        for n in 0..200 {
            let store = if n % 3 == 0 { cli.clone() } else { server.clone() };
            tasks.push(tokio::spawn(async move { store.append_audit(&event(n), n).await }));
        }
        for t in tasks {
            t.await.unwrap().expect("every append lands");
        }
        // Strictly alternating, so each writer's remembered head is stale.
        for n in 200..220 {
            let store = if n % 2 == 0 { &cli } else { &server };
            store.append_audit(&event(n), n).await.unwrap();
        }
        let stored = server.audit_events().await.unwrap();
        assert_eq!(stored.len(), 220);
        assert_eq!(audit::verify(&stored, &[], |_| false).broken, None);
        let mut ns: Vec<i64> = stored.iter().map(|r| r.at_ms).collect();
        ns.sort();
        assert_eq!(ns, (0..220).collect::<Vec<_>>());
    }
}
