//! Latchkey embedded in another Rust binary: no HTTP, the same engine the server uses.
//!
//! Run with `cargo run -p latchkey-engine --example embedded`.

use latchkey_engine::{Caller, Config, Email, Engine, NewHuman, PasswordInput, Profile};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("latchkey-example-{}", std::process::id()));
    let engine = Engine::open(Config::default().data_dir(&dir)).await?;

    // First start: a default organization and an admin. Embedders can act as a system caller.
    let boot = engine
        .bootstrap(None)
        .await?
        .ok_or("the directory was bootstrapped before")?;
    let caller = Caller::system(boot.org_id);

    let created = engine
        .add_human_user(
            &caller,
            NewHuman {
                profile: Profile {
                    given_name: "Ada".into(),
                    family_name: "Lovelace".into(),
                    ..Default::default()
                },
                email: Email {
                    email: "ada@example.com".into(),
                    is_verified: true,
                },
                password: Some(PasswordInput::Plain {
                    password: "correct horse battery staple".into(),
                    change_required: false,
                }),
                ..Default::default()
            },
        )
        .await?;
    let id = created.user_id;

    engine.lock_user(&caller, &id).await?;
    let details = engine.unlock_user(&caller, &id).await?;
    println!("unlocked {id}: sequence {}", details.sequence);

    match engine.unlock_user(&caller, &id).await {
        Err(e) => println!("second unlock refused: {} ({})", e.message(), e.id.id()),
        Ok(_) => return Err("a user is unlocked exactly once".into()),
    }

    engine.shutdown().await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
