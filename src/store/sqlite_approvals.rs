//! SQLite's side of held requests and approvers' factors. Every step that
//! must happen once (a vote, a denial, spending, taking a code's step) is
//! one conditional statement or one `BEGIN IMMEDIATE` transaction, so two
//! racing callers cannot both succeed.

use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Row, SqliteExecutor};

use super::{EnrollmentRecord, EnrollmentTaken, FactorRecord, StoreError, Vote};
use crate::approvals::{Approval, Status};
use crate::secrets::Sealed;

/// Approvals with who approved each, in order; the query goes on with its
/// condition.
macro_rules! with_voters {
    () => {
        "SELECT a.*, (SELECT group_concat(approver, char(10)) FROM \
         (SELECT approver FROM approval_votes WHERE approval_id = a.id ORDER BY at_ms, approver)) AS voters \
         FROM approvals a WHERE "
    };
}

/// What is open at `?1`: pending within the deciding clock, or approved
/// within the executing one.
macro_rules! open_at {
    () => {
        "((state = 'pending' AND decide_by_ms >= ?1) OR (state = 'approved' AND execute_by_ms >= ?1))"
    };
}

pub(super) async fn hold_request(
    pool: &SqlitePool,
    a: &Approval,
    most_open: i64,
    now_ms: i64,
) -> Result<Option<(Approval, bool)>, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let existing = sqlx::query(concat!(
        with_voters!(),
        "session_id = ?2 AND digest = ?3 AND ",
        open_at!()
    ))
    .bind(now_ms)
    .bind(&a.session_id)
    .bind(&a.digest)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = existing {
        tx.commit().await?;
        return Ok(Some((read(&row)?, false)));
    }
    let open: i64 = sqlx::query(concat!(
        "SELECT COUNT(*) FROM approvals WHERE session_id = ?2 AND ",
        open_at!()
    ))
    .bind(now_ms)
    .bind(&a.session_id)
    .fetch_one(&mut *tx)
    .await?
    .get(0);
    if open >= most_open {
        return Ok(None);
    }
    // One past its clock but not yet marked keeps the index's place.
    sqlx::query(concat!(
        "UPDATE approvals SET state = 'expired' WHERE session_id = ?2 AND digest = ?3 \
         AND state IN ('pending', 'approved') AND NOT ",
        open_at!()
    ))
    .bind(now_ms)
    .bind(&a.session_id)
    .bind(&a.digest)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO approvals (id, digest, agent, session_id, lease_id, provider, env, method, path, query_bytes, \
         approvers_needed, tier, environments, operations, event_id, state, created_at_ms, decide_by_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
    )
    .bind(&a.id)
    .bind(&a.digest)
    .bind(&a.agent)
    .bind(&a.session_id)
    .bind(&a.lease_id)
    .bind(&a.provider)
    .bind(&a.env)
    .bind(&a.method)
    .bind(&a.path)
    .bind(a.query_bytes.map(|n| n as i64))
    .bind(i64::from(a.approvers_needed))
    .bind(a.tier.as_str())
    .bind(serde_json::to_string(&a.environments).unwrap_or_default())
    .bind(serde_json::to_string(&a.operations).unwrap_or_default())
    .bind(&a.event_id)
    .bind(a.created_at_ms)
    .bind(a.decide_by_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some((a.clone(), true)))
}

pub(super) async fn approval(pool: &SqlitePool, id: &str) -> Result<Option<Approval>, StoreError> {
    approval_in(pool, id).await
}

async fn approval_in<'c, E>(db: E, id: &str) -> Result<Option<Approval>, StoreError>
where
    E: SqliteExecutor<'c>,
{
    sqlx::query(concat!(with_voters!(), "id = ?"))
        .bind(id)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(read)
        .transpose()
}

pub(super) async fn approved_for(
    pool: &SqlitePool,
    session_id: &str,
    digest: &str,
    now_ms: i64,
) -> Result<Option<Approval>, StoreError> {
    sqlx::query(concat!(
        with_voters!(),
        "session_id = ? AND digest = ? AND state = 'approved' AND execute_by_ms >= ?"
    ))
    .bind(session_id)
    .bind(digest)
    .bind(now_ms)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(read)
    .transpose()
}

