//! The admin UI's users and sessions (docs/admin-ui.md): tenant-scoped statements, bound
//! parameters. Passwords arrive here already hashed; session ids arrive as their SHA-256.

use deadpool_postgres::GenericClient;
use serde::Serialize;

use crate::error::{Error, Result};

/// Consecutive failed logins after which a user is locked for [`LOCK_SECONDS`].
pub const MAX_FAILED_LOGINS: i32 = 5;
/// How long a user stays locked after [`MAX_FAILED_LOGINS`] failures.
pub const LOCK_SECONDS: i32 = 300;

/// A user as listed (never the hash).
#[derive(Debug, Clone, Serialize)]
pub struct UserInfo {
    /// Login name.
    pub username: String,
    /// Role name (`Administrator`, `Supervisor`, `Monitor`, `Developer`).
    pub role: String,
}

/// What a login attempt needs: the stored hash and role.
#[derive(Debug, Clone)]
pub struct LoginRow {
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Role name.
    pub role: String,
}

/// The start of a login attempt ([`begin_login`]).
#[derive(Debug, Clone)]
pub enum LoginStart {
    /// No such user.
    Unknown,
    /// Locked after too many failures: no password check may be made.
    Locked,
    /// The attempt is counted as a failure until [`login_succeeded`] says otherwise: check
    /// the password against this.
    Check(LoginRow),
}

/// A live session.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// The tenant the session acts for.
    pub tenant: String,
    /// The user (`@admin:<token fingerprint>` for an admin-token session).
    pub username: String,
    /// Role name.
    pub role: String,
    /// The session's CSRF token.
    pub csrf: String,
}

/// Creates or replaces a user (a new password or role; failures reset).
pub async fn put_user(
    db: &impl GenericClient,
    tenant: &str,
    username: &str,
    hash: &str,
    role: &str,
) -> Result<()> {
    // A changed role or password ends the user's open sessions, in the same statement: two
    // statements could leave the change committed with the old sessions alive when the second
    // failed, and the answer (503) saying nothing changed (helper-72, attack_s42b).
    db.execute(
        "WITH u AS (
             INSERT INTO ui_users (tenant_id, username, password_hash, role)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, username) DO UPDATE
             SET password_hash = excluded.password_hash, role = excluded.role,
                 failed_logins = 0, locked_until = NULL
             RETURNING 1),
         s AS (DELETE FROM ui_sessions WHERE tenant_id = $1 AND username = $2)
         SELECT count(*) FROM u",
        &[&tenant, &username, &hash, &role],
    )
    .await?;
    Ok(())
}

/// The tenant's users, by name.
pub async fn list_users(db: &impl GenericClient, tenant: &str) -> Result<Vec<UserInfo>> {
    let rows = db
        .query(
            "SELECT username, role FROM ui_users WHERE tenant_id = $1 ORDER BY username",
            &[&tenant],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| UserInfo {
            username: r.get(0),
            role: r.get(1),
        })
        .collect())
}

/// Deletes a user and its sessions (404 when there is none).
pub async fn delete_user(db: &impl GenericClient, tenant: &str, username: &str) -> Result<()> {
    // One statement, as in `put_user`: the user and its sessions go together or not at all.
    let n: i64 = db
        .query_one(
            "WITH u AS (DELETE FROM ui_users WHERE tenant_id = $1 AND username = $2 RETURNING 1),
                  s AS (DELETE FROM ui_sessions WHERE tenant_id = $1 AND username = $2
                          AND EXISTS (SELECT 1 FROM u))
             SELECT count(*) FROM u",
            &[&tenant, &username],
        )
        .await?
        .get(0);
    if n == 0 {
        return Err(Error::not_found(format!("no user {username}")));
    }
    Ok(())
}

/// Starts a login attempt of `username`: unless the user is locked, counts the attempt as a
/// failure *before* the password is checked, in one statement, so concurrent guesses cannot
/// all pass a lock that only a finished check would set: the [`MAX_FAILED_LOGINS`]th
/// consecutive attempt locks the user for [`LOCK_SECONDS`] (it is still checked), the ones
/// after it find the lock. A right password then clears the count ([`login_succeeded`]).
pub async fn begin_login(
    db: &impl GenericClient,
    tenant: &str,
    username: &str,
) -> Result<LoginStart> {
    let counted = db
        .query_opt(
            "UPDATE ui_users SET
                 failed_logins = CASE WHEN failed_logins + 1 >= $3 THEN 0
                                      ELSE failed_logins + 1 END,
                 locked_until = CASE WHEN failed_logins + 1 >= $3
                                     THEN now() + $4::int * interval '1 second'
                                     ELSE locked_until END
             WHERE tenant_id = $1 AND username = $2
               AND NOT coalesce(locked_until > now(), false)
             RETURNING password_hash, role",
            &[&tenant, &username, &MAX_FAILED_LOGINS, &LOCK_SECONDS],
        )
        .await?;
    if let Some(r) = counted {
        return Ok(LoginStart::Check(LoginRow {
            password_hash: r.get(0),
            role: r.get(1),
        }));
    }
    let exists = db
        .query_opt(
            "SELECT 1 FROM ui_users WHERE tenant_id = $1 AND username = $2",
            &[&tenant, &username],
        )
        .await?
        .is_some();
    Ok(if exists {
        LoginStart::Locked
    } else {
        LoginStart::Unknown
    })
}

