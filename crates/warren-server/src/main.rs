//! The `warren` binary: thin on purpose; everything lives in the library.

mod access_cli;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use warren_cluster::pb::MemberChange;
use warren_server::{ClusterClientArgs, Config, Server, ServerArgs};

/// Warren: a clustered AMQP 0-9-1 message broker.
#[derive(Parser, Debug)]
#[command(name = "warren", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node.
    Server(Box<ServerArgs>),
    /// Inspect or change the cluster through a node's cluster listener.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Inspect quorum queues through a node's cluster listener.
    #[command(subcommand)]
    Queues(QueuesCommand),
    /// Add, delete or list vhosts through a node's cluster listener.
    #[command(subcommand)]
    Vhosts(access_cli::VhostsCommand),
    /// Add, delete or list AMQP users through a node's cluster listener.
    #[command(subcommand)]
    Users(access_cli::UsersCommand),
    /// Set, clear or list users' permissions through a node's cluster
    /// listener.
    #[command(subcommand)]
    Permissions(access_cli::PermissionsCommand),
    /// Ask a node's HTTP listener whether it is alive or ready: exits 0 on
    /// 200, 1 otherwise (the image's HEALTHCHECK).
    Probe {
        /// What to ask.
        #[arg(value_enum)]
        what: ProbeWhat,
        /// The node's HTTP address [default: this node's WARREN_HTTP_LISTEN
        /// on loopback, or 127.0.0.1:15672].
        #[arg(long)]
        http: Option<String>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout_secs: u64,
    },
    /// Before stopping a node: move the leadership of the quorum queues it
    /// leads to their other members, so that its stop costs them no
    /// election (a Kubernetes preStop hook). Gives up, exiting 0, after
    /// --timeout-secs.
    Drain {
        /// The node's cluster address.
        #[arg(long, env = "WARREN_SERVER", default_value = DEFAULT_CLUSTER_SERVER)]
        server: String,
        /// Bound on the whole drain, seconds.
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
        /// The cluster secret (and TLS files) to prove.
        #[command(flatten)]
        auth: ClusterClientArgs,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ProbeWhat {
    /// GET /health.
    Health,
    /// GET /ready.
    Ready,
}

#[derive(Subcommand, Debug)]
enum QueuesCommand {
    /// Every quorum queue replica: its node, state, leader and log position,
    /// and on each leader how far its members lag.
    Status {
        /// A node's cluster address.
        #[arg(long, env = "WARREN_SERVER", default_value = DEFAULT_CLUSTER_SERVER)]
        server: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The cluster secret (and TLS files) to prove.
        #[command(flatten)]
        auth: ClusterClientArgs,
    },
    /// Add a replica of a quorum queue on a node (it catches up, then votes).
    AddMember(MemberArgs),
    /// Remove a quorum queue's replica from a node (its data there goes).
    DeleteMember(MemberArgs),
    /// Make a node that holds a replica the queue's leader.
    TransferLeader(MemberArgs),
    /// Move quorum queue leaders so that the nodes lead about as many each.
    Rebalance {
        /// A node's cluster address.
        #[arg(long, env = "WARREN_SERVER", default_value = DEFAULT_CLUSTER_SERVER)]
        server: String,
        /// The cluster secret (and TLS files) to prove.
        #[command(flatten)]
        auth: ClusterClientArgs,
    },
    /// Add a replica on a node to every quorum queue that has none there.
    Grow(NodeArgs),
    /// Remove a node's replicas from every quorum queue (but a queue's last).
    Shrink(NodeArgs),
}

#[derive(clap::Args, Debug)]
struct MemberArgs {
    /// The quorum queue.
    queue: String,
    /// The node's id.
    node: u64,
    /// The queue's vhost.
    #[arg(long, default_value = "/")]
    vhost: String,
    /// A node's cluster address.
    #[arg(long, env = "WARREN_SERVER", default_value = DEFAULT_CLUSTER_SERVER)]
    server: String,
    /// The cluster secret (and TLS files) to prove.
    #[command(flatten)]
    auth: ClusterClientArgs,
}

#[derive(clap::Args, Debug)]
struct NodeArgs {
    /// The node's id.
    node: u64,
    /// A node's cluster address.
    #[arg(long, env = "WARREN_SERVER", default_value = DEFAULT_CLUSTER_SERVER)]
    server: String,
    /// The cluster secret (and TLS files) to prove.
    #[command(flatten)]
    auth: ClusterClientArgs,
}

/// Default address of a node's cluster listener for the admin commands.
const DEFAULT_CLUSTER_SERVER: &str = "127.0.0.1:25672";

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Members, the leader, each node's state and log position.
    Status {
        /// A node's cluster address.
        #[arg(long, env = "WARREN_SERVER", default_value = DEFAULT_CLUSTER_SERVER)]
        server: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The cluster secret (and TLS files) to prove.
        #[command(flatten)]
        auth: ClusterClientArgs,
    },
    /// Add a node (started with its own --node-id and --cluster-listen).
    AddNode {
        /// A member's cluster address.
        #[arg(long, env = "WARREN_SERVER", default_value = DEFAULT_CLUSTER_SERVER)]
        server: String,
        /// The new node's id.
        #[arg(long)]
        id: u64,
        /// The new node's cluster address.
        #[arg(long)]
        addr: String,
        /// The cluster secret (and TLS files) to prove.
        #[command(flatten)]
        auth: ClusterClientArgs,
    },
    /// Remove a node from the cluster.
    RemoveNode {
        /// A member's cluster address.
        #[arg(long, env = "WARREN_SERVER", default_value = DEFAULT_CLUSTER_SERVER)]
        server: String,
        /// The node's id.
        #[arg(long)]
        id: u64,
        /// The cluster secret (and TLS files) to prove.
        #[command(flatten)]
        auth: ClusterClientArgs,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => {
            let args = args.with_env();
            let config = Config::resolve(&args)?;
            let filter = EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(&config.log_level));
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_target(false)
                .init();
            warren_server::allocator::return_large_blocks();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.worker_threads)
                .enable_all()
                .build()?;
            rt.block_on(run(config))
        }
        Command::Cluster(cmd) => admin_runtime()?.block_on(cluster(cmd)),
        Command::Queues(cmd) => admin_runtime()?.block_on(queues(cmd)),
        Command::Vhosts(cmd) => admin_runtime()?.block_on(access_cli::vhosts(cmd)),
        Command::Users(cmd) => admin_runtime()?.block_on(access_cli::users(cmd)),
        Command::Permissions(cmd) => admin_runtime()?.block_on(access_cli::permissions(cmd)),
        Command::Probe {
            what,
            http,
            timeout_secs,
        } => {
            let addr = http.unwrap_or_else(|| {
                let listen = std::env::var("WARREN_HTTP_LISTEN").ok();
                warren_server::http::probe::default_addr(listen.as_deref())
            });
            let path = match what {
                ProbeWhat::Health => "/health",
                ProbeWhat::Ready => "/ready",
            };
            let timeout = std::time::Duration::from_secs(timeout_secs);
            let answer =
                admin_runtime()?.block_on(warren_server::http::probe::get(&addr, path, timeout));
            match answer {
                Ok((200, body)) => {
                    println!("{body}");
                    Ok(())
                }
                Ok((code, body)) => {
                    println!("{body}");
                    std::process::exit(if code == 503 { 1 } else { 2 });
                }
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Drain {
            server,
            timeout_secs,
            auth,
        } => admin_runtime()?.block_on(drain(server, timeout_secs, auth)),
    }
}

