//! Generates the prost messages from the contract Sluice itself compiles
//! (`../proto/FunctionRpc.proto`), with protox: no system protoc needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/FunctionRpc.proto");
    let fds = protox::compile(["FunctionRpc.proto"], ["../proto"])?;
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    Ok(())
}
