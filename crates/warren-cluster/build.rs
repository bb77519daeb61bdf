//! Generates the gRPC code of `proto/{raft,cluster,queues}.proto` with a vendored `protoc`
//! (no system package needed), unless `PROTOC` names one.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: a build script is single-threaded; nothing reads the
        // environment concurrently.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("PROTOC", protoc)
        };
    }
    println!("cargo:rerun-if-changed=../../proto/raft.proto");
    println!("cargo:rerun-if-changed=../../proto/cluster.proto");
    println!("cargo:rerun-if-changed=../../proto/queues.proto");
    tonic_prost_build::configure()
        // Message bodies stay in `Bytes`: no copy between frame and queue.
        .bytes(".warren.queues")
        .build_client(true)
        .build_server(true)
        .compile_protos(
            &[
                "../../proto/raft.proto",
                "../../proto/cluster.proto",
                "../../proto/queues.proto",
            ],
            &["../../proto"],
        )?;
    Ok(())
}