async fn drain(server: String, timeout_secs: u64, auth: ClusterClientArgs) -> anyhow::Result<()> {
    use warren_cluster::admin_client as admin;
    let sec = security(auth)?;
    let limit = std::time::Duration::from_secs(timeout_secs);
    let Ok(moves) = tokio::time::timeout(limit, admin::drain(&sec, &server)).await else {
        println!("drain: gave up after {timeout_secs} s; stopping anyway");
        return Ok(());
    };
    let moves = moves?;
    let mut failed = 0;
    for (queue, to, r) in &moves {
        match r {
            Ok(()) => println!("{queue}: leader -> {to}"),
            Err(e) => {
                failed += 1;
                println!("{queue}: leader -> {to} failed: {e}");
            }
        }
    }
    if moves.is_empty() {
        println!("this node leads no quorum queue that has another member");
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} leaderships not moved", moves.len());
    }
    Ok(())
}

/// The runtime of an admin command: one thread, a few calls.
fn admin_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

async fn queues(cmd: QueuesCommand) -> anyhow::Result<()> {
    use warren_cluster::admin_client as admin;
    match cmd {
        QueuesCommand::Status { server, json, auth } => {
            let rs = admin::queue_status(&security(auth)?, &server).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rs)?);
            } else {
                print!("{}", admin::render_queues(&rs));
            }
        }
        QueuesCommand::AddMember(a) => member(a, MemberChange::AddMember).await?,
        QueuesCommand::DeleteMember(a) => member(a, MemberChange::DeleteMember).await?,
        QueuesCommand::TransferLeader(a) => member(a, MemberChange::TransferLeader).await?,
        QueuesCommand::Rebalance { server, auth } => {
            let moves = admin::rebalance(&security(auth)?, &server).await?;
            let mut failed = 0;
            for (queue, from, to, r) in &moves {
                match r {
                    Ok(()) => println!("{queue}: leader {from} -> {to}"),
                    Err(e) => {
                        failed += 1;
                        println!("{queue}: leader {from} -> {to} failed: {e}");
                    }
                }
            }
            if moves.is_empty() {
                println!("leaders are balanced");
            }
            if failed > 0 {
                anyhow::bail!("{failed} of {} moves failed", moves.len());
            }
        }
        QueuesCommand::Grow(a) => regrow(a, true).await?,
        QueuesCommand::Shrink(a) => regrow(a, false).await?,
    }
    Ok(())
}

