//! Password handling at creation: plain passwords are hashed with Argon2id (OWASP parameters:
//! m=19 MiB, t=2, p=1 — the argon2 crate's defaults) on the blocking pool, never on the async
//! workers; given hashes are accepted as-is when they are PHC-format argon2 or bcrypt.

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;
use rand_core::OsRng;

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

/// bcrypt's cost is a two-digit log2 of its rounds; the algorithm defines 04 to 31.
const BCRYPT_COSTS: std::ops::RangeInclusive<u8> = 4..=31;

/// `$2b$12$` + 53 characters of bcrypt's base64 alphabet, with a cost bcrypt defines.
fn is_bcrypt(hash: &str) -> bool {
    let bytes = hash.as_bytes();
    let cost = match (bytes.get(4), bytes.get(5)) {
        (Some(tens @ b'0'..=b'9'), Some(ones @ b'0'..=b'9')) => (tens - b'0') * 10 + (ones - b'0'),
        _ => return false,
    };
    bytes.len() == 60
        && (hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$"))
        && BCRYPT_COSTS.contains(&cost)
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

    #[test]
    fn bcrypt_costs_outside_04_to_31_are_refused() {
        let with_cost = |cost: &str| {
            format!("$2b${cost}$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy")
        };
        for good in ["04", "10", "31"] {
            validate_hash(&with_cost(good)).unwrap();
        }
        for bad in ["00", "03", "32", "99"] {
            assert_eq!(
                validate_hash(&with_cost(bad)).unwrap_err().id,
                ErrorId::InvalidPasswordHash,
                "{bad}"
            );
        }
    }
}
