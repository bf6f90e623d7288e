//! Generates the protobuf types from `proto/` (our own definitions of the ZITADEL v2 wire facts):
//! prost messages and tonic clients, serde impls in protojson form (pbjson), and the encoded
//! descriptor set that gRPC server reflection serves. The `.proto` files are compiled by protox,
//! a protobuf compiler written in Rust: a fresh machine needs nothing installed, and no binary is
//! run at build time.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/zitadel/object/v2/object.proto",
    "proto/zitadel/user/v2/user_service.proto",
    "proto/zitadel/org/v2/org_service.proto",
    "proto/zitadel/internal_permission/v2beta/internal_permission_service.proto",
    "proto/zitadel/v1/error_detail.proto",
    "proto/zitadel/v1/object.proto",
    "proto/zitadel/policy/v1/policy.proto",
    "proto/zitadel/admin/v1/admin.proto",
    "proto/zitadel/management/v1/management.proto",
    "proto/zitadel/settings/v2/settings_service.proto",
    "proto/zitadel/session/v2/session_service.proto",
    "proto/latchkey/v1/latchkey.proto",
    "proto/google/rpc/status.proto",
];

/// `LATCHKEY_VERSION`: the crate version and the git commit, when built from a checkout (a
/// crate built from a tarball says so). Only files that exist are watched, so a build without
/// git does not rerun this script every time.
fn version() {
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    let full = match commit {
        Some(commit) => format!("{version} (commit {commit})"),
        None => format!("{version} (commit unknown)"),
    };
    println!("cargo:rustc-env=LATCHKEY_VERSION={full}");
    // HEAD, and the branch it points at (a commit moves the branch, not HEAD).
    let head = std::fs::read_to_string("../.git/HEAD").unwrap_or_default();
    let branch = head
        .strip_prefix("ref: ")
        .map(|r| format!("../.git/{}", r.trim()));
    for watched in ["../.git/HEAD".to_owned(), "../.git/packed-refs".to_owned()]
        .into_iter()
        .chain(branch)
    {
        if std::path::Path::new(&watched).exists() {
            println!("cargo:rerun-if-changed={watched}");
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    version();
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // protox knows the well-known types (google/protobuf/*.proto) itself.
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTOS)?;
    let descriptors = compiler.encode_file_descriptor_set();
    std::fs::write(out.join("latchkey_descriptor.bin"), &descriptors)?;

    let mut config = prost_build::Config::new();
    config
        // Any with protojson serde impls; Timestamp our own, which writes JSON with `Z` as the
        // wire contract says (pbjson's writes `+00:00`).
        .compile_well_known_types()
        .extern_path(".google.protobuf.Timestamp", "crate::wire::Timestamp")
        .extern_path(".google.protobuf", "::pbjson_types");
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds_with_config(compiler.file_descriptor_set(), config)?;

    // Unknown request fields are ignored (protojson's DiscardUnknown, as ZITADEL's gateway);
    // answers leave fields at their zero value out (protojson's default, as ZITADEL writes them).
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .ignore_unknown_fields()
        .build(&[".zitadel", ".latchkey"])?;

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
