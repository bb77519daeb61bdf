//! `warren-bench`: see the library for the options.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = warren_bench::Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let summary = rt.block_on(warren_bench::run(args))?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
