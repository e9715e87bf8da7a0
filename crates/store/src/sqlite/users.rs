//! Users and their grants in SQLite.

use super::*;

pub(super) fn raw_user(r: &Row<'_>) -> rusqlite::Result<UserColumns> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

pub(super) fn load_user(conn: &Connection, username: &str) -> Result<Option<User>, StoreError> {
    let Some(raw) = conn
        .prepare_cached(&format!("SELECT {USER_COLS} FROM users WHERE username = ?1"))
        .and_then(|mut s| s.query_row([username], raw_user).optional())
        .ctx("loading a user")?
    else {
        return Ok(None);
    };
    let grants = conn
        .prepare_cached("SELECT index_id FROM grants WHERE username = ?1 ORDER BY index_id")
        .and_then(|mut s| s.query_map([username], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>())
        .ctx("loading grants")?;
    user_from_columns(raw, grants).map(Some)
}

#[async_trait::async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, username: &str, password: &str, role: Role) -> Result<User, StoreError> {
        validate_username(username)?;
        let (username, password) = (username.to_owned(), password.to_owned());
        self.run(move |inner| {
            // Hash before taking the lock: Argon2 is deliberately slow.
            let password_hash = hash_password(&password)?;
            inner.write(|conn| {
                let now = now_rfc3339();
                conn.prepare_cached(
                    "INSERT INTO users (username, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                )
                .and_then(|mut s| s.execute(params![username, role.as_str(), password_hash, now]))
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::DuplicateUser(username.clone())
                    } else {
                        backend_error("creating a user", e)
                    }
                })?;
                Ok(User { username, role, password_hash, grants: Vec::new(), created_at: now })
            })
        })
        .await
    }

    async fn verify_password(&self, username: &str, password: &str) -> Result<Option<User>, StoreError> {
        let (username, password) = (username.to_owned(), password.to_owned());
        self.run(move |inner| {
            let user = inner.read_tx(|tx| load_user(tx, &username))?;
            // Outside the lock.
            verified(user, &password, &inner.dummy_hash)
        })
        .await
    }

    async fn get_user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let username = username.to_owned();
        self.run(move |inner| inner.read_tx(|tx| load_user(tx, &username))).await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.run(|inner| {
            inner.read_tx(|tx| {
                let raws = tx
                    .prepare_cached(&format!("SELECT {USER_COLS} FROM users ORDER BY username"))
                    .and_then(|mut s| s.query_map([], raw_user)?.collect::<rusqlite::Result<Vec<_>>>())
                    .ctx("listing users")?;
                let pairs = tx
                    .prepare_cached("SELECT username, index_id FROM grants ORDER BY username, index_id")
                    .and_then(|mut s| {
                        s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .ctx("listing grants")?;
                users_with_grants(raws, pairs)
            })
        })
        .await
    }

    async fn set_password(&self, username: &str, password: &str) -> Result<bool, StoreError> {
        let (username, password) = (username.to_owned(), password.to_owned());
        self.run(move |inner| {
            let password_hash = hash_password(&password)?;
            inner.write(|conn| {
                let changed = conn
                    .execute("UPDATE users SET password_hash = ?2 WHERE username = ?1", [&username, &password_hash])
                    .ctx("setting a password")?;
                Ok(changed > 0)
            })
        })
        .await
    }

    async fn grant(&self, username: &str, index_id: &str) -> Result<bool, StoreError> {
        let (username, index_id) = (username.to_owned(), index_id.to_owned());
        self.run(move |inner| {
            inner.write(|conn| {
                let tx = immediate(conn, "granting")?;
                let user_exists = tx
                    .prepare_cached("SELECT 1 FROM users WHERE username = ?1")
                    .and_then(|mut s| s.exists([&username]))
                    .ctx("checking the user")?;
                let index_exists = tx
                    .prepare_cached("SELECT 1 FROM indexes WHERE id = ?1")
                    .and_then(|mut s| s.exists([&index_id]))
                    .ctx("checking the index")?;
                if !user_exists || !index_exists {
                    return Ok(false);
                }
                tx.execute(
                    "INSERT OR IGNORE INTO grants (username, index_id, created_at) VALUES (?1, ?2, ?3)",
                    params![username, index_id, now_rfc3339()],
                )
                .ctx("granting")?;
                tx.commit().ctx("committing a grant")?;
                Ok(true)
            })
        })
        .await
    }

    async fn revoke(&self, username: &str, index_id: &str) -> Result<bool, StoreError> {
        let (username, index_id) = (username.to_owned(), index_id.to_owned());
        self.run(move |inner| {
            inner.write(|conn| {
                let changed = conn
                    .execute("DELETE FROM grants WHERE username = ?1 AND index_id = ?2", [&username, &index_id])
                    .ctx("revoking")?;
                Ok(changed > 0)
            })
        })
        .await
    }

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        let username = username.to_owned();
        self.run(move |inner| {
            inner.write(|conn| {
                // BEGIN IMMEDIATE takes the database's write lock first: every other
                // writer, in this process or another (`facesearch user`), waits, so the
                // admins counted here are still the admins when the row goes.
                let tx = immediate(conn, "deleting a user")?;
                let role: Option<String> = tx
                    .prepare_cached("SELECT role FROM users WHERE username = ?1")
                    .and_then(|mut s| s.query_row([&username], |r| r.get(0)).optional())
                    .ctx("reading the user")?;
                let Some(role) = role else { return Ok(false) };
                if role == Role::Admin.as_str() {
                    let admins: i64 = tx
                        .query_row("SELECT COUNT(*) FROM users WHERE role = ?1", [Role::Admin.as_str()], |r| r.get(0))
                        .ctx("counting the admins")?;
                    if admins <= 1 {
                        return Err(StoreError::LastAdmin(username));
                    }
                }
                let changed =
                    tx.execute("DELETE FROM users WHERE username = ?1", [&username]).ctx("deleting a user")?;
                tx.commit().ctx("committing the user deletion")?;
                Ok(changed > 0)
            })
        })
        .await
    }

    async fn user_count(&self) -> Result<u64, StoreError> {
        self.run(|inner| {
            inner.read(|conn| {
                let n: i64 = conn.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0)).ctx("counting users")?;
                count_u64(n, "user count")
            })
        })
        .await
    }
}
