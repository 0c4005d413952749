//! Every stored value is encoded here: one version byte, then the record in
//! postcard. The version lets a record's shape evolve: a decoder sees which
//! shape it reads, and migrations (see `meta`) rewrite old ones.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Result, StorageError};

/// A record kind stored as a value in one tree.
pub trait Record: Serialize + DeserializeOwned {
    /// The tree that holds it (for error messages).
    const TREE: &'static str;
    /// The current version of its encoding.
    const VERSION: u8;
}

pub fn encode<R: Record>(record: &R) -> Result<Vec<u8>> {
    let mut out = vec![R::VERSION];
    let body = postcard::to_stdvec(record)
        .map_err(|e| StorageError::Commit(format!("cannot encode a {} record: {e}", R::TREE)))?;
    out.extend_from_slice(&body);
    Ok(out)
}

pub fn decode<R: Record>(bytes: &[u8]) -> Result<R> {
    match bytes.split_first() {
        Some((&v, body)) if v == R::VERSION => postcard::from_bytes(body)
            .map_err(|e| StorageError::corrupt(R::TREE, format!("undecodable value: {e}"))),
        Some((&v, _)) => Err(StorageError::corrupt(
            R::TREE,
            format!("unknown record version {v} (expected {})", R::VERSION),
        )),
        None => Err(StorageError::corrupt(R::TREE, "empty value")),
    }
}

/// Reads and decodes one record.
pub fn get<R: Record>(tree: &sled::Tree, key: &[u8]) -> Result<Option<R>> {
    tree.get(key)?.map(|v| decode(&v)).transpose()
}

/// Read-modify-write of one record with compare-and-swap, so a concurrent
/// update is never lost. `change` returns `false` to leave the record as it
/// is. Answers the record as stored afterwards, or `None` if there is none.
/// Not durable: the caller waits for the committer when it must be.
pub fn update<R: Record>(
    tree: &sled::Tree,
    key: &[u8],
    mut change: impl FnMut(&mut R) -> bool,
) -> Result<Option<R>> {
    loop {
        let Some(current) = tree.get(key)? else {
            return Ok(None);
        };
        let mut record: R = decode(&current)?;
        if !change(&mut record) {
            return Ok(Some(record));
        }
        if tree
            .compare_and_swap(key, Some(&current), Some(encode(&record)?))?
            .is_ok()
        {
            return Ok(Some(record));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        a: u32,
        b: String,
    }
    impl Record for Sample {
        const TREE: &'static str = "sample";
        const VERSION: u8 = 3;
    }

    #[test]
    fn round_trips_with_version_tag() {
        let s = Sample {
            a: 7,
            b: "x".into(),
        };
        let bytes = encode(&s).unwrap();
        assert_eq!(bytes[0], 3);
        assert_eq!(decode::<Sample>(&bytes).unwrap(), s);
    }

    #[test]
    fn update_changes_in_place_or_reports_none() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        assert!(update::<Sample>(&tree, b"k", |_| true).unwrap().is_none());
        tree.insert(
            b"k",
            encode(&Sample {
                a: 1,
                b: "x".into(),
            })
            .unwrap(),
        )
        .unwrap();
        let after = update::<Sample>(&tree, b"k", |s| {
            s.a += 1;
            true
        })
        .unwrap();
        assert_eq!(after.map(|s| s.a), Some(2));
        let untouched = update::<Sample>(&tree, b"k", |_| false).unwrap();
        assert_eq!(untouched.map(|s| s.a), Some(2));
    }

    #[test]
    fn rejects_other_versions_and_garbage() {
        let mut bytes = encode(&Sample {
            a: 1,
            b: "y".into(),
        })
        .unwrap();
        bytes[0] = 2;
        assert!(matches!(
            decode::<Sample>(&bytes),
            Err(StorageError::Corrupt { tree: "sample", .. })
        ));
        assert!(decode::<Sample>(&[]).is_err());
        assert!(decode::<Sample>(&[3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
