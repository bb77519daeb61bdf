use super::*;

fn death(reason: Reason, queue: &'static str, time: u64) -> Death<'static> {
    Death {
        reason,
        queue,
        exchange: "work",
        routing_keys: vec!["task".into(), "cc-key".into()],
        time,
        original_expiration: None,
    }
}

fn get<'a>(t: &'a FieldTable, k: &str) -> &'a AMQPValue {
    t.inner()
        .get(k)
        .unwrap_or_else(|| panic!("no {k} in {t:?}"))
}

fn s(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        other => panic!("not a long string: {other:?}"),
    }
}

fn deaths(h: &FieldTable) -> Vec<FieldTable> {
    match get(h, "x-death") {
        AMQPValue::FieldArray(a) => a
            .as_slice()
            .iter()
            .map(|v| match v {
                AMQPValue::FieldTable(t) => t.clone(),
                other => panic!("{other:?}"),
            })
            .collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_first_death_writes_every_field_as_rabbitmq() {
    let mut d = death(Reason::Expired, "retry", 1_700_000_000);
    d.original_expiration = Some("5000");
    let mut existing = FieldTable::default();
    existing.insert("app".into(), long_str("kept"));
    let h = record_death(Some(&existing), &d);
    assert_eq!(s(get(&h, "app")), "kept");
    let list = deaths(&h);
    assert_eq!(list.len(), 1);
    let e = &list[0];
    assert_eq!(get(e, "count"), &AMQPValue::LongLongInt(1));
    assert_eq!(s(get(e, "reason")), "expired");
    assert_eq!(s(get(e, "queue")), "retry");
    assert_eq!(s(get(e, "exchange")), "work");
    assert_eq!(get(e, "time"), &AMQPValue::Timestamp(1_700_000_000));
    assert_eq!(s(get(e, "original-expiration")), "5000");
    assert_eq!(
        get(e, "routing-keys"),
        &AMQPValue::FieldArray(FieldArray::from(vec![long_str("task"), long_str("cc-key")]))
    );
    for (k, want) in [
        ("reason", "expired"),
        ("queue", "retry"),
        ("exchange", "work"),
    ] {
        assert_eq!(s(get(&h, &format!("x-first-death-{k}"))), want);
        assert_eq!(s(get(&h, &format!("x-last-death-{k}"))), want);
    }
}

#[test]
fn deaths_merge_by_queue_and_reason_newest_first() {
    // Two rounds of a TTL retry loop: rejected in `work`, expired in `retry`.
    let mut h = None;
    for round in 0..2u64 {
        let r = record_death(h.as_ref(), &death(Reason::Rejected, "work", 10 + round));
        h = Some(record_death(
            Some(&r),
            &death(Reason::Expired, "retry", 20 + round),
        ));
    }
    let h = h.expect("headers");
    let list = deaths(&h);
    assert_eq!(list.len(), 2);
    assert_eq!(s(get(&list[0], "queue")), "retry");
    assert_eq!(get(&list[0], "count"), &AMQPValue::LongLongInt(2));
    assert_eq!(
        get(&list[0], "time"),
        &AMQPValue::Timestamp(20),
        "a merged entry keeps its first time, as RabbitMQ's"
    );
    assert_eq!(s(get(&list[1], "queue")), "work");
    assert_eq!(get(&list[1], "count"), &AMQPValue::LongLongInt(2));
    assert_eq!(s(get(&h, "x-first-death-reason")), "rejected");
    assert_eq!(s(get(&h, "x-first-death-queue")), "work");
    assert_eq!(s(get(&h, "x-last-death-reason")), "expired");
    assert_eq!(s(get(&h, "x-last-death-queue")), "retry");
}

#[test]
fn a_header_of_another_type_is_reset() {
    let mut h = FieldTable::default();
    h.insert("x-death".into(), long_str("mangled by a client"));
    let h = record_death(Some(&h), &death(Reason::Maxlen, "q", 1));
    assert_eq!(deaths(&h).len(), 1);
    assert_eq!(s(get(&deaths(&h)[0], "reason")), "maxlen");
}

#[test]
fn only_an_automatic_cycle_is_one() {
    assert!(!is_death_cycle(None, "a"));
    // a -expired-> b -expired-> back to a: a cycle with no rejection.
    let h = record_death(None, &death(Reason::Expired, "a", 1));
    let h = record_death(Some(&h), &death(Reason::Expired, "b", 2));
    assert!(is_death_cycle(Some(&h), "a"));
    assert!(is_death_cycle(Some(&h), "b"));
    assert!(!is_death_cycle(Some(&h), "c"), "never died in c");
    // A rejection on the way makes it a client's loop: it goes on.
    let h = record_death(None, &death(Reason::Rejected, "a", 1));
    let h = record_death(Some(&h), &death(Reason::Expired, "b", 2));
    assert!(!is_death_cycle(Some(&h), "a"));
}
