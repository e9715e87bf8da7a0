//! The write path without models: what `Service` serves before (or without) the face
//! models — index, user and grant changes and deletes — and the account rules it
//! applies, over a real SQLite store in a temporary directory.

use std::sync::Arc;

use facesearch_engine::users::UserRuleError;
use facesearch_engine::{EngineError, Service};
use facesearch_store::{IndexType, NewIndex, Pack, Role, SqliteStore, Store};

fn service() -> (Service, Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    (Service::new(store.clone()), store, dir)
}

fn new_index(name: &str) -> NewIndex {
    NewIndex {
        index_name: name.into(),
        title: name.into(),
        description: String::new(),
        index_type: IndexType::Internal,
        pack: Pack::Open,
    }
}

#[tokio::test]
async fn account_rules_are_applied_before_anything_is_written() {
    let (service, store, _dir) = service();
    let weak = service.create_user("alice", "short", "searcher", Vec::new()).await;
    assert!(matches!(weak, Err(EngineError::UserRule(UserRuleError::ShortPassword))), "{weak:?}");
    let reserved = service.create_user("me", "a long enough password", "searcher", Vec::new()).await;
    assert!(matches!(reserved, Err(EngineError::UserRule(UserRuleError::ReservedUsername(_)))), "{reserved:?}");
    let role = service.create_user("alice", "a long enough password", "root", Vec::new()).await;
    assert!(matches!(role, Err(EngineError::UserRule(UserRuleError::UnknownRole(_)))), "{role:?}");
    assert_eq!(store.user_count().await.expect("count"), 0);
}

#[tokio::test]
async fn a_user_is_made_with_grants_only_of_indexes_that_exist() {
    let (service, store, _dir) = service();
    let index = service.create_index(new_index("staff")).await.expect("index");
    let missing = service.create_user("bob", "a long enough password", "searcher", vec!["nope".into()]).await;
    assert!(matches!(missing, Err(EngineError::IndexNotFound(ref id)) if id == "nope"), "{missing:?}");
    assert!(store.get_user("bob").await.expect("read").is_none(), "no half-made user");
    let grants = vec![index.id.clone(), index.id.clone()];
    let bob = service.create_user("bob", "a long enough password", "Searcher", grants).await.expect("bob");
    assert_eq!((bob.role, bob.grants.clone()), (Role::Searcher, vec![index.id.clone()]));
    assert!(service.revoke("bob", &index.id).await.expect("revoke"), "a grant was removed");
    assert!(!service.revoke("bob", &index.id).await.expect("revoke again"), "idempotent: nothing left to remove");
    assert!(matches!(service.revoke("bob", "nope").await, Err(EngineError::IndexNotFound(_))));
    assert!(matches!(service.grant("carol", &index.id).await, Err(EngineError::UserNotFound(_))));
}

#[tokio::test]
async fn a_role_is_fixed_and_nobody_deletes_their_own_account_or_the_last_admin() {
    let (service, _store, _dir) = service();
    service.create_user("root", "a long enough password", "admin", Vec::new()).await.expect("root");
    service.create_user("op", "a long enough password", "operator", Vec::new()).await.expect("op");
    let change = service.update_user("op", None, Some("admin")).await;
    assert!(matches!(change, Err(EngineError::RoleChange { role: Role::Admin, .. })), "{change:?}");
    service.update_user("op", Some("another long password"), Some("operator")).await.expect("same role");
    assert!(matches!(service.delete_user(Some("root"), "root").await, Err(EngineError::OwnAccount(_))));
    let last = service.delete_user(Some("op"), "root").await;
    assert!(matches!(last, Err(EngineError::Store(facesearch_store::StoreError::LastAdmin(_)))), "{last:?}");
    // An operator of the machine (`facesearch user remove`) has no account, and the
    // last-admin rule holds for them too.
    let last = service.delete_user(None, "root").await;
    assert!(matches!(last, Err(EngineError::Store(facesearch_store::StoreError::LastAdmin(_)))), "{last:?}");
    service.delete_user(Some("root"), "op").await.expect("delete op");
    assert!(matches!(service.delete_user(Some("root"), "op").await, Err(EngineError::UserNotFound(_))));
}

#[tokio::test]
async fn deletes_are_served_before_the_models_are_loaded() {
    let (service, store, _dir) = service();
    assert!(matches!(service.engine(), Err(EngineError::NotReady)));
    let index = service.create_index(new_index("visitors")).await.expect("index");
    assert!(!service.delete_record(&index.id, "no-such-record").await.expect("delete record"));
    assert!(service.delete_index(&index.id).await.expect("delete index"));
    assert!(store.get_index(&index.id).await.expect("read").is_none());
    assert!(!service.delete_index(&index.id).await.expect("delete again"));
}

#[tokio::test]
async fn the_first_admin_is_made_once_with_a_printable_password() {
    let (service, store, _dir) = service();
    assert!(service.has_no_user().await.expect("count"));
    let blank = service.create_first_admin("admin", &" ".repeat(12)).await;
    assert!(matches!(blank, Err(EngineError::UserRule(UserRuleError::BlankPassword))), "{blank:?}");
    // Short is allowed here: the operator chose it (or it was generated).
    assert!(service.create_first_admin("admin", "x").await.expect("admin"));
    assert!(!service.create_first_admin("admin", "x").await.expect("made by another node"));
    assert_eq!(store.get_user("admin").await.expect("read").map(|u| u.role), Some(Role::Admin));
    assert!(!service.has_no_user().await.expect("count"));
}
