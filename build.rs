//! Generates the Kubernetes KMS v2 gRPC code (prost messages, tonic server and client) from
//! proto/kms_v2.proto with protox: no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/kms_v2.proto");
    let descriptors = protox::compile(["proto/kms_v2.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