async fn member(a: MemberArgs, change: MemberChange) -> anyhow::Result<()> {
    use warren_cluster::admin_client as admin;
    let sec = security(a.auth)?;
    let replicas =
        admin::queue_members(&sec, &a.server, &a.vhost, &a.queue, a.node, change).await?;
    println!("{}: replicas {replicas:?}", a.queue);
    Ok(())
}

async fn regrow(a: NodeArgs, add: bool) -> anyhow::Result<()> {
    use warren_cluster::admin_client as admin;
    let changed = admin::regrow(&security(a.auth)?, &a.server, a.node, add).await?;
    let mut failed = 0;
    for (queue, r) in &changed {
        match r {
            Ok(replicas) => println!("{queue}: replicas {replicas:?}"),
            Err(e) => {
                failed += 1;
                println!("{queue}: failed: {e}");
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} queues not changed", changed.len());
    }
    Ok(())
}

async fn cluster(cmd: ClusterCommand) -> anyhow::Result<()> {
    use warren_cluster::admin_client as admin;
    match cmd {
        ClusterCommand::Status { server, json, auth } => {
            let sec = security(auth)?;
            let s = admin::cluster_status(&sec, &server).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", admin::render(&s));
            }
        }
        ClusterCommand::AddNode {
            server,
            id,
            addr,
            auth,
        } => {
            let voters = admin::add_node(&security(auth)?, &server, id, &addr).await?;
            println!("node {id} added; voters: {:?}", ids(&voters));
        }
        ClusterCommand::RemoveNode { server, id, auth } => {
            let voters = admin::remove_node(&security(auth)?, &server, id).await?;
            println!("node {id} removed; voters: {:?}", ids(&voters));
        }
    }
    Ok(())
}

/// The admin calls' secret and TLS settings, from the same sources as a
/// node's (flags, environment, `--config`).
fn security(mut auth: ClusterClientArgs) -> anyhow::Result<warren_cluster::Security> {
    auth.security = auth.security.with_env();
    Ok(auth.resolve()?)
}

fn ids(members: &[warren_cluster::pb::Member]) -> Vec<u64> {
    members.iter().map(|m| m.id).collect()
}

async fn run(config: Config) -> anyhow::Result<()> {
    // Start waits for a majority of the cluster; a signal meanwhile ends it.
    let server = tokio::select! {
        s = Server::start(config) => s?,
        _ = wait_for_signal() => return Ok(()),
    };
    wait_for_signal().await;
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // No signal handling available: run until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