pub(super) async fn open_approvals(pool: &SqlitePool) -> Result<Vec<Approval>, StoreError> {
    sqlx::query(concat!(
        with_voters!(),
        "state IN ('pending', 'approved') ORDER BY created_at_ms, id"
    ))
    .fetch_all(pool)
    .await?
    .iter()
    .map(read)
    .collect()
}

pub(super) async fn vote(
    pool: &SqlitePool,
    id: &str,
    approver: &str,
    factor: &str,
    now_ms: i64,
    execute_by_ms: i64,
) -> Result<Vote, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let pending = sqlx::query("SELECT 1 FROM approvals WHERE id = ? AND state = 'pending' AND decide_by_ms >= ?")
        .bind(id)
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
    if !pending {
        return Ok(Vote::NotPending);
    }
    let inserted = sqlx::query(
        "INSERT INTO approval_votes (approval_id, approver, factor, at_ms) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(approver)
    .bind(factor)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(Vote::Repeated);
    }
    sqlx::query(
        "UPDATE approvals SET state = 'approved', execute_by_ms = ?, decided_at_ms = ? WHERE id = ? \
         AND (SELECT COUNT(*) FROM approval_votes WHERE approval_id = ?) >= approvers_needed",
    )
    .bind(execute_by_ms)
    .bind(now_ms)
    .bind(id)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let after = approval_in(&mut *tx, id).await?;
    tx.commit().await?;
    after
        .map(|a| Vote::Counted(Box::new(a)))
        .ok_or_else(|| StoreError::Corrupt(format!("approval `{id}` vanished")))
}

pub(super) async fn deny(
    pool: &SqlitePool,
    id: &str,
    approver: &str,
    reason: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    Ok(sqlx::query(
        "UPDATE approvals SET state = 'denied', denied_by = ?, reason = ?, decided_at_ms = ? \
         WHERE id = ? AND state = 'pending' AND decide_by_ms >= ?",
    )
    .bind(approver)
    .bind(reason)
    .bind(now_ms)
    .bind(id)
    .bind(now_ms)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

pub(super) async fn spend(
    pool: &SqlitePool,
    id: &str,
    session_id: &str,
    digest: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    Ok(sqlx::query(
        "UPDATE approvals SET state = 'used', used_at_ms = ? WHERE id = ? AND session_id = ? AND digest = ? \
         AND state = 'approved' AND execute_by_ms >= ?",
    )
    .bind(now_ms)
    .bind(id)
    .bind(session_id)
    .bind(digest)
    .bind(now_ms)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

pub(super) async fn expire(pool: &SqlitePool, now_ms: i64) -> Result<Vec<Approval>, StoreError> {
    // A request whose credential was revoked or ran out can never be sent:
    // it expires with it, and approvers are not asked about it any longer.
    let ids: Vec<String> = sqlx::query(concat!(
        "UPDATE approvals SET state = 'expired' WHERE state IN ('pending', 'approved') AND (NOT ",
        open_at!(),
        " OR lease_id IN (SELECT id FROM leases WHERE revoked_at IS NOT NULL OR expires_at * 1000 < ?1)) RETURNING id"
    ))
    .bind(now_ms)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query(concat!(
        with_voters!(),
        "id IN (SELECT value FROM json_each(?)) ORDER BY created_at_ms, id"
    ))
    .bind(serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()))
    .fetch_all(pool)
    .await?
    .iter()
    .map(read)
    .collect()
}

fn read(row: &SqliteRow) -> Result<Approval, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("approval {what}"));
    let state: String = row.get("state");
    let tier: String = row.get("tier");
    let environments: String = row.get("environments");
    let operations: String = row.get("operations");
    let voters: Option<String> = row.get("voters");
    Ok(Approval {
        id: row.get("id"),
        digest: row.get("digest"),
        agent: row.get("agent"),
        session_id: row.get("session_id"),
        lease_id: row.get("lease_id"),
        provider: row.get("provider"),
        env: row.get("env"),
        method: row.get("method"),
        path: row.get("path"),
        query_bytes: row.get::<Option<i64>, _>("query_bytes").map(|n| n as usize),
        approvers_needed: u8::try_from(row.get::<i64, _>("approvers_needed")).map_err(|_| corrupt("count"))?,
        tier: serde_json::from_value(serde_json::Value::String(tier)).map_err(|_| corrupt("tier"))?,
        environments: serde_json::from_str(&environments).map_err(|_| corrupt("environments"))?,
        operations: serde_json::from_str(&operations).map_err(|_| corrupt("operations"))?,
        event_id: row.get("event_id"),
        state: Status::parse(&state).ok_or_else(|| corrupt("state"))?,
        created_at_ms: row.get("created_at_ms"),
        decide_by_ms: row.get("decide_by_ms"),
        execute_by_ms: row.get("execute_by_ms"),
        decided_at_ms: row.get("decided_at_ms"),
        used_at_ms: row.get("used_at_ms"),
        approved_by: voters
            .map(|v| v.lines().map(str::to_owned).collect())
            .unwrap_or_default(),
        denied_by: row.get("denied_by"),
        reason: row.get("reason"),
    })
}

pub(super) async fn insert_enrollment(pool: &SqlitePool, e: &EnrollmentRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO approver_enrollments (code_hash, approver, issued_by, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&e.code_hash)
    .bind(&e.approver)
    .bind(&e.issued_by)
    .bind(e.created_at)
    .bind(e.expires_at)
    .execute(pool)
    .await?;
    Ok(())
}

const TAKE_ENROLLMENT: &str = "UPDATE approver_enrollments SET used_at = ? WHERE code_hash = ? AND approver = ? \
     AND used_at IS NULL AND expires_at >= ?";

/// Whether an approver still configured has a code factor in use: until
/// one has, the first code factor is in use at once (trust on first use);
/// after, every new factor awaits a vouch, which takes a code. A passkey is
/// never first.
async fn any_factor_in_use(tx: &mut sqlx::SqliteConnection, configured: &str) -> Result<bool, StoreError> {
    Ok(
        sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM approver_factors WHERE approver IN (SELECT value FROM json_each(?)))",
        )
        .bind(configured)
        .fetch_one(&mut *tx)
        .await?
        .get::<bool, _>(0),
    )
}

