//! One user: its stored record, its events, its transition table and its actor.
//!
//! Read `state.rs` for the rules (which command is allowed from which state), `lockout.rs` for
//! the lockout rules, `record.rs` for what is stored (`encoded.rs`: the fields whose encoding is
//! kept between writes), `event.rs` for the event stream, `actor.rs` for how commands on one user
//! are serialized and made durable, `published.rs` for how reads of an active user skip the hop to
//! it, `checks.rs` for how its password checks are, and `index.rs`
//! for what ListUsers' indexes hold of it.

pub(crate) mod actor;
pub(crate) mod checks;
pub(crate) mod encoded;
pub(crate) mod event;
pub(crate) mod index;
pub(crate) mod lockout;
pub(crate) mod published;
pub(crate) mod record;
pub(crate) mod state;
