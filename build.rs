//! Compiles `proto/FunctionRpc.proto` with protox (pure Rust, no system protoc) and
//! generates the prost messages and the tonic server. The serialized descriptor set is
//! also kept: Sluice hands it to the Python worker, which builds its message classes
//! from it, so both sides always share one contract.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/FunctionRpc.proto");
    let fds = protox::compile(["FunctionRpc.proto"], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("function_rpc_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .bytes(".")
        .build_client(false)
        .compile_fds(fds)?;
    Ok(())
}
