//! The `meta` tree: the schema version, and the migrations run at open.
//!
//! Each migration brings the database from version `n - 1` to `n`; they run
//! in order, each recording its version when done, so an interrupted upgrade
//! resumes where it stopped.

use crate::codec::{self, Record};
use crate::error::{Result, StorageError};
use crate::keys;
use crate::store::Trees;
use crate::users::{User, UserV1};

/// The schema this build writes.
pub const CURRENT_SCHEMA_VERSION: u32 = 3;

type Migration = fn(&sled::Db, &Trees) -> Result<()>;

/// `MIGRATIONS[i]` upgrades a database from version `i + 1` to `i + 2`.
const MIGRATIONS: &[Migration] = &[drop_reply_events_v1, users_gain_external];

/// 1 → 2: finished replies' logs moved from `reply_events` (keyed by
/// session and reply, with a time index in `reply_events_by_time`) to
/// `reply_logs` (keyed by reply, tokens kept as lengths of the reply's
/// text). Logs live only `ws.resume_window` (an hour by default), so the old
/// ones are dropped rather than converted: a resume of a reply that finished
/// before the upgrade is `resume_unavailable`, and the client reads the
/// reply from the history instead.
fn drop_reply_events_v1(db: &sled::Db, _: &Trees) -> Result<()> {
    for name in ["reply_events", "reply_events_by_time"] {
        db.drop_tree(name)?;
    }
    Ok(())
}

/// 2 → 3: user records gain `external` (none for every user stored before:
/// users from another issuer did not exist). Each record is rewritten in
/// place; a record already in its version-2 encoding (an interrupted run)
/// is left alone, so
/// running it twice is harmless.
fn users_gain_external(_: &sled::Db, trees: &Trees) -> Result<()> {
    for entry in trees.users.iter() {
        let (key, value) = entry?;
        if value.first() == Some(&User::VERSION) {
            continue;
        }
        let old: UserV1 = match value.split_first() {
            Some((1, body)) => postcard::from_bytes(body).map_err(|e| {
                StorageError::corrupt("users", format!("undecodable version-1 user: {e}"))
            })?,
            _ => return Err(StorageError::corrupt("users", "unknown record version")),
        };
        trees.users.insert(key, codec::encode(&User::from(old))?)?;
    }
    Ok(())
}

const _: () = assert!(MIGRATIONS.len() as u32 + 1 == CURRENT_SCHEMA_VERSION);

/// The version recorded in the database (0 for a database that has none).
pub(crate) fn schema_version(trees: &Trees) -> Result<u32> {
    match trees.meta.get(keys::META_SCHEMA_VERSION)? {
        None => Ok(0),
        Some(bytes) => {
            let raw: [u8; 4] = bytes
                .as_ref()
                .try_into()
                .map_err(|_| StorageError::corrupt("meta", "schema_version is not 4 bytes"))?;
            Ok(u32::from_be_bytes(raw))
        }
    }
}

fn set_schema_version(trees: &Trees, version: u32) -> Result<()> {
    trees
        .meta
        .insert(keys::META_SCHEMA_VERSION, &version.to_be_bytes())?;
    Ok(())
}

/// Brings the database to [`CURRENT_SCHEMA_VERSION`]. A new database is
/// stamped with it; an older one is migrated; a newer one is refused.
pub(crate) fn migrate(db: &sled::Db, trees: &Trees) -> Result<()> {
    let found = schema_version(trees)?;
    if found > CURRENT_SCHEMA_VERSION {
        return Err(StorageError::SchemaTooNew {
            found,
            supported: CURRENT_SCHEMA_VERSION,
        });
    }
    if found == 0 {
        // Nothing stored yet is older than the current layout: a database
        // without a version is a new one (every tree was just created).
        if trees.users.is_empty() {
            return set_schema_version(trees, CURRENT_SCHEMA_VERSION);
        }
        return Err(StorageError::corrupt(
            "meta",
            "records exist but no schema_version is recorded",
        ));
    }
    for version in found..CURRENT_SCHEMA_VERSION {
        tracing::info!(from = version, to = version + 1, "migrating storage");
        MIGRATIONS[(version - 1) as usize](db, trees)?;
        set_schema_version(trees, version + 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    #[test]
    fn a_new_database_is_stamped_current() {
        let store = Store::temporary().unwrap();
        assert_eq!(store.schema_version().unwrap(), CURRENT_SCHEMA_VERSION);
    }

    #[test]
    fn a_newer_database_is_refused() {
        let store = Store::temporary().unwrap();
        set_schema_version(store.trees(), CURRENT_SCHEMA_VERSION + 1).unwrap();
        let err = migrate(store.db(), store.trees()).unwrap_err();
        assert!(matches!(err, StorageError::SchemaTooNew { .. }), "{err:?}");
    }

    #[test]
    fn version_1_reply_logs_are_dropped() {
        let store = Store::temporary().unwrap();
        let old = store.db().open_tree("reply_events").unwrap();
        old.insert(b"k", b"v").unwrap();
        set_schema_version(store.trees(), 1).unwrap();
        migrate(store.db(), store.trees()).unwrap();
        assert_eq!(
            schema_version(store.trees()).unwrap(),
            CURRENT_SCHEMA_VERSION
        );
        let names = store.db().tree_names();
        assert!(
            !names.iter().any(|n| &n[..] == b"reply_events"),
            "{names:?}"
        );
        assert!(!names.iter().any(|n| &n[..] == b"reply_events_by_time"));
    }

    #[test]
    fn version_1_users_gain_no_external_identity() {
        #[derive(serde::Serialize)]
        struct V1<'a> {
            id: crate::UserId,
            email: &'a str,
            password_hash: &'a str,
            is_active: bool,
            is_demo: bool,
            demo_expires_at: Option<u64>,
            created_at: u64,
        }
        let store = Store::temporary().unwrap();
        let id = crate::UserId::new();
        let mut old = vec![1u8];
        old.extend(
            postcard::to_stdvec(&V1 {
                id,
                email: "ann@example.com",
                password_hash: "hash",
                is_active: false,
                is_demo: true,
                demo_expires_at: Some(77),
                created_at: 5,
            })
            .unwrap(),
        );
        let trees = store.trees();
        trees.users.insert(keys::user(id), old).unwrap();
        set_schema_version(trees, 1).unwrap();
        migrate(store.db(), trees).unwrap();
        assert_eq!(schema_version(trees).unwrap(), CURRENT_SCHEMA_VERSION);
        let user = store.users().get(id).unwrap().unwrap();
        assert_eq!(
            (
                user.email.as_str(),
                user.is_active,
                user.is_demo,
                user.demo_expires_at,
                user.created_at,
                user.external.clone()
            ),
            ("ann@example.com", false, true, Some(77), 5, None)
        );
        // A second run (an interrupted upgrade resumed) changes nothing.
        users_gain_external(store.db(), trees).unwrap();
        assert_eq!(store.users().get(id).unwrap().unwrap(), user);
    }

    #[test]
    fn a_current_database_is_left_alone() {
        let store = Store::temporary().unwrap();
        migrate(store.db(), store.trees()).unwrap();
        assert_eq!(
            schema_version(store.trees()).unwrap(),
            CURRENT_SCHEMA_VERSION
        );
    }
}
