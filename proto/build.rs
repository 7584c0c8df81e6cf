//! Compiles `kmsim/v1/*.proto` with protox (no system `protoc`) and generates the tonic
//! clients and servers, plus the encoded descriptor set served by reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let files = [
        "kmsim/v1/errors.proto",
        "kmsim/v1/instance.proto",
        "kmsim/v1/key.proto",
        "kmsim/v1/simulator.proto",
        "kmsim/v1/hsm.proto",
        "kmsim/v1/iam.proto",
        "kmsim/v1/policy.proto",
        "kmsim/v1/lifecycle.proto",
        "kmsim/v1/audit.proto",
        "kmsim/v1/registration.proto",
        "kmsim/v1/event.proto",
        // Only for reflection: tonic-types provides the Rust types of these messages.
        "google/rpc/error_details.proto",
    ]
    .map(|name| root.join(name));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(files, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // `compile_fds` does not write the set itself: encode it for reflection here.
    std::fs::write(
        out_dir.join("kmsim_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    // Undecodable bodies are the caller's mistake: `codec::KmsCodec` answers BAD_BODY_ERR.
    tonic_prost_build::configure()
        .codec_path("crate::codec::KmsCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
