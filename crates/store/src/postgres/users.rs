//! Users and their grants in PostgreSQL.

use super::*;

pub(super) async fn load_user(conn: &mut sqlx::PgConnection, username: &str) -> Result<Option<User>, StoreError> {
    let Some(row): Option<UserColumns> =
        sqlx::query_as(AssertSqlSafe(format!("SELECT {USER_COLS} FROM users WHERE username = $1")))
            .bind(username)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db("loading a user"))?
    else {
        return Ok(None);
    };
    let grants: Vec<String> = sqlx::query_scalar("SELECT index_id FROM grants WHERE username = $1 ORDER BY index_id")
        .bind(username)
        .fetch_all(&mut *conn)
        .await
        .map_err(db("loading grants"))?;
    user_from_columns(row, grants).map(Some)
}

#[async_trait::async_trait]
impl UserStore for PostgresStore {
    async fn create_user(&self, username: &str, password: &str, role: Role) -> Result<User, StoreError> {
        validate_username(username)?;
        let password = password.to_owned();
        // Argon2 is deliberately slow: keep it off the async workers.
        let password_hash = tokio::task::spawn_blocking(move || hash_password(&password)).await??;
        let now = now_rfc3339();
        let result =
            sqlx::query("INSERT INTO users (username, role, password_hash, created_at) VALUES ($1, $2, $3, $4)")
                .bind(username)
                .bind(role.as_str())
                .bind(&password_hash)
                .bind(&now)
                .execute(&self.pool)
                .await;
        match result {
            Ok(_) => {
                Ok(User { username: username.to_owned(), role, password_hash, grants: Vec::new(), created_at: now })
            }
            Err(e) if sql_state(&e).as_deref() == Some(UNIQUE_VIOLATION) => {
                Err(StoreError::DuplicateUser(username.to_owned()))
            }
            Err(e) => Err(db("creating a user")(e)),
        }
    }

    async fn verify_password(&self, username: &str, password: &str) -> Result<Option<User>, StoreError> {
        let user = {
            let mut tx = self.begin("starting a read").await?;
            load_user(&mut tx, username).await?
        };
        let (password, dummy) = (password.to_owned(), self.dummy_hash.clone());
        tokio::task::spawn_blocking(move || verified(user, &password, &dummy)).await?
    }

    async fn get_user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let mut tx = self.begin("starting a read").await?;
        load_user(&mut tx, username).await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let mut tx = self.begin("starting a read").await?;
        let rows: Vec<UserColumns> =
            sqlx::query_as(AssertSqlSafe(format!("SELECT {USER_COLS} FROM users ORDER BY username")))
                .fetch_all(&mut *tx)
                .await
                .map_err(db("listing users"))?;
        let pairs: Vec<(String, String)> =
            sqlx::query_as("SELECT username, index_id FROM grants ORDER BY username, index_id")
                .fetch_all(&mut *tx)
                .await
                .map_err(db("listing grants"))?;
        users_with_grants(rows, pairs)
    }

    async fn set_password(&self, username: &str, password: &str) -> Result<bool, StoreError> {
        let password = password.to_owned();
        let password_hash = tokio::task::spawn_blocking(move || hash_password(&password)).await??;
        let done = sqlx::query("UPDATE users SET password_hash = $2 WHERE username = $1")
            .bind(username)
            .bind(&password_hash)
            .execute(&self.pool)
            .await
            .map_err(db("setting a password"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn grant(&self, username: &str, index_id: &str) -> Result<bool, StoreError> {
        // The insert selects from both tables: an unknown user or index inserts nothing.
        let result = sqlx::query(
            "INSERT INTO grants (username, index_id, created_at)
             SELECT u.username, x.id, $3 FROM users u, indexes x WHERE u.username = $1 AND x.id = $2
             ON CONFLICT DO NOTHING",
        )
        .bind(username)
        .bind(index_id)
        .bind(now_rfc3339())
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => {}
            // The user or index was deleted at the same moment.
            Err(e) if sql_state(&e).as_deref() == Some(FOREIGN_KEY_VIOLATION) => return Ok(false),
            Err(e) => return Err(db("granting")(e)),
        }
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM grants WHERE username = $1 AND index_id = $2)")
                .bind(username)
                .bind(index_id)
                .fetch_one(&self.pool)
                .await
                .map_err(db("checking a grant"))?;
        Ok(exists)
    }

    async fn revoke(&self, username: &str, index_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM grants WHERE username = $1 AND index_id = $2")
            .bind(username)
            .bind(index_id)
            .execute(&self.pool)
            .await
            .map_err(db("revoking"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin("deleting a user").await?;
        // Every admin row is locked, in one order, before they are counted: of two
        // transactions (on any nodes) deleting admins at once, the second waits for the
        // first and then sees the row it deleted gone, so it cannot delete the last one.
        let admins: Vec<String> =
            sqlx::query_scalar("SELECT username FROM users WHERE role = $1 ORDER BY username FOR UPDATE")
                .bind(Role::Admin.as_str())
                .fetch_all(&mut *tx)
                .await
                .map_err(db("locking the admins"))?;
        if admins.len() <= 1 && admins.iter().any(|a| a == username) {
            return Err(StoreError::LastAdmin(username.to_owned()));
        }
        let done = sqlx::query("DELETE FROM users WHERE username = $1")
            .bind(username)
            .execute(&mut *tx)
            .await
            .map_err(db("deleting a user"))?;
        tx.commit().await.map_err(db("committing the user deletion"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn user_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await
            .map_err(db("counting users"))?;
        count_u64(n, "user count")
    }
}
