//! Compiles the test kubelet's CRI subset (proto/kubelet_cri.proto) with protox
//! (pure Rust, no system protoc), as the proto crate does for the node agent's.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/kubelet_cri.proto");
    let descriptors = protox::compile(["proto/kubelet_cri.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
