use super::*;

fn limits(max: Option<u64>, overflow: Option<&str>) -> Limits {
    Limits::of(&QueueArgs {
        max_length: max,
        overflow: overflow.map(str::to_owned),
        ..QueueArgs::default()
    })
}

fn bytes_limit(max: u64, overflow: Option<&str>) -> Limits {
    Limits::of(&QueueArgs {
        max_length_bytes: Some(max),
        overflow: overflow.map(str::to_owned),
        ..QueueArgs::default()
    })
}

fn ready(len: usize) -> Ready {
    Ready {
        len,
        bytes: 10 * len as u64,
    }
}

#[test]
fn no_limit_never_refuses_or_drops() {
    let l = limits(None, Some("reject-publish"));
    assert!(!l.refuses(ready(1_000_000), 10));
    assert!(!limits(None, None).over(ready(1_000_000)));
}

#[test]
fn drop_head_is_the_default_and_drops_what_is_over() {
    let l = limits(Some(2), None);
    assert_eq!(l.overflow, Overflow::DropHead);
    assert!(!l.refuses(ready(10), 10));
    assert!(!l.over(ready(2)));
    assert!(l.over(ready(3)));
}

#[test]
fn reject_publish_refuses_at_the_limit_and_never_drops() {
    for mode in ["reject-publish", "reject-publish-dlx"] {
        let l = limits(Some(2), Some(mode));
        assert!(!l.refuses(ready(1), 10), "{mode}");
        assert!(l.refuses(ready(2), 10), "{mode}");
        assert!(l.refuses(ready(3), 10), "{mode}");
        assert!(!l.over(ready(5)), "{mode}");
    }
}

#[test]
fn a_limit_of_zero_keeps_nothing_ready() {
    assert!(limits(Some(0), None).over(ready(1)));
    assert!(limits(Some(0), Some("reject-publish")).refuses(ready(0), 0));
}

#[test]
fn body_bytes_count_like_rabbitmq() {
    // drop-head: over when the bodies of ready messages pass the limit.
    let l = bytes_limit(25, None);
    assert!(!l.over(ready(2)), "20 bytes");
    assert!(l.over(ready(3)), "30 bytes");
    // reject-publish: refused when this message's body would pass it.
    let l = bytes_limit(25, Some("reject-publish"));
    assert!(!l.refuses(ready(1), 15), "10 + 15 fits");
    assert!(l.refuses(ready(1), 16), "10 + 16 does not");
    assert!(!l.refuses(ready(0), 25));
    // Either limit refuses.
    let both = Limits {
        max_length: Some(10),
        ..bytes_limit(25, Some("reject-publish"))
    };
    assert!(both.refuses(ready(2), 10));
    assert!(!both.refuses(ready(1), 10));
}
