use super::*;

fn limits(max: Option<u64>, overflow: Option<&str>) -> Limits {
    Limits::of(&QueueArgs {
        max_length: max,
        overflow: overflow.map(str::to_owned),
        ..QueueArgs::default()
    })
}

#[test]
fn no_limit_never_refuses_or_drops() {
    let l = limits(None, Some("reject-publish"));
    assert!(!l.refuses(1_000_000));
    assert_eq!(limits(None, None).excess(1_000_000), 0);
}

#[test]
fn drop_head_is_the_default_and_drops_what_is_over() {
    let l = limits(Some(2), None);
    assert_eq!(l.overflow, Overflow::DropHead);
    assert!(!l.refuses(10));
    assert_eq!(l.excess(2), 0);
    assert_eq!(l.excess(3), 1);
    assert_eq!(l.excess(7), 5);
}

#[test]
fn reject_publish_refuses_at_the_limit_and_never_drops() {
    for mode in ["reject-publish", "reject-publish-dlx"] {
        let l = limits(Some(2), Some(mode));
        assert!(!l.refuses(1), "{mode}");
        assert!(l.refuses(2), "{mode}");
        assert!(l.refuses(3), "{mode}");
        assert_eq!(l.excess(5), 0, "{mode}");
    }
}

#[test]
fn a_limit_of_zero_keeps_nothing_ready() {
    assert_eq!(limits(Some(0), None).excess(1), 1);
    assert!(limits(Some(0), Some("reject-publish")).refuses(0));
}