/// Drops factors that waited for a vouch since before `cutoff`: a planted
/// one does not wait for the next vouch.
async fn drop_stale(tx: &mut sqlx::SqliteConnection, cutoff: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM approver_pending_factors WHERE created_at < ?")
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM approver_passkeys WHERE vouched_by IS NULL AND created_at < ?")
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// When the approver's factor awaiting a vouch was registered, if one is:
/// while one waits, no other may be registered (a vouch puts in use exactly
/// the one the voucher was told of).
async fn waiting_since(tx: &mut sqlx::SqliteConnection, approver: &str) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query(
        "SELECT MIN(created_at) FROM (SELECT created_at FROM approver_pending_factors WHERE approver = ?1 AND \
         confirmed_step IS NOT NULL UNION ALL SELECT created_at FROM approver_passkeys WHERE approver = ?1 AND \
         vouched_by IS NULL)",
    )
    .bind(approver)
    .fetch_one(&mut *tx)
    .await?
    .get(0))
}

/// Takes the enrollment code within `tx`, unless a factor of the
/// approver's awaits a vouch (after dropping those waiting since before
/// `cutoff`).
async fn take_in(
    tx: &mut sqlx::SqliteConnection,
    code_hash: &[u8],
    approver: &str,
    cutoff: i64,
    now: i64,
) -> Result<EnrollmentTaken, StoreError> {
    drop_stale(tx, cutoff).await?;
    if let Some(since) = waiting_since(tx, approver).await? {
        return Ok(EnrollmentTaken::Waiting(since));
    }
    let taken = sqlx::query(TAKE_ENROLLMENT)
        .bind(now)
        .bind(code_hash)
        .bind(approver)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    Ok(if taken == 1 {
        EnrollmentTaken::Taken
    } else {
        EnrollmentTaken::NotValid
    })
}

pub(super) async fn take_enrollment(
    pool: &SqlitePool,
    code_hash: &[u8],
    approver: &str,
    cutoff: i64,
    now: i64,
) -> Result<EnrollmentTaken, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let taken = take_in(&mut tx, code_hash, approver, cutoff, now).await?;
    tx.commit().await?;
    Ok(taken)
}

