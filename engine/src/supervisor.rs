//! The supervisor of all user actors.
//!
//! ractor has no restart strategies, and a supervisor's default reaction to a child's exit is
//! to stop itself. Ours never stops: when a user actor ends (passivated, stopped, or panicked) it
//! drops that actor from the registry. A panicked actor's callers have already been answered with
//! an error (their reply ports were dropped); the next message for that user activates a fresh
//! actor from durable state — restart is lazy.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::registry::Registry;

pub(crate) struct Supervisor;

impl Actor for Supervisor {
    type Msg = ();
    type State = Arc<Registry>;
    type Arguments = Arc<Registry>;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        registry: Arc<Registry>,
    ) -> Result<Arc<Registry>, ActorProcessingErr> {
        Ok(registry)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<()>,
        event: SupervisionEvent,
        registry: &mut Arc<Registry>,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => registry.forget(cell.get_id(), false),
            SupervisionEvent::ActorFailed(cell, error) => {
                tracing::warn!(actor = %cell.get_id(), "user actor failed: {error}");
                registry.forget(cell.get_id(), true);
            }
            _ => {}
        }
        Ok(())
    }
}
