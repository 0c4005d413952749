//! What is checked after every restart, against the [`Ledger`], with no
//! load running: every acknowledged write is there (users log in and their
//! acknowledged logins' tokens verify; sessions, messages with the text the
//! client saw, API keys), acknowledged deletions stayed deleted, no reply is
//! `streaming`, and no demo user was admitted past its limit (by what the
//! clients saw, and by the server's own counter, which must cover what they
//! saw).

use std::collections::HashMap;

use futures_util::StreamExt;
use serde_json::{json, Value};

use super::ledger::{Ledger, Owner, State};

/// An HTTP answer's status and JSON body (`Null` for a 204), or why there
/// was none.
type Answer = Result<(u16, Value), String>;

/// The outcome of one check.
#[derive(Default, Debug)]
pub struct Verdict {
    /// Acknowledged writes re-read and found as acknowledged.
    pub checked: u64,
    /// Broken promises, each a sentence.
    pub violations: Vec<String>,
    /// Messages read back in all (every session of every known user).
    pub messages_read: u64,
    /// Replies stored `failed` (a crash interrupted them).
    pub failed_replies: u64,
    /// The highest admission count the clients saw for one demo user.
    pub max_admitted: u32,
}

impl Verdict {
    fn violation(&mut self, what: String) {
        if self.violations.len() < 50 {
            self.violations.push(what);
        }
    }
}

/// Everything read back for one owner.
struct Read {
    owner: Owner,
    /// `GET /api/auth/me/` with its token: status and body.
    me: Answer,
    /// Its sessions as listed, each with all its messages.
    sessions: Result<HashMap<String, Vec<Value>>, String>,
}

/// Runs every check; updates the ledger where a restart settled a doubt (a
/// deletion cut by the kill either happened or not) or where a login
/// after the restart gave a fresh token.
pub async fn verify(
    base: &str,
    http: &reqwest::Client,
    ledger: &mut Ledger,
    limit: u32,
) -> Verdict {
    let mut v = Verdict::default();
    log_in_new_users(base, http, ledger, &mut v).await;

    // Read every owner's account and sessions, eight at a time.
    let owners: Vec<(Owner, String)> = (0..ledger.users.len())
        .filter_map(|i| Some((Owner::User(i), ledger.users[i].access.clone()?)))
        .chain((0..ledger.demos.len()).map(|d| (Owner::Demo(d), ledger.demos[d].access.clone())))
        .collect();
    let reads: Vec<Read> = futures_util::stream::iter(owners)
        .map(|(owner, token)| read_owner(base, http, owner, token))
        .buffer_unordered(8)
        .collect()
        .await;

    let mut listed: HashMap<Owner, HashMap<String, Vec<Value>>> = HashMap::new();
    for read in reads {
        let who = describe(ledger, read.owner);
        match &read.me {
            Ok((200, me)) => {
                let id = match read.owner {
                    Owner::User(i) => &ledger.users[i].id,
                    Owner::Demo(d) => &ledger.demos[d].id,
                };
                if me["id"] != id.as_str() {
                    v.violation(format!("{who}: /me answered as {}", me["id"]));
                } else {
                    v.checked += 1;
                }
                if let Owner::Demo(d) = read.owner {
                    check_quota(&mut v, &who, ledger.demos[d].admitted, me, limit);
                }
            }
            Ok((status, body)) => v.violation(format!(
                "{who}: its acknowledged token no longer verifies: {status} {body}"
            )),
            Err(e) => v.violation(format!("{who}: /me failed: {e}")),
        }
        match read.sessions {
            Ok(sessions) => {
                listed.insert(read.owner, sessions);
            }
            Err(e) => v.violation(format!("{who}: listing its sessions failed: {e}")),
        }
    }

    check_sessions(base, http, ledger, &listed, &mut v).await;
    check_keys(base, http, ledger, &mut v).await;
    v
}

fn describe(ledger: &Ledger, owner: Owner) -> String {
    match owner {
        Owner::User(i) => format!("user {}", ledger.users[i].id),
        Owner::Demo(d) => format!("demo user {}", ledger.demos[d].id),
    }
}

/// The demo user's counter after the restart covers every admission the
/// clients saw, and neither passes the limit.
fn check_quota(v: &mut Verdict, who: &str, admitted: u32, me: &Value, limit: u32) {
    v.max_admitted = v.max_admitted.max(admitted);
    let Some(count) = me["quota"]["request_count"].as_u64() else {
        v.violation(format!("{who}: no quota in /me: {me}"));
        return;
    };
    if admitted > limit {
        v.violation(format!(
            "{who}: the clients saw {admitted} admissions, over the limit of {limit}"
        ));
    }
    if count > u64::from(limit) {
        v.violation(format!(
            "{who}: its counter is {count}, over the limit {limit}"
        ));
    }
    if count < u64::from(admitted) {
        v.violation(format!(
            "{who}: its counter is {count} after the restart, but the clients saw {admitted} admissions"
        ));
    } else {
        v.checked += 1;
    }
}

