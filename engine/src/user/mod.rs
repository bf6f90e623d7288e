//! One user: its stored record, its events, its transition table and its actor.
//!
//! Read `state.rs` for the rules (which command is allowed from which state), `record.rs` for
//! what is stored (`encoded.rs`: the fields whose encoding is kept between writes), `event.rs` for the event stream, and `actor.rs` for how commands on one user
//! are serialized and made durable.

pub(crate) mod actor;
pub(crate) mod encoded;
pub(crate) mod event;
pub(crate) mod record;
pub(crate) mod state;
