//! The generated protobuf types (from `proto/`, see `build.rs`): prost messages with protojson
//! serde impls, tonic clients, and the descriptor set served by gRPC reflection.
//!
//! They are Latchkey's only wire model: every protocol decodes a request into these messages (JSON
//! by their protojson impls, binary by prost) and every command answers with one
//! (`rpc/*.rs`). `google.protobuf.Timestamp` is `wire::Timestamp`, so that JSON ends in `Z`.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod zitadel {
    pub mod object {
        pub mod v2 {
            include!(concat!(env!("OUT_DIR"), "/zitadel.object.v2.rs"));
            include!(concat!(env!("OUT_DIR"), "/zitadel.object.v2.serde.rs"));
        }
    }
    pub mod user {
        pub mod v2 {
            include!(concat!(env!("OUT_DIR"), "/zitadel.user.v2.rs"));
            include!(concat!(env!("OUT_DIR"), "/zitadel.user.v2.serde.rs"));
        }
    }
    pub mod org {
        pub mod v2 {
            include!(concat!(env!("OUT_DIR"), "/zitadel.org.v2.rs"));
            include!(concat!(env!("OUT_DIR"), "/zitadel.org.v2.serde.rs"));
        }
    }
    pub mod internal_permission {
        pub mod v2beta {
            include!(concat!(
                env!("OUT_DIR"),
                "/zitadel.internal_permission.v2beta.rs"
            ));
            include!(concat!(
                env!("OUT_DIR"),
                "/zitadel.internal_permission.v2beta.serde.rs"
            ));
        }
    }
    pub mod session {
        pub mod v2 {
            include!(concat!(env!("OUT_DIR"), "/zitadel.session.v2.rs"));
            include!(concat!(env!("OUT_DIR"), "/zitadel.session.v2.serde.rs"));
        }
    }
    pub mod settings {
        pub mod v2 {
            include!(concat!(env!("OUT_DIR"), "/zitadel.settings.v2.rs"));
            include!(concat!(env!("OUT_DIR"), "/zitadel.settings.v2.serde.rs"));
        }
    }
    pub mod policy {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/zitadel.policy.v1.rs"));
            include!(concat!(env!("OUT_DIR"), "/zitadel.policy.v1.serde.rs"));
        }
    }
    pub mod admin {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/zitadel.admin.v1.rs"));
            include!(concat!(env!("OUT_DIR"), "/zitadel.admin.v1.serde.rs"));
        }
    }
    pub mod management {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/zitadel.management.v1.rs"));
            include!(concat!(env!("OUT_DIR"), "/zitadel.management.v1.serde.rs"));
        }
    }
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/zitadel.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/zitadel.v1.serde.rs"));
    }
}

pub mod latchkey {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/latchkey.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/latchkey.v1.serde.rs"));
    }
}

pub mod google {
    pub mod rpc {
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

/// Every file in `proto/`, encoded, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/latchkey_descriptor.bin"));
