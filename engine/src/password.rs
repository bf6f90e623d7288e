//! Password handling at creation: plain passwords are hashed with Argon2id (OWASP parameters:
//! m=19 MiB, t=2, p=1 — the argon2 crate's defaults) on the blocking pool, never on the async
//! workers; given hashes are accepted as-is when they are PHC-format argon2 or bcrypt.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;

use crate::error::{Error, ErrorId};

pub const MAX_PASSWORD_LEN: usize = 1000;

/// Hashes `password` with Argon2id off the async workers.
pub async fn hash_password(password: String) -> Result<String, Error> {
    if password.is_empty() || password.chars().count() > MAX_PASSWORD_LEN {
        return Err(ErrorId::InvalidPassword.into());
    }
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| Error::with(ErrorId::Internal, format!("hashing failed: {e}")))
    })
    .await
    .map_err(|_| Error::new(ErrorId::Internal))?
}

/// Accepts a PHC-format argon2 hash or a bcrypt (`$2a$`/`$2b$`/`$2y$`) hash.
pub fn validate_hash(hash: &str) -> Result<(), Error> {
    if hash.starts_with("$argon2") {
        return PasswordHash::new(hash)
            .ok()
            .filter(|h| h.hash.is_some() && h.salt.is_some())
            .map(|_| ())
            .ok_or_else(|| ErrorId::InvalidPasswordHash.into());
    }
    if is_bcrypt(hash) {
        return Ok(());
    }
    Err(ErrorId::InvalidPasswordHash.into())
}

/// `$2b$12$` + 53 characters of bcrypt's base64 alphabet.
fn is_bcrypt(hash: &str) -> bool {
    let bytes = hash.as_bytes();
    bytes.len() == 60
        && (hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$"))
        && bytes[4].is_ascii_digit()
        && bytes[5].is_ascii_digit()
        && bytes[6] == b'$'
        && bytes[7..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_passwords_become_argon2id_hashes() {
        let hash = hash_password("correct horse".into()).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        validate_hash(&hash).unwrap();
        assert!(!hash.contains("correct horse"));
        assert_eq!(
            hash_password(String::new()).await.unwrap_err().id,
            ErrorId::InvalidPassword
        );
    }

    #[test]
    fn accepts_bcrypt_and_rejects_garbage() {
        validate_hash("$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy").unwrap();
        for bad in [
            "",
            "plain",
            "$2b$10$short",
            "$argon2id$nonsense",
            "$5$rounds=5000$x$y",
        ] {
            assert!(validate_hash(bad).is_err(), "{bad}");
        }
    }
}
