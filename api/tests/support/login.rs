//! The login side of the test kit: users with a known password, the lockout policy, sessions.

use std::sync::OnceLock;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{Reply, TestServer, ADMIN_TOKEN};

/// The password of every user made by [`TestServer::create_login_user`].
pub const PASSWORD: &str = "Correct-Horse-7";

/// bcrypt at cost 4 of [`PASSWORD`]: a check costs well under a millisecond, so tests spend
/// their time on the behaviour and not in the hash.
pub fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| bcrypt::hash(PASSWORD, 4).expect("bcrypt"))
}

impl TestServer {
    /// A human user whose password is [`PASSWORD`].
    pub async fn create_login_user(&self, email: &str) -> String {
        let reply = self
            .post(
                "/v2/users/human",
                json!({
                    "profile": {"givenName": "Login", "familyName": "User"},
                    "email": {"email": email, "isVerified": true},
                    "hashedPassword": {"hash": password_hash()},
                }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        reply.body["userId"].as_str().expect("userId").to_owned()
    }

    /// Sets the instance's default lockout policy (admin v1), e.g.
    /// `json!({"maxPasswordAttempts": 3})`.
    pub async fn set_lockout(&self, policy: Value) {
        let reply = self
            .call_as(
                ADMIN_TOKEN,
                Method::PUT,
                "/admin/v1/policies/password/lockout",
                policy,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }

    /// CreateSession over REST with the checks of a login: this user, this password.
    pub async fn login(&self, user_id: &str, password: &str) -> Reply {
        self.post(
            "/v2/sessions",
            json!({"checks": {"user": {"userId": user_id}, "password": {"password": password}}}),
        )
        .await
    }

    /// A session of `user_id` whose password was checked: (session id, token).
    pub async fn session_of(&self, user_id: &str) -> (String, String) {
        let reply = self.login(user_id, PASSWORD).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        (
            reply.body["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_owned(),
            reply.body["sessionToken"]
                .as_str()
                .expect("sessionToken")
                .to_owned(),
        )
    }
}
