use super::*;

fn secret() -> ClusterSecret {
    ClusterSecret::new("a test secret of enough bytes\n").expect("secret")
}

/// The headers a signer puts on a call to `path`.
fn signed(signer: &mut Signer, service: &'static str, method: &'static str) -> MetadataMap {
    let mut req = Request::new(());
    req.extensions_mut()
        .insert(GrpcMethod::new(service, method));
    signer.call(req).expect("signed").metadata().clone()
}

fn check(v: &Verifier, path: &str, md: &MetadataMap) -> Result<(), Refusal> {
    v.check(path, md)
}

#[test]
fn a_signed_call_passes_once() {
    let id = Arc::new(ClusterId::default());
    let mut signer = Signer::new(Some(secret()), id.clone());
    let v = Verifier::new(secret(), id);
    let md = signed(&mut signer, "warren.raft.Raft", "Vote");
    assert_eq!(check(&v, "/warren.raft.Raft/Vote", &md), Ok(()));
    assert_eq!(
        check(&v, "/warren.raft.Raft/Vote", &md),
        Err(Refusal::Replayed)
    );
    // The proof is bound to its path.
    let md = signed(&mut signer, "warren.raft.Raft", "Vote");
    assert_eq!(
        check(&v, "/warren.cluster.Cluster/Propose", &md),
        Err(Refusal::BadMac)
    );
}

#[test]
fn a_wrong_missing_or_garbled_proof_is_refused() {
    let id = Arc::new(ClusterId::default());
    let other = ClusterSecret::new("another secret, also long").expect("secret");
    let mut signer = Signer::new(Some(other), id.clone());
    let v = Verifier::new(secret(), id);
    let path = "/warren.raft.Raft/Vote";
    let md = signed(&mut signer, "warren.raft.Raft", "Vote");
    assert_eq!(check(&v, path, &md), Err(Refusal::BadMac));
    assert_eq!(check(&v, path, &MetadataMap::new()), Err(Refusal::NoProof));
    for garbage in [
        "",
        "v1",
        "v1.1.2.3",
        "v2.1.00000000000000000000000000000000.00",
        "v1.x.00000000000000000000000000000000.00",
        "v1.1.00000000000000000000000000000000.zz",
        "v1.1.00000000000000000000000000000000.0.extra",
        "v1.99999999999999999999999.0.0",
    ] {
        let mut md = MetadataMap::new();
        md.insert(AUTH_HEADER, MetadataValue::from_static(garbage));
        assert_eq!(check(&v, path, &md), Err(Refusal::Malformed), "{garbage:?}");
    }
    assert!(ClusterSecret::new("short").is_err());
}

#[test]
fn a_stale_proof_is_refused() {
    let id = Arc::new(ClusterId::default());
    let v = Verifier::new(secret(), id);
    let path = "/warren.raft.Raft/Vote";
    let old = now_millis() - 2 * u64::try_from(WINDOW.as_millis()).expect("ms");
    let nonce = 42u128;
    let mac = secret().mac(path, old, nonce, "").finalize().into_bytes();
    let mut md = MetadataMap::new();
    let proof = format!("v1.{old}.{nonce:032x}.{}", hex(&mac));
    md.insert(
        AUTH_HEADER,
        MetadataValue::try_from(proof.as_str()).expect("ascii"),
    );
    assert_eq!(check(&v, path, &md), Err(Refusal::Stale));
}

#[test]
fn the_cluster_id_is_checked_once_known() {
    let ours = Arc::new(ClusterId::default());
    let theirs = Arc::new(ClusterId::default());
    let v = Verifier::new(secret(), ours.clone());
    let mut from_them = Signer::new(Some(secret()), theirs.clone());
    let mut fresh = Signer::new(Some(secret()), Arc::new(ClusterId::default()));
    let raft = "/warren.raft.Raft/AppendEntries";
    // A node without an id accepts any cluster's calls.
    assert!(theirs.set(2));
    let md = signed(&mut from_them, "warren.raft.Raft", "AppendEntries");
    assert_eq!(check(&v, raft, &md), Ok(()));
    // Once it knows its id: another id is refused, none too for Raft.
    assert!(ours.set(1));
    assert!(!ours.set(3), "the id does not change");
    let md = signed(&mut from_them, "warren.raft.Raft", "AppendEntries");
    assert_eq!(check(&v, raft, &md), Err(Refusal::OtherCluster));
    let md = signed(&mut fresh, "warren.raft.Raft", "AppendEntries");
    assert_eq!(check(&v, raft, &md), Err(Refusal::NoClusterId));
    let md = signed(&mut fresh, "warren.cluster.Cluster", "Status");
    assert_eq!(check(&v, "/warren.cluster.Cluster/Status", &md), Ok(()));
    let mut ours_signer = Signer::new(Some(secret()), ours);
    let md = signed(&mut ours_signer, "warren.raft.Raft", "AppendEntries");
    assert_eq!(check(&v, raft, &md), Ok(()));
}

#[test]
fn the_nonce_cache_is_bounded_and_refuses_what_it_forgot() {
    let mut n = Nonces::default();
    let now = Instant::now();
    for i in 0..(NONCE_CACHE as u128 + 10) {
        assert!(n.admit(i, 1000 + i as u64, now));
    }
    assert_eq!(n.order.len(), NONCE_CACHE);
    // Nonce 0 was dropped early: its time is now below the floor.
    assert!(!n.admit(0, 1000, now));
    assert!(n.admit(u128::MAX, 1_000_000_000, now));
    // Past twice the window everything expires.
    assert!(n.admit(5, 2_000_000_000, now + 3 * WINDOW));
    assert_eq!(n.order.len(), 1);
}

#[test]
fn a_failed_tls_handshake_counts_as_a_refusal_and_a_refused_connection_does_not() {
    let r = Refusals::default();
    let tls = Status::unavailable("transport error: invalid peer certificate: UnknownIssuer");
    assert!(r.note("10.0.0.2:25672", &tls));
    assert!(
        r.note("10.0.0.2:25672", &tls),
        "still a refusal, logged once"
    );
    let down = Status::unavailable("transport error: Connection refused (os error 111)");
    assert!(!r.note("10.0.0.3:25672", &down));
    assert!(r.note("10.0.0.3:25672", &Status::unauthenticated("bad proof")));
    assert!(!r.note(
        "10.0.0.3:25672",
        &Status::internal("handshake of another kind")
    ));
}
