use super::*;

#[test]
fn defaults_need_no_config() {
    let c = Config::resolve(&ServerArgs::default()).expect("defaults");
    assert_eq!(c.amqp_listen.to_string(), "0.0.0.0:5672");
    assert_eq!(c.data_dir, PathBuf::from("data"));
    assert_eq!(c.memory_high_watermark, Watermark::Fraction(0.4));
}

#[test]
fn flags_override_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("warren.toml");
    std::fs::write(
        &path,
        "amqp-listen = \"127.0.0.1:1\"\ndata-dir = \"/x\"\nmemory-high-watermark = \"64MiB\"\n[[users]]\nname = \"a\"\npassword = \"b\"\n",
    )
    .expect("write");
    let args = ServerArgs {
        config: Some(path),
        amqp_listen: Some("127.0.0.1:2".into()),
        ..Default::default()
    };
    let c = Config::resolve(&args).expect("resolve");
    assert_eq!(c.amqp_listen.to_string(), "127.0.0.1:2");
    assert_eq!(c.data_dir, PathBuf::from("/x"));
    assert_eq!(c.memory_high_watermark, Watermark::Bytes(64 << 20));
    assert_eq!(
        c.users,
        vec![User {
            name: "a".into(),
            password: "b".into()
        }]
    );
}

fn with_secret() -> SecurityArgs {
    SecurityArgs {
        cluster_secret: Some("a secret of sixteen bytes or more".into()),
        ..Default::default()
    }
}

#[test]
fn cluster_options() {
    let args = ServerArgs {
        node_id: Some(2),
        cluster_listen: Some("127.0.0.2:25672".into()),
        peers: Some("1=127.0.0.1:25672, 2=127.0.0.2:25672,3=127.0.0.3:25672".into()),
        security: with_secret(),
        ..Default::default()
    };
    let c = Config::resolve(&args).expect("resolve");
    assert_eq!(c.node_id, 2);
    assert_eq!(c.peers.len(), 3);
    assert_eq!(c.advertised_addr(), "127.0.0.2:25672");
    assert!(parse_peers("1=a:1,1=b:2").is_err());
    assert!(parse_peers("0=a:1").is_err());
    assert!(parse_peers("x").is_err());
    let no_listener = ServerArgs {
        peers: Some("1=a:1,2=b:2".into()),
        security: with_secret(),
        ..Default::default()
    };
    assert!(Config::resolve(&no_listener).is_err());
}

