//! Compiles the .proto files with protox (pure Rust, no protoc) and writes the
//! descriptor set that the daemon serves through gRPC reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["proto/vm.proto"], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("vmregistry_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Disk chunks as `Bytes`: the server takes them out of tonic's
        // decode buffer without a copy (shared/research/stream-throughput.md).
        .bytes(".vmregistry.v1.ImportImageRequest")
        // Guest input and output pass through as they are, without a copy.
        .bytes(".vmregistry.v1.ExecVMRequest")
        .bytes(".vmregistry.v1.ExecVMResponse")
        .bytes(".vmregistry.v1.VMLogsChunk")
        .bytes(".vmregistry.v1.VMConsoleRequest")
        .bytes(".vmregistry.v1.VMConsoleResponse")
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