pub(super) async fn put_passkey(
    pool: &SqlitePool,
    approver: &str,
    credential_id: &str,
    sealed: &Sealed,
    now: i64,
) -> Result<bool, StoreError> {
    Ok(sqlx::query(
        "INSERT INTO approver_passkeys (approver, credential_id, nonce, ciphertext, created_at) VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (approver, credential_id) DO NOTHING",
    )
    .bind(approver)
    .bind(credential_id)
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

pub(super) async fn update_passkey(
    pool: &SqlitePool,
    approver: &str,
    credential_id: &str,
    sealed: &Sealed,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE approver_passkeys SET nonce = ?, ciphertext = ? WHERE approver = ? AND credential_id = ? \
         AND vouched_by IS NOT NULL",
    )
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .bind(approver)
    .bind(credential_id)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn awaiting_vouch(pool: &SqlitePool) -> Result<Vec<(String, String, i64)>, StoreError> {
    Ok(sqlx::query(
        "SELECT approver, 'totp', created_at FROM approver_pending_factors WHERE confirmed_step IS NOT NULL \
         UNION SELECT approver, 'passkey', created_at FROM approver_passkeys WHERE vouched_by IS NULL ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect())
}

pub(super) async fn vouch_factors(
    pool: &SqlitePool,
    approver: &str,
    totp: Option<(&Sealed, i64, &[u8])>,
    voucher: &str,
    cutoff: i64,
    now: i64,
) -> Result<Vec<String>, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    drop_stale(&mut tx, cutoff).await?;
    let mut put = Vec::new();
    if let Some((sealed, step, pending_nonce)) = totp {
        // The very row the voucher's broker read, not one put there since.
        let taken =
            sqlx::query("DELETE FROM approver_pending_factors WHERE approver = ? AND confirmed_step = ? AND nonce = ?")
                .bind(approver)
                .bind(step)
                .bind(pending_nonce)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if taken == 1 {
            write_factor(&mut tx, approver, sealed, step, now).await?;
            put.push("totp".to_owned());
        }
    }
    let passkeys = sqlx::query("UPDATE approver_passkeys SET vouched_by = ? WHERE approver = ? AND vouched_by IS NULL")
        .bind(voucher)
        .bind(approver)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if passkeys > 0 {
        put.push("passkey".to_owned());
    }
    tx.commit().await?;
    Ok(put)
}

/// The approver's code factor in use, replacing any earlier one.
async fn write_factor(
    tx: &mut sqlx::SqliteConnection,
    approver: &str,
    sealed: &Sealed,
    step: i64,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO approver_factors (approver, nonce, ciphertext, enrolled_at, last_step, failures, locked_until) \
         VALUES (?, ?, ?, ?, ?, 0, 0) ON CONFLICT (approver) DO UPDATE SET nonce = excluded.nonce, \
         ciphertext = excluded.ciphertext, enrolled_at = excluded.enrolled_at, last_step = excluded.last_step, \
         failures = 0, locked_until = 0",
    )
    .bind(approver)
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .bind(now)
    .bind(step)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(super) async fn passkeys(pool: &SqlitePool, approver: &str) -> Result<Vec<(String, Sealed)>, StoreError> {
    Ok(sqlx::query(
        "SELECT credential_id, nonce, ciphertext FROM approver_passkeys WHERE approver = ? AND vouched_by IS NOT NULL \
         ORDER BY created_at",
    )
    .bind(approver)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        (
            r.get(0),
            Sealed {
                nonce: r.get(1),
                ciphertext: r.get(2),
            },
        )
    })
    .collect())
}

pub(super) async fn redeem_enrollment(
    pool: &SqlitePool,
    code_hash: &[u8],
    approver: &str,
    pending: &Sealed,
    cutoff: i64,
    now: i64,
) -> Result<EnrollmentTaken, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let taken = take_in(&mut tx, code_hash, approver, cutoff, now).await?;
    if taken != EnrollmentTaken::Taken {
        tx.commit().await?;
        return Ok(taken);
    }
    sqlx::query(
        "INSERT INTO approver_pending_factors (approver, nonce, ciphertext, created_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (approver) DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, \
         created_at = excluded.created_at, confirmed_step = NULL",
    )
    .bind(approver)
    .bind(&pending.nonce)
    .bind(&pending.ciphertext)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(EnrollmentTaken::Taken)
}