#[test]
fn cluster_options_need_a_secret() {
    let no_secret = ServerArgs {
        cluster_listen: Some("127.0.0.2:25672".into()),
        ..Default::default()
    };
    let e = Config::resolve(&no_secret).expect_err("no secret");
    assert!(e.to_string().contains("need a cluster secret"), "{e}");
    let short = ServerArgs {
        cluster_listen: Some("127.0.0.2:25672".into()),
        security: SecurityArgs {
            cluster_secret: Some("short".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(Config::resolve(&short).is_err());
    // From the file: a path or the value.
    let dir = tempfile::tempdir().expect("tmp");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a secret of sixteen bytes or more\n").expect("write");
    let path = dir.path().join("warren.toml");
    std::fs::write(
        &path,
        format!(
            "cluster-listen = \"127.0.0.1:1\"\ncluster-secret-file = {:?}\n",
            secret.display().to_string()
        ),
    )
    .expect("write");
    let from_file = ServerArgs {
        config: Some(path),
        ..Default::default()
    };
    let c = Config::resolve(&from_file).expect("secret from the file");
    assert!(c.cluster_secret.is_some());
    assert!(
        !format!("{c:?}").contains("sixteen"),
        "the secret is never printed"
    );
    // TLS needs all three files.
    let half_tls = ServerArgs {
        security: SecurityArgs {
            cluster_tls_cert: Some(secret.clone()),
            ..with_secret()
        },
        ..Default::default()
    };
    assert!(Config::resolve(&half_tls).is_err());
}

#[test]
fn watermark_forms() {
    assert_eq!(Watermark::parse("0.4"), Ok(Watermark::Fraction(0.4)));
    assert_eq!(Watermark::parse("2GB"), Ok(Watermark::Bytes(2_000_000_000)));
    assert_eq!(Watermark::parse("1000"), Ok(Watermark::Bytes(1000)));
    assert!(Watermark::parse("1.5").is_err());
    assert!(Watermark::parse("12XB").is_err());
}

#[test]
fn the_wal_preallocated_at_start_is_64_mib_unless_told_otherwise() {
    let c = Config::resolve(&ServerArgs::default()).expect("defaults");
    assert_eq!(c.wal_preallocate, 64 << 20);
    let flag = |v: &str| ServerArgs {
        wal_preallocate: Some(v.into()),
        ..Default::default()
    };
    assert_eq!(
        Config::resolve(&flag("16MiB"))
            .expect("16MiB")
            .wal_preallocate,
        16 << 20
    );
    assert_eq!(Config::resolve(&flag("0")).expect("off").wal_preallocate, 0);
    assert!(Config::resolve(&flag("lots")).is_err());
    assert!(Config::resolve(&flag("3XB")).is_err());
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("warren.toml");
    std::fs::write(&path, "wal-preallocate = 1048576\n").expect("write");
    let file = ServerArgs {
        config: Some(path),
        ..Default::default()
    };
    assert_eq!(
        Config::resolve(&file).expect("file").wal_preallocate,
        1 << 20
    );
    // The library's own default (embedded nodes, tests) writes none.
    assert_eq!(Config::default().wal_preallocate, 0);
}

#[test]
fn http_listens_on_15672_unless_told_otherwise() {
    let c = Config::resolve(&ServerArgs::default()).expect("defaults");
    assert_eq!(
        c.http_listen.map(|a| a.to_string()).as_deref(),
        Some("0.0.0.0:15672")
    );
    let off = ServerArgs {
        http_listen: Some("off".into()),
        ..Default::default()
    };
    assert_eq!(Config::resolve(&off).expect("off").http_listen, None);
    let bad_addr = ServerArgs {
        http_listen: Some("nowhere".into()),
        ..Default::default()
    };
    assert!(Config::resolve(&bad_addr).is_err());
    // The library's own default (embedded nodes, tests) opens nothing.
    assert_eq!(Config::default().http_listen, None);
}

#[test]
fn peers_from_a_dns_pattern() {
    let args = ServerArgs {
        node_id: Some(2),
        cluster_listen: Some("0.0.0.0:25672".into()),
        peers_from_dns: Some("warren-{i}.warren-headless.ns.svc.cluster.local:25672".into()),
        cluster_size: Some(3),
        security: with_secret(),
        ..Default::default()
    };
    let c = Config::resolve(&args).expect("resolve");
    assert_eq!(c.peers.len(), 3);
    assert_eq!(
        c.advertised_addr(),
        "warren-1.warren-headless.ns.svc.cluster.local:25672"
    );
    let both = ServerArgs {
        peers: Some("1=a:1".into()),
        ..args.clone()
    };
    assert!(Config::resolve(&both).is_err());
    let no_size = ServerArgs {
        cluster_size: None,
        ..args
    };
    assert!(Config::resolve(&no_size).is_err());
}

#[test]
fn a_default_user_replaces_guest_and_needs_its_password() {
    let args = ServerArgs {
        default_user: Some("app".into()),
        default_pass: Some("s3cret".into()),
        ..Default::default()
    };
    let c = Config::resolve(&args).expect("resolve");
    assert_eq!(
        c.users,
        vec![User {
            name: "app".into(),
            password: "s3cret".into()
        }]
    );
    let no_pass = ServerArgs {
        default_pass: None,
        ..args
    };
    assert!(Config::resolve(&no_pass).is_err());
}

#[test]
fn worker_threads_default_to_one_fewer_than_the_cpus() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let c = Config::resolve(&ServerArgs::default()).expect("defaults");
    assert_eq!(c.worker_threads, cpus.saturating_sub(1).max(1));
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("warren.toml");
    std::fs::write(&path, "worker-threads = 3\n").expect("write");
    let from_file = ServerArgs {
        config: Some(path.clone()),
        ..Default::default()
    };
    assert_eq!(Config::resolve(&from_file).expect("file").worker_threads, 3);
    let flag = ServerArgs {
        config: Some(path),
        worker_threads: Some(5),
        ..Default::default()
    };
    assert_eq!(Config::resolve(&flag).expect("flag").worker_threads, 5);
    let zero = ServerArgs {
        worker_threads: Some(0),
        ..Default::default()
    };
    assert!(
        Config::resolve(&zero)
            .expect_err("0 threads")
            .to_string()
            .contains("worker-threads")
    );
}