/// A right password: the failure count and any lock are cleared.
pub async fn login_succeeded(db: &impl GenericClient, tenant: &str, username: &str) -> Result<()> {
    db.execute(
        "UPDATE ui_users SET failed_logins = 0, locked_until = NULL
         WHERE tenant_id = $1 AND username = $2",
        &[&tenant, &username],
    )
    .await?;
    Ok(())
}

/// Stores a new session (`id_hash`: SHA-256 of the cookie value). A tenant user's session
/// (`checked`: the hash its password was checked against) is stored only while the user still
/// has that hash and the session's role: a password or role change that landed during the
/// check leaves no session (the row is read `FOR SHARE`, so a change either lands first and
/// the insert finds nothing, or waits and then ends the new session too). Answers whether it
/// was stored.
pub async fn create_session(
    db: &impl GenericClient,
    id_hash: &[u8],
    s: &SessionRow,
    checked: Option<&str>,
) -> Result<bool> {
    let n = match checked {
        None => {
            db.execute(
                "INSERT INTO ui_sessions (id_hash, tenant_id, username, role, csrf)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&id_hash, &s.tenant, &s.username, &s.role, &s.csrf],
            )
            .await?
        }
        Some(hash) => {
            db.execute(
                "INSERT INTO ui_sessions (id_hash, tenant_id, username, role, csrf)
                 SELECT $1, tenant_id, username, role, $5 FROM ui_users
                 WHERE tenant_id = $2 AND username = $3 AND role = $4 AND password_hash = $6
                 FOR SHARE",
                &[&id_hash, &s.tenant, &s.username, &s.role, &s.csrf, &hash],
            )
            .await?
        }
    };
    Ok(n == 1)
}

/// The session if it was used within `idle_s` seconds, marking it used now (one statement,
/// so every replica sees the same idle clock); an idle one is deleted.
pub async fn touch_session(
    db: &impl GenericClient,
    id_hash: &[u8],
    idle_s: i64,
) -> Result<Option<SessionRow>> {
    let idle = idle_s as f64;
    let row = db
        .query_opt(
            "UPDATE ui_sessions SET last_seen = now()
             WHERE id_hash = $1 AND last_seen > now() - make_interval(secs => $2)
             RETURNING tenant_id, username, role, csrf",
            &[&id_hash, &idle],
        )
        .await?;
    if row.is_none() {
        end_session(db, id_hash).await?;
    }
    Ok(row.map(|r| SessionRow {
        tenant: r.get(0),
        username: r.get(1),
        role: r.get(2),
        csrf: r.get(3),
    }))
}

/// Deletes a session (logout, expiry).
pub async fn end_session(db: &impl GenericClient, id_hash: &[u8]) -> Result<()> {
    db.execute("DELETE FROM ui_sessions WHERE id_hash = $1", &[&id_hash])
        .await?;
    Ok(())
}

/// Deletes sessions idle for more than `idle_s` seconds (a login sweeps them).
pub async fn purge_idle(db: &impl GenericClient, idle_s: i64) -> Result<u64> {
    let idle = idle_s as f64;
    Ok(db
        .execute(
            "DELETE FROM ui_sessions WHERE last_seen < now() - make_interval(secs => $1)",
            &[&idle],
        )
        .await?)
}

/// One service's open callbacks on the Queues page.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueCounts {
    /// Service name.
    pub service: String,
    /// Callbacks per open state: SCHEDULED, QUEUED, ROUTING, PROCESSING.
    pub scheduled: i64,
    /// In the voice platform's queue.
    pub queued: i64,
    /// Being routed to an agent.
    pub routing: i64,
    /// With an agent.
    pub processing: i64,
    /// Completed in the last 24 hours.
    pub completed_24h: i64,
    /// Earliest desired time of a SCHEDULED callback (RFC 3339, UTC).
    pub next_due: Option<String>,
}

/// Open callbacks per service and state of a tenant, the last day's completions and the next
/// due time (one statement; docs/admin-ui.md#pages).
pub async fn queue_counts(db: &impl GenericClient, tenant: &str) -> Result<Vec<QueueCounts>> {
    let rows = db
        .query(
            "SELECT service,
                    count(*) FILTER (WHERE state = 'SCHEDULED'),
                    count(*) FILTER (WHERE state = 'QUEUED'),
                    count(*) FILTER (WHERE state = 'ROUTING'),
                    count(*) FILTER (WHERE state = 'PROCESSING'),
                    count(*) FILTER (WHERE state = 'COMPLETED'),
                    to_char(min(desired_time) FILTER (WHERE state = 'SCHEDULED')
                            AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
             FROM callbacks
             WHERE tenant_id = $1
               AND (state <> 'COMPLETED' OR updated_at > now() - interval '24 hours')
             GROUP BY service ORDER BY service",
            &[&tenant],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| QueueCounts {
            service: r.get(0),
            scheduled: r.get(1),
            queued: r.get(2),
            routing: r.get(3),
            processing: r.get(4),
            completed_24h: r.get(5),
            next_due: r.get(6),
        })
        .collect())
}
