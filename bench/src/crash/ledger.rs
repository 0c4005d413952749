//! What the clients saw acknowledged, across every restart: the writes the
//! server must still hold after any crash (API.md §9: a 2xx, a `message` or
//! a `done` event), and what they saw admitted for each demo user.
//!
//! A write whose request was cut by a kill was not acknowledged: it may or
//! may not be there. A deletion in that state is `Doubtful` until the next
//! restart shows which way it went.

use std::collections::{HashMap, HashSet};

/// A regular user whose registration was acknowledged (201).
pub struct User {
    pub id: String,
    pub email: String,
    pub password: String,
    /// The access token of the latest acknowledged login (its family must
    /// survive too: a token whose family is missing does not verify).
    pub access: Option<String>,
    /// Logged in with the password after a restart at least once.
    pub login_checked: bool,
}

/// A demo user and what the clients saw of its quota.
pub struct Demo {
    pub id: String,
    pub access: String,
    /// Counted requests the clients saw admitted: 2xx answers to counted
    /// HTTP requests and distinct questions acknowledged with `message`.
    pub admitted: u32,
    /// Ids of the questions acknowledged over a WebSocket (one `message`
    /// can reach several sockets: counted once).
    pub questions: HashSet<String>,
    /// Refused with `quota_exceeded` somewhere: no longer given work.
    pub exhausted: bool,
    /// Its sessions that are live, for its clients to ask in.
    pub sessions: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
    /// Creation acknowledged, no deletion asked.
    Live,
    /// Deletion acknowledged (204): must stay gone.
    Deleted,
    /// Deletion asked, its answer cut by a kill: either way.
    Doubtful,
}

/// A message the clients saw acknowledged.
#[derive(Clone, Debug)]
pub struct Acked {
    pub id: String,
    /// 0 when the client did not see it (a reply known by its `done`).
    pub seq: u64,
    pub role: &'static str,
    pub text: String,
    /// The status the client saw (`done`'s, or the whole answer's).
    pub status: &'static str,
}

/// A session whose creation was acknowledged (201).
pub struct Session {
    pub owner: Owner,
    pub state: State,
    pub messages: Vec<Acked>,
}

/// Whose a session or key is: the index of a [`User`] or [`Demo`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Owner {
    User(usize),
    Demo(usize),
}

/// An API key whose creation was acknowledged.
pub struct ApiKey {
    pub id: String,
    pub key: String,
    pub user: usize,
    pub state: State,
}

/// Acknowledged writes by kind, for the report.
#[derive(Default, Clone, Debug)]
pub struct Counts {
    pub registrations: u64,
    pub logins: u64,
    pub demo_users: u64,
    pub sessions_created: u64,
    pub sessions_deleted: u64,
    pub questions_ws: u64,
    pub replies_ws: u64,
    pub answers_http: u64,
    pub api_keys_created: u64,
    pub api_keys_deleted: u64,
    pub demo_admissions: u64,
    pub demo_refusals: u64,
    pub cancels: u64,
}

impl Counts {
    /// Every acknowledged write (a whole answer is a question and a reply).
    pub fn writes(&self) -> u64 {
        self.registrations
            + self.logins
            + self.demo_users
            + self.sessions_created
            + self.sessions_deleted
            + self.questions_ws
            + self.replies_ws
            + 2 * self.answers_http
            + self.api_keys_created
            + self.api_keys_deleted
    }
}

#[derive(Default)]
pub struct Ledger {
    pub users: Vec<User>,
    pub demos: Vec<Demo>,
    pub sessions: HashMap<String, Session>,
    pub keys: Vec<ApiKey>,
    pub counts: Counts,
    /// Replies the clients saw start (`message`) but not finish before a
    /// kill: each must be `failed` (or finished) after the restart.
    pub interrupted: u64,
    /// Things the clients saw that break the contract while the server was
    /// up (an acknowledged API key refused, an unexpected status, …).
    pub anomalies: Vec<String>,
}

impl Ledger {
    pub fn token_of(&self, owner: Owner) -> Option<String> {
        match owner {
            Owner::User(i) => self.users[i].access.clone(),
            Owner::Demo(i) => Some(self.demos[i].access.clone()),
        }
    }

    /// Live sessions of `owner`.
    pub fn live_sessions(&self, owner: Owner) -> Vec<String> {
        let mut ids: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.owner == owner && s.state == State::Live)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    pub fn record_message(&mut self, session: &str, message: Acked) {
        if let Some(s) = self.sessions.get_mut(session) {
            s.messages.push(message);
        }
    }

    /// A demo user's question acknowledged over a WebSocket: one admission,
    /// however many sockets saw its `message`.
    pub fn demo_question(&mut self, demo: usize, id: &str) {
        let d = &mut self.demos[demo];
        if d.questions.insert(id.to_owned()) {
            d.admitted += 1;
            self.counts.demo_admissions += 1;
        }
    }

    pub fn demo_admitted_http(&mut self, demo: usize) {
        self.demos[demo].admitted += 1;
        self.counts.demo_admissions += 1;
    }

    pub fn anomaly(&mut self, what: String) {
        if self.anomalies.len() < 100 {
            self.anomalies.push(what);
        }
    }
}
