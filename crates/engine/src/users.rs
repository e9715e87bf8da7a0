//! The account rules: what a username, a password and a role may be. The HTTP API and
//! the `facesearch user` command both apply them, so they live here, beside the
//! engine's user writes ([`crate::Service`]), not in either front end.

use facesearch_store::Role;

/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest accepted password, in characters.
pub const MAX_PASSWORD_CHARS: usize = 1024;
/// Longest accepted username, in characters.
pub const MAX_USERNAME_CHARS: usize = 64;
/// Names that cannot be users: `/users/me` is the caller's own account.
const RESERVED_USERNAMES: &[&str] = &["me"];

/// Why a username, password or role is refused. The message is what a client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserRuleError {
    #[error("username must be 1 to {MAX_USERNAME_CHARS} characters of A-Z, a-z, 0-9, '.', '_' and '-'")]
    BadUsername,
    #[error("the username {0:?} is reserved")]
    ReservedUsername(String),
    #[error("the password must be at least {MIN_PASSWORD_CHARS} characters long")]
    ShortPassword,
    #[error("the password must be at most {MAX_PASSWORD_CHARS} characters long")]
    LongPassword,
    #[error("the password must contain at least one printable character other than a space")]
    BlankPassword,
    #[error("role must be admin, operator, searcher or auditor, not {0:?}")]
    UnknownRole(String),
}

impl UserRuleError {
    /// The request field at fault: `username`, `password` or `role`.
    pub fn parameter(&self) -> &'static str {
        match self {
            Self::BadUsername | Self::ReservedUsername(_) => "username",
            Self::ShortPassword | Self::LongPassword | Self::BlankPassword => "password",
            Self::UnknownRole(_) => "role",
        }
    }

    /// A password too weak to accept (too short, or nothing printable), as opposed to
    /// a malformed value.
    pub fn is_weak_password(&self) -> bool {
        matches!(self, Self::ShortPassword | Self::BlankPassword)
    }
}

/// 1–64 characters of `A–Z a–z 0–9 . _ -`, not a reserved name.
pub fn check_username(name: &str) -> Result<(), UserRuleError> {
    let valid = !name.is_empty()
        && name.chars().count() <= MAX_USERNAME_CHARS
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        return Err(UserRuleError::BadUsername);
    }
    if RESERVED_USERNAMES.contains(&name) {
        return Err(UserRuleError::ReservedUsername(name.to_string()));
    }
    Ok(())
}

/// 12–1024 characters, at least one of them printable and not a space.
pub fn check_password(password: &str) -> Result<(), UserRuleError> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(UserRuleError::ShortPassword);
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(UserRuleError::LongPassword);
    }
    check_password_characters(password)
}

/// At least one character that is neither white space nor a control character: a
/// password of twelve spaces, tabs or NULs is refused.
pub fn check_password_characters(password: &str) -> Result<(), UserRuleError> {
    if !password.chars().any(|c| !c.is_whitespace() && !c.is_control()) {
        return Err(UserRuleError::BlankPassword);
    }
    Ok(())
}

/// `admin`, `operator`, `searcher` or `auditor` (any case).
pub fn parse_role(role: &str) -> Result<Role, UserRuleError> {
    role.parse::<Role>().map_err(|_| UserRuleError::UnknownRole(role.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_policy() {
        for ok in ["a", "alice", "Alice.Smith", "ops_team-2", &"x".repeat(64)] {
            assert!(check_username(ok).is_ok(), "{ok}");
        }
        for bad in ["", "me", "al ice", "alice:x", "élodie", "a/b", &"x".repeat(65), "tab\t"] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn password_policy() {
        assert_eq!(check_password("short-pass1"), Err(UserRuleError::ShortPassword));
        assert!(check_password("twelve-chars").is_ok());
        assert!(check_password(&"é".repeat(12)).is_ok(), "characters, not bytes");
        assert!(check_password(&"x".repeat(1024)).is_ok());
        assert_eq!(check_password(&"x".repeat(1025)), Err(UserRuleError::LongPassword));
        // Long enough, but nothing printable: refused.
        for blank in [" ".repeat(12), "\0".repeat(12), "\t".repeat(12), "\u{3000}".repeat(12), " \n\r\0".repeat(4)] {
            assert!(check_password(&blank).unwrap_err().is_weak_password(), "{blank:?}");
        }
        // One printable character among spaces is enough; spaces inside are fine.
        assert!(check_password(&format!("{}x", " ".repeat(11))).is_ok());
        assert!(check_password("correct horse battery").is_ok());
    }

    #[test]
    fn roles_parse() {
        assert_eq!(parse_role("Searcher"), Ok(Role::Searcher));
        assert_eq!(parse_role("root").unwrap_err().parameter(), "role");
    }
}