pub(super) async fn pending_factor(
    pool: &SqlitePool,
    approver: &str,
) -> Result<Option<(Sealed, Option<i64>)>, StoreError> {
    Ok(
        sqlx::query("SELECT nonce, ciphertext, confirmed_step FROM approver_pending_factors WHERE approver = ?")
            .bind(approver)
            .fetch_optional(pool)
            .await?
            .map(|r| {
                (
                    Sealed {
                        nonce: r.get(0),
                        ciphertext: r.get(1),
                    },
                    r.get(2),
                )
            }),
    )
}

pub(super) async fn confirm_factor(
    pool: &SqlitePool,
    approver: &str,
    sealed: &Sealed,
    step: i64,
    configured: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let first = !any_factor_in_use(&mut tx, configured).await?;
    if first {
        write_factor(&mut tx, approver, sealed, step, now).await?;
        sqlx::query("DELETE FROM approver_pending_factors WHERE approver = ?")
            .bind(approver)
            .execute(&mut *tx)
            .await?;
    } else {
        sqlx::query(
            "UPDATE approver_pending_factors SET confirmed_step = ? WHERE approver = ? AND confirmed_step IS NULL",
        )
        .bind(step)
        .bind(approver)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(first)
}

fn factor_record(r: &SqliteRow) -> FactorRecord {
    FactorRecord {
        approver: r.get("approver"),
        sealed: Sealed {
            nonce: r.get("nonce"),
            ciphertext: r.get("ciphertext"),
        },
        enrolled_at: r.get("enrolled_at"),
        last_step: r.get("last_step"),
        failures: r.get("failures"),
        locked_until: r.get("locked_until"),
    }
}

pub(super) async fn factor(pool: &SqlitePool, approver: &str) -> Result<Option<FactorRecord>, StoreError> {
    Ok(sqlx::query("SELECT * FROM approver_factors WHERE approver = ?")
        .bind(approver)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(factor_record))
}

pub(super) async fn factors(pool: &SqlitePool) -> Result<Vec<FactorRecord>, StoreError> {
    Ok(sqlx::query("SELECT * FROM approver_factors ORDER BY approver")
        .fetch_all(pool)
        .await?
        .iter()
        .map(factor_record)
        .collect())
}

pub(super) async fn take_factor_step(
    pool: &SqlitePool,
    approver: &str,
    step: i64,
    attempt: i64,
    lock_after: i64,
) -> Result<bool, StoreError> {
    // The right code takes back its own attempt only: wrong ones counted
    // after it stay counted, and a lock they reached stays.
    Ok(sqlx::query(
        "UPDATE approver_factors SET last_step = ?1, failures = MAX(failures - ?2, 0), \
         locked_until = CASE WHEN MAX(failures - ?2, 0) >= ?3 THEN locked_until ELSE 0 END \
         WHERE approver = ?4 AND last_step < ?1",
    )
    .bind(step)
    .bind(attempt)
    .bind(lock_after)
    .bind(approver)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

/// Counts an attempt before its code is checked, so that attempts in
/// flight at once are counted too: refused (`None`) while the factor is
/// locked; the one that reaches `lock_after` locks it until `lock_until`
/// (a right code clears the count and the lock). Once a lock has run out,
/// counting starts again.
pub(super) async fn reserve_attempt(
    pool: &SqlitePool,
    approver: &str,
    lock_after: i64,
    now: i64,
    lock_until: i64,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query(
        "UPDATE approver_factors SET \
         failures = CASE WHEN failures >= ?1 THEN 1 ELSE failures + 1 END, \
         locked_until = CASE WHEN (CASE WHEN failures >= ?1 THEN 1 ELSE failures + 1 END) >= ?1 THEN ?3 ELSE locked_until END \
         WHERE approver = ?4 AND locked_until <= ?2 RETURNING failures",
    )
    .bind(lock_after)
    .bind(now)
    .bind(lock_until)
    .bind(approver)
    .fetch_optional(pool)
    .await?
    .map(|r| r.get(0)))
}
