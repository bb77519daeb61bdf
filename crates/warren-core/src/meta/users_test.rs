use super::*;
use crate::ReplyCode;
use crate::access::{Access, HashAlgorithm, PasswordHash, Permission, Resource};

fn user(name: &str, password: &str) -> UserDef {
    UserDef {
        name: name.into(),
        password: Some(PasswordHash::new(
            HashAlgorithm::Sha256,
            [1, 2, 3, 4],
            password,
        )),
        tags: Vec::new(),
    }
}

fn grant(user: &str, configure: &str, write: &str, read: &str) -> Command {
    Command::SetPermissions(PermissionEntry {
        vhost: DEFAULT_VHOST.into(),
        user: user.into(),
        permission: Permission::new(configure, write, read).expect("valid"),
    })
}

#[test]
fn a_user_logs_in_with_its_password_and_is_checked_against_its_permissions() {
    let mut m = MetaState::new();
    m.apply(&Command::AddUser(user("bob", "secret")))
        .expect("add");
    let a = m.access();
    assert_eq!(a.login("bob", "secret"), Ok(()));
    assert_eq!(
        a.login("bob", "wrong"),
        Err(LoginRefused::InvalidCredentials)
    );
    assert_eq!(
        a.login("eve", "secret"),
        Err(LoginRefused::InvalidCredentials)
    );
    // No permissions in `/` yet: the vhost is closed to bob.
    let e = a.check_vhost("/", "bob").expect_err("530");
    assert_eq!(e.code, ReplyCode::NotAllowed);
    assert_eq!(e.text, "access to vhost '/' refused for user 'bob'");

    m.apply(&grant("bob", "^bob-", ".*", "^bob-"))
        .expect("grant");
    let a = m.access();
    assert_eq!(a.check_vhost("/", "bob"), Ok(()));
    assert_eq!(
        a.check("/", "bob", Access::Configure, Resource::Queue("bob-q")),
        Ok(())
    );
    let e = a
        .check("/", "bob", Access::Read, Resource::Queue("tasks"))
        .expect_err("403");
    assert_eq!(e.code, ReplyCode::AccessRefused);
    assert_eq!(
        e.text,
        "read access to queue 'tasks' in vhost '/' refused for user 'bob'"
    );
    // A user without permissions is refused with the same text.
    let e = a
        .check("/", "eve", Access::Write, Resource::Exchange(""))
        .expect_err("403");
    assert_eq!(
        e.text,
        "write access to exchange 'amq.default' in vhost '/' refused for user 'eve'"
    );
}

#[test]
fn errors_change_nothing_and_a_deleted_user_takes_its_permissions() {
    let mut m = MetaState::new();
    m.apply(&Command::AddUser(user("bob", "a"))).expect("add");
    let e = m
        .apply(&Command::AddUser(user("bob", "b")))
        .expect_err("taken");
    assert_eq!(e.code, ReplyCode::PreconditionFailed);
    assert_eq!(m.access().login("bob", "a"), Ok(()));
    let e = m
        .apply(&grant("eve", ".*", ".*", ".*"))
        .expect_err("no user");
    assert_eq!(e.code, ReplyCode::NotFound);
    let mut elsewhere = grant("bob", ".*", ".*", ".*");
    if let Command::SetPermissions(p) = &mut elsewhere {
        p.vhost = "nope".into();
    }
    assert_eq!(
        m.apply(&elsewhere).expect_err("no vhost").code,
        ReplyCode::NotFound
    );

    m.apply(&grant("bob", ".*", ".*", ".*")).expect("grant");
    m.apply(&Command::DeleteUser { name: "bob".into() })
        .expect("delete");
    assert!(m.access().permission("/", "bob").is_none());
    assert_eq!(m.access().permissions().count(), 0);
    // Re-created, it starts without permissions.
    m.apply(&Command::AddUser(user("bob", "a")))
        .expect("add again");
    assert!(m.access().check_vhost("/", "bob").is_err());
    let clear = Command::ClearPermissions {
        vhost: "/".into(),
        user: "bob".into(),
    };
    assert_eq!(m.apply(&clear).expect_err("none").code, ReplyCode::NotFound);
    let e = m
        .apply(&Command::DeleteUser { name: "eve".into() })
        .expect_err("no user");
    assert_eq!(e.code, ReplyCode::NotFound);
}

#[test]
fn the_config_users_are_seeded_once_and_survive_snapshots_and_legacy_seeds() {
    let seed = |name: &str| Command::SeedUsers {
        users: vec![user(name, "pw")],
        permissions: vec![PermissionEntry {
            vhost: DEFAULT_VHOST.into(),
            user: name.into(),
            permission: Permission::all(),
        }],
    };
    let mut m = MetaState::new();
    assert!(!m.access().seeded());
    assert_eq!(
        m.apply(&seed("guest")),
        Ok(Outcome::AccessChanged { changed: true })
    );
    // A second node's seed (another config file) changes nothing.
    assert_eq!(
        m.apply(&seed("admin")),
        Ok(Outcome::AccessChanged { changed: false })
    );
    assert!(m.access().user("admin").is_none());
    // Deleted after the seed, guest stays deleted.
    m.apply(&Command::DeleteUser {
        name: "guest".into(),
    })
    .expect("delete");
    m.apply(&seed("guest")).expect("seed");
    assert!(m.access().user("guest").is_none());

    m.apply(&Command::AddUser(user("bob", "pw"))).expect("add");
    m.apply(&grant("bob", "", "^x$", ".*")).expect("grant");
    let snap = m.snapshot();
    assert_eq!(snap.users.len(), 1);
    assert!(snap.users_seeded);
    let (restored, _) = MetaState::restore(&snap);
    assert_eq!(restored.access(), m.access());
    let json = serde_json::to_vec(&snap).expect("encode");
    let back: MetaSnapshot = serde_json::from_slice(&json).expect("decode");
    assert_eq!(back, snap);

    // A snapshot of an older version has no users: not seeded yet.
    let old: MetaSnapshot =
        serde_json::from_str(r#"{"vhosts":[],"next_queue_id":1}"#).expect("old snapshot");
    assert!(!MetaState::restore(&old).0.access().seeded());

    // Seeding a single node's old metadata keeps the users.
    m.apply(&Command::Seed(MetaState::new().snapshot()))
        .expect("legacy seed");
    assert_eq!(m.access().login("bob", "pw"), Ok(()));
}
