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

    /// The storage_codec fuzz target's seeds (`fuzz/seeds/storage_codec/`)
    /// are the current encodings of one record of each type, behind the
    /// target's selector byte: a record whose shape changes must have its
    /// seed rewritten (`PALAVER_WRITE_FUZZ_SEEDS=1 cargo test -p
    /// palaver-storage fuzz_seeds`), or the fuzzer starts from bytes the
    /// codec refuses at once.
    #[test]
    fn fuzz_seeds_are_current_encodings() {
        use crate::{
            AnalysisStatus, ApiKey, ExternalIdentity, Family, LoggedEvent, Message, MessageStatus,
            QuotaCounter, Replay, ReplyUsage, Role, Session, ToolUse, Track, TrackAnalysis, User,
            UserId,
        };
        use uuid::Uuid;
        let id = |n: u128| Uuid::from_u128(0x0190_c7a4_7e1c_7000_8000_0000_0000_0000 | n);
        let user_id = UserId::from_bytes(*id(1).as_bytes());
        let user = User {
            id: user_id,
            email: "ann@example.com".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into(),
            is_active: true,
            is_demo: false,
            demo_expires_at: Some(1_900_000_000),
            created_at: 1_733_000_000_000,
            external: Some(ExternalIdentity {
                issuer: "django".into(),
                id: "42".into(),
            }),
        };
        let message = Message {
            id: id(4),
            session_id: id(3),
            seq: 2,
            role: Role::Assistant,
            text: "The tempo is 120 BPM.".into(),
            status: MessageStatus::Complete,
            tools: vec![ToolUse {
                tool: "tempo".into(),
                args: r#"{"track":"x"}"#.into(),
                success: true,
                result: r#"{"bpm":120.0}"#.into(),
            }],
            created_at: 1_733_000_000_500,
            replay: None,
        };
        let seeds: Vec<(&str, u8, Vec<u8>)> = vec![
            ("user", 0, encode(&user).unwrap()),
            (
                "family",
                1,
                encode(&Family {
                    id: id(2),
                    user_id,
                    current_jti: id(5),
                    expires_at: 1_900_000_000,
                    revoked: false,
                })
                .unwrap(),
            ),
            (
                "api-key",
                2,
                encode(&ApiKey {
                    id: id(6),
                    user_id,
                    name: "ci".into(),
                    hash: [7; 32],
                    created_at: 1_733_000_000_000,
                    last_used_at: Some(1_733_000_060_000),
                })
                .unwrap(),
            ),
            (
                "session",
                3,
                encode(&Session {
                    id: id(3),
                    user_id,
                    title: "Mix notes".into(),
                    track_id: Some(id(8)),
                    created_at: 1_733_000_000_000,
                    updated_at: 1_733_000_000_500,
                })
                .unwrap(),
            ),
            ("message", 4, encode(&message).unwrap()),
            (
                "message-replay",
                5,
                encode(&Message {
                    text: "Héllo wörld".into(),
                    replay: Some(Replay {
                        finished_at: 1_733_000_000_900,
                        events: vec![
                            LoggedEvent::Frame(r#"c"tool":"tempo","args":{}}"#.into()),
                            LoggedEvent::Token(6),
                            LoggedEvent::Token(7),
                        ],
                        ending: vec![],
                        usage: Some(ReplyUsage {
                            tokens: 2,
                            first_token_ms: 12,
                            total_ms: 340,
                        }),
                    }),
                    ..message.clone()
                })
                .unwrap(),
            ),
            (
                "quota",
                6,
                encode(&QuotaCounter {
                    count: 3,
                    window_start: 1_733_000_000,
                })
                .unwrap(),
            ),
            (
                "track",
                7,
                encode(&Track {
                    id: id(8),
                    user_id,
                    filename: "take 1.wav".into(),
                    size_bytes: 1644,
                    format: "wav".into(),
                    duration_seconds: 0.1,
                    sample_rate: 8000,
                    channels: 1,
                    created_at: 1_733_000_000_000,
                    analysis: AnalysisStatus::Failed("no audio frames".into()),
                })
                .unwrap(),
            ),
            (
                "track-analysis",
                8,
                encode(&TrackAnalysis {
                    analysis: r#"{"duration_seconds":0.1}"#.into(),
                    overview: r#"{"envelope":[]}"#.into(),
                })
                .unwrap(),
            ),
            (
                "key-external",
                9,
                crate::keys::external_user("django", "42"),
            ),
            (
                "key-demo-expiry",
                9,
                crate::keys::demo_expiry(1_900_000_000, user_id).to_vec(),
            ),
            ("cursor", 10, b"0190c7a47e1c70008000".to_vec()),
        ];
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/storage_codec");
        let write = std::env::var_os("PALAVER_WRITE_FUZZ_SEEDS").is_some();
        if write {
            std::fs::create_dir_all(&dir).unwrap();
        }
        for (name, selector, bytes) in seeds {
            let seed = [vec![selector], bytes].concat();
            let path = dir.join(name);
            if write {
                std::fs::write(&path, &seed).unwrap();
            } else {
                let committed =
                    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(
                    committed,
                    seed,
                    "{} is not the current encoding: rewrite the seeds",
                    path.display()
                );
            }
        }
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