/// Users whose registration was acknowledged but who were never logged in
/// with their password since a restart: log in now (the user, its email
/// index and its password hash survived).
async fn log_in_new_users(
    base: &str,
    http: &reqwest::Client,
    ledger: &mut Ledger,
    v: &mut Verdict,
) {
    let pending: Vec<(usize, String, String)> = ledger
        .users
        .iter()
        .enumerate()
        .filter(|(_, u)| !u.login_checked)
        .map(|(i, u)| (i, u.email.clone(), u.password.clone()))
        .collect();
    let login = |email: String, password: String| async move {
        let res = http
            .post(format!("{base}/api/auth/login/"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await;
        status_and_json(res).await
    };
    // Two at a time: the server has `2 × cores` argon2 permits and answers
    // 503 `busy` past them; one answered `busy` is asked again, alone.
    let mut results: Vec<(usize, Answer)> = futures_util::stream::iter(pending.clone())
        .map(|(i, email, password)| async move { (i, login(email, password).await) })
        .buffer_unordered(2)
        .collect()
        .await;
    for (i, result) in results.iter_mut() {
        let (_, email, password) = &pending[pending.iter().position(|p| p.0 == *i).unwrap_or(0)];
        for _ in 0..3 {
            if !matches!(result, Ok((503, _))) {
                break;
            }
            *result = login(email.clone(), password.clone()).await;
        }
    }
    for (i, result) in results {
        let user = &mut ledger.users[i];
        match result {
            Ok((200, body)) if body["user"]["id"] == user.id.as_str() => {
                user.access = body["access"].as_str().map(str::to_owned);
                user.login_checked = true;
                v.checked += 1;
            }
            // Still busy: checked after the next restart.
            Ok((503, _)) => {}
            Ok((status, body)) => v.violation(format!(
                "user {} (registration acknowledged) cannot log in: {status} {body}",
                user.id
            )),
            Err(e) => v.violation(format!("user {}: login failed: {e}", user.id)),
        }
    }
}

async fn status_and_json(res: Result<reqwest::Response, reqwest::Error>) -> Answer {
    let res = res.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let body = if status == 204 {
        Value::Null
    } else {
        res.json().await.map_err(|e| e.to_string())?
    };
    Ok((status, body))
}

async fn read_owner(base: &str, http: &reqwest::Client, owner: Owner, token: String) -> Read {
    let me = status_and_json(
        http.get(format!("{base}/api/auth/me/"))
            .bearer_auth(&token)
            .send()
            .await,
    )
    .await;
    let sessions = read_sessions(base, http, &token).await;
    Read {
        owner,
        me,
        sessions,
    }
}

/// Every session the token's user has, each with every message.
async fn read_sessions(
    base: &str,
    http: &reqwest::Client,
    token: &str,
) -> Result<HashMap<String, Vec<Value>>, String> {
    let mut ids = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut req = http
            .get(format!("{base}/api/sessions/"))
            .bearer_auth(token)
            .query(&[("limit", "100")]);
        if let Some(cursor) = &before {
            req = req.query(&[("before", cursor.as_str())]);
        }
        let (status, page) = status_and_json(req.send().await).await?;
        if status != 200 {
            return Err(format!("GET /api/sessions/: {status} {page}"));
        }
        for s in page["sessions"].as_array().into_iter().flatten() {
            if let Some(id) = s["id"].as_str() {
                ids.push(id.to_owned());
            }
        }
        match page["next"].as_str() {
            Some(next) => before = Some(next.to_owned()),
            None => break,
        }
    }
    let mut sessions = HashMap::new();
    for id in ids {
        let mut messages = Vec::new();
        let mut after = 0u64;
        loop {
            let url = format!("{base}/api/sessions/{id}/messages/?after={after}&limit=500");
            let (status, page) =
                status_and_json(http.get(url).bearer_auth(token).send().await).await?;
            if status != 200 {
                return Err(format!("messages of {id}: {status} {page}"));
            }
            messages.extend(page["messages"].as_array().into_iter().flatten().cloned());
            match page["next"].as_str().and_then(|n| n.parse().ok()) {
                Some(next) => after = next,
                None => break,
            }
        }
        sessions.insert(id, messages);
    }
    Ok(sessions)
}

async fn check_sessions(
    base: &str,
    http: &reqwest::Client,
    ledger: &mut Ledger,
    listed: &HashMap<Owner, HashMap<String, Vec<Value>>>,
    v: &mut Verdict,
) {
    // No reply anywhere is left `streaming`.
    for (owner, sessions) in listed {
        for (id, messages) in sessions {
            for m in messages {
                v.messages_read += 1;
                match m["status"].as_str() {
                    Some("streaming") => v.violation(format!(
                        "{}: session {id}: message {} is still `streaming` after the restart",
                        describe(ledger, *owner),
                        m["id"]
                    )),
                    Some("failed") => v.failed_replies += 1,
                    _ => {}
                }
            }
        }
    }

    let mut deleted_to_probe = Vec::new();
    let ids: Vec<String> = ledger.sessions.keys().cloned().collect();
    for id in ids {
        let owner = ledger.sessions[&id].owner;
        let Some(present) = listed.get(&owner) else {
            continue; // its owner's listing failed: already a violation
        };
        let session = ledger.sessions.get_mut(&id).expect("listed key");
        let state = session.state;
        match (state, present.get(&id)) {
            (State::Live | State::Doubtful, Some(messages)) => {
                session.state = State::Live;
                if state == State::Live {
                    v.checked += 1;
                }
                let by_id: HashMap<&str, &Value> = messages
                    .iter()
                    .filter_map(|m| Some((m["id"].as_str()?, m)))
                    .collect();
                for acked in &session.messages {
                    let Some(m) = by_id.get(acked.id.as_str()) else {
                        v.violation(format!(
                            "session {id}: acknowledged {} message {} (seq {}) is missing",
                            acked.role, acked.id, acked.seq
                        ));
                        continue;
                    };
                    let text_ok = m["text"] == acked.text.as_str();
                    let status_ok = m["status"] == acked.status;
                    let role_ok = m["role"] == acked.role;
                    let seq_ok = acked.seq == 0 || m["seq"] == acked.seq;
                    if text_ok && status_ok && role_ok && seq_ok {
                        v.checked += 1;
                    } else {
                        v.violation(format!(
                            "session {id}: message {} differs from what the client saw: stored {} {:?} {:?} seq {}, seen {} {:?} {:?} seq {}",
                            acked.id, m["role"], m["status"], m["text"], m["seq"], acked.role, acked.status, acked.text, acked.seq
                        ));
                    }
                }
            }
            (State::Live, None) => v.violation(format!(
                "session {id} (creation acknowledged, never deleted) is missing"
            )),
            (State::Doubtful, None) => session.state = State::Deleted,
            (State::Deleted, Some(_)) => v.violation(format!(
                "session {id} is back after its deletion was acknowledged"
            )),
            (State::Deleted, None) => {
                if let Some(token) = ledger.token_of(owner) {
                    deleted_to_probe.push((id.clone(), token));
                }
            }
        }
    }
    // A deleted session answers 404 (not only missing from the listing).
    let probes: Vec<(String, Answer)> = futures_util::stream::iter(deleted_to_probe)
        .map(|(id, token)| async move {
            let res = http
                .get(format!("{base}/api/sessions/{id}/messages/"))
                .bearer_auth(token)
                .send()
                .await;
            (id, status_and_json(res).await)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (id, result) in probes {
        match result {
            Ok((404, _)) => v.checked += 1,
            Ok((status, body)) => v.violation(format!(
                "deleted session {id}: its messages answer {status} {body}"
            )),
            Err(e) => v.violation(format!("deleted session {id}: {e}")),
        }
    }
}

async fn check_keys(base: &str, http: &reqwest::Client, ledger: &mut Ledger, v: &mut Verdict) {
    let probes: Vec<(usize, String)> = ledger
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| (i, k.key.clone()))
        .collect();
    let results: Vec<(usize, Answer)> = futures_util::stream::iter(probes)
        .map(|(i, key)| async move {
            let res = http
                .get(format!("{base}/api/auth/me/"))
                .header("X-API-Key", key)
                .send()
                .await;
            (i, status_and_json(res).await)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (i, result) in results {
        let user_id = ledger.users[ledger.keys[i].user].id.clone();
        let key = &mut ledger.keys[i];
        match (key.state, result) {
            (State::Live | State::Doubtful, Ok((200, me))) if me["id"] == user_id.as_str() => {
                if key.state == State::Live {
                    v.checked += 1;
                }
                key.state = State::Live;
            }
            (State::Deleted | State::Doubtful, Ok((401, _))) => {
                if key.state == State::Deleted {
                    v.checked += 1;
                }
                key.state = State::Deleted;
            }
            (state, Ok((status, body))) => v.violation(format!(
                "API key {} ({state:?}): /me answers {status} {body}",
                key.id
            )),
            (_, Err(e)) => v.violation(format!("API key {}: {e}", key.id)),
        }
    }
}
