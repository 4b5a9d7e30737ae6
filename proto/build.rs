//! Compiles proto/farm/v1/*.proto with protox (pure Rust), so no system protoc is needed.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["farm/v1/farm.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("farm_descriptor.bin"), fds.encode_to_vec())?;
    // No generated `connect` constructors: NodeService has an rpc named Connect.
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
