//! Generates the protobuf types from `proto/` (our own definitions of the ZITADEL v2 wire facts):
//! prost messages and tonic clients, serde impls in protojson form (pbjson), and the encoded
//! descriptor set that gRPC server reflection serves. `protoc` comes from the
//! `protoc-bin-vendored` crate, so a fresh machine needs nothing installed.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/zitadel/object/v2/object.proto",
    "proto/zitadel/user/v2/user_service.proto",
    "proto/zitadel/org/v2/org_service.proto",
    "proto/zitadel/internal_permission/v2beta/internal_permission_service.proto",
    "proto/zitadel/v1/error_detail.proto",
    "proto/google/rpc/status.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out.join("latchkey_descriptor.bin");
    let well_known = protoc_bin_vendored::include_path()?;

    let mut config = prost_build::Config::new();
    config
        .protoc_executable(protoc_bin_vendored::protoc_bin_path()?)
        .file_descriptor_set_path(&descriptors)
        // Timestamp and Any with protojson serde impls.
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types");
    let well_known = well_known
        .to_str()
        .ok_or("protoc include path is not UTF-8")?;
    let includes = ["proto", well_known];
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_with_config(config, PROTOS, &includes)?;

    let set = std::fs::read(&descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&set)?
        .build(&[".zitadel"])?;

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
