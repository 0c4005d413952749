//! The tool registry, shared by the engines. A tool says when a question
//! wants it and what arguments it is called with (the `builtin` engine's
//! choice), what it does and which parameters it takes (the `openai` engine
//! offers it to the model as a function tool), computes a JSON result, and
//! puts a result into words. The conversation tools are here; the audio tools
//! (loudness, peak, tempo, …) are in `audio_tools`, offered when the session
//! is bound to a track ([`tools_for`]).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use palaver_storage::{AnalysisStatus, Message, MessageStatus, Role, Session, Store};
use serde_json::{json, Value};

/// What a tool may read. Clones share the conversation, read at most once
/// per answer however many tools ask for it.
#[derive(Clone)]
pub struct ToolInput {
    pub store: Store,
    pub session: Session,
    /// The question, as asked.
    pub question: String,
    /// The arguments a model called the tool with (`openai`); an empty
    /// object when the builtin engine chose the tool.
    pub args: Value,
    history: Arc<OnceLock<Result<Vec<Message>, String>>>,
    /// The session's track: its analysis document and its format.
    track: Arc<OnceLock<Result<(Value, String), String>>>,
}

impl ToolInput {
    pub fn new(store: Store, session: Session, question: String) -> Self {
        ToolInput {
            store,
            session,
            question,
            args: json!({}),
            history: Arc::default(),
            track: Arc::default(),
        }
    }

    /// The same input, for a call with these arguments.
    pub fn with_args(&self, args: Value) -> Self {
        ToolInput {
            args,
            ..self.clone()
        }
    }

    /// The analysis of the session's track (API.md §6 `analysis`), read at
    /// most once per answer; or, in words, why there is none.
    pub fn track_analysis(&self) -> Result<&Value, String> {
        self.track().map(|(analysis, _)| analysis)
    }

    /// The session's track's format (`wav`, `mp3`, …); empty without one.
    pub fn track_format(&self) -> &str {
        self.track()
            .map(|(_, format)| format.as_str())
            .unwrap_or("")
    }

    fn track(&self) -> Result<&(Value, String), String> {
        let loaded = self.track.get_or_init(|| {
            let id = self
                .session
                .track_id
                .ok_or("this session has no track: start a session with a track to measure it")?;
            let tracks = self.store.tracks();
            let track = tracks
                .get(id)
                .map_err(|e| format!("cannot read the track: {e}"))?
                .ok_or("the session's track has been deleted")?;
            match track.analysis {
                AnalysisStatus::Pending => {
                    return Err("the track is still being analysed: ask again in a moment".into())
                }
                AnalysisStatus::Failed(reason) => {
                    return Err(format!("the track could not be analysed ({reason})"))
                }
                AnalysisStatus::Ready => {}
            }
            let documents = tracks
                .analysis(id)
                .map_err(|e| format!("cannot read the track's analysis: {e}"))?
                .ok_or("the track's analysis is missing")?;
            let analysis = serde_json::from_str(&documents.analysis)
                .map_err(|e| format!("the stored analysis is unreadable: {e}"))?;
            Ok((analysis, track.format))
        });
        loaded.as_ref().map_err(Clone::clone)
    }

    /// The session's finished messages (the reply being written excluded).
    fn history(&self) -> Result<&[Message], String> {
        let loaded = self.history.get_or_init(|| {
            let page = self
                .store
                .messages()
                .list(self.session.id, 0, 100_000)
                .map_err(|e| format!("cannot read the conversation: {e}"))?;
            Ok(page
                .items
                .into_iter()
                .filter(|m| m.status != MessageStatus::Streaming)
                .collect())
        });
        loaded.as_deref().map_err(Clone::clone)
    }
}

pub trait Tool: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// What the tool does, for a model choosing among function tools (an
    /// empty description is left out).
    fn description(&self) -> &'static str {
        ""
    }
    /// The JSON Schema of the arguments a model may call it with (the
    /// default: none).
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {}})
    }
    /// Whether the (lowercased) question asks for this tool.
    fn wanted(&self, question: &str) -> bool;
    fn args(&self, _input: &ToolInput) -> Value {
        json!({})
    }
    /// Computes the result. It runs on a CPU worker thread (one of
    /// `analysis.workers`), so it may compute for long; a tool that waits
    /// on I/O holds its worker meanwhile.
    fn call(&self, input: &ToolInput) -> Result<Value, String>;
    /// One or two sentences saying what the result means.
    fn describe(&self, result: &Value) -> String;
}

/// The conversation tools, in the order they answer.
pub fn registry() -> Vec<Arc<dyn Tool>> {
    vec![
        Arc::new(MessageCount),
        Arc::new(WordCount),
        Arc::new(SessionSummary),
    ]
}

/// The tools a session offers: the audio tools first when it is bound to a
/// track, then the conversation tools.
pub fn tools_for(session: &Session) -> Vec<Arc<dyn Tool>> {
    let mut tools = if session.track_id.is_some() {
        super::audio_tools::audio_tools()
    } else {
        Vec::new()
    };
    tools.extend(registry());
    tools
}

fn asks_count(q: &str) -> bool {
    ["how many", "count", "number of", "total"]
        .iter()
        .any(|w| q.contains(w))
}

/// "1 message", "3 messages".
fn count(n: &Value, one: &str, many: &str) -> String {
    if n.as_u64() == Some(1) {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

pub struct MessageCount;

impl Tool for MessageCount {
    fn name(&self) -> &'static str {
        "message_count"
    }

    fn description(&self) -> &'static str {
        "Counts the messages of this conversation so far: questions and replies."
    }

    fn wanted(&self, q: &str) -> bool {
        (q.contains("message") || q.contains("question")) && asks_count(q)
    }

    fn call(&self, input: &ToolInput) -> Result<Value, String> {
        let history = input.history()?;
        let questions = history.iter().filter(|m| m.role == Role::User).count();
        Ok(json!({
            "messages": history.len(),
            "questions": questions,
            "replies": history.len() - questions,
        }))
    }

    fn describe(&self, r: &Value) -> String {
        format!(
            "This conversation has {}: {} and {}.",
            count(&r["messages"], "message", "messages"),
            count(&r["questions"], "question", "questions"),
            count(&r["replies"], "reply", "replies"),
        )
    }
}

pub struct WordCount;

impl Tool for WordCount {
    fn name(&self) -> &'static str {
        "word_count"
    }

    fn description(&self) -> &'static str {
        "Counts the words of this conversation: in the questions, in the replies and in the current question."
    }

    fn wanted(&self, q: &str) -> bool {
        q.contains("word") && asks_count(q)
    }

    fn call(&self, input: &ToolInput) -> Result<Value, String> {
        let history = input.history()?;
        let by = |role: Role| -> usize {
            history
                .iter()
                .filter(|m| m.role == role)
                .map(|m| words(&m.text))
                .sum()
        };
        Ok(json!({
            "words_in_questions": by(Role::User),
            "words_in_replies": by(Role::Assistant),
            "words_in_this_question": words(&input.question),
        }))
    }

    fn describe(&self, r: &Value) -> String {
        format!(
            "Your questions add up to {} and my replies to {}; this question has {}.",
            count(&r["words_in_questions"], "word", "words"),
            count(&r["words_in_replies"], "word", "words"),
            count(&r["words_in_this_question"], "word", "words"),
        )
    }
}

pub struct SessionSummary;

/// Words too common to say anything about a conversation.
const STOPWORDS: &[&str] = &[
    "the",
    "a",
    "an",
    "and",
    "or",
    "but",
    "of",
    "to",
    "in",
    "on",
    "for",
    "with",
    "is",
    "are",
    "was",
    "were",
    "be",
    "it",
    "this",
    "that",
    "what",
    "how",
    "many",
    "much",
    "i",
    "you",
    "me",
    "my",
    "your",
    "we",
    "do",
    "does",
    "did",
    "can",
    "could",
    "would",
    "should",
    "there",
    "so",
    "far",
    "about",
    "please",
    "summarize",
    "summary",
    "session",
    "conversation",
    "at",
    "as",
    "by",
    "from",
    "if",
    "is",
    "its",
    "not",
    "no",
    "yes",
    "have",
    "has",
    "had",
    "will",
    "just",
];

impl Tool for SessionSummary {
    fn name(&self) -> &'static str {
        "session_summary"
    }

    fn description(&self) -> &'static str {
        "Summarizes this conversation so far: how many messages, the first and the latest question, recurring topics."
    }

    fn wanted(&self, q: &str) -> bool {
        // Not "overview": on a track, that asks for the audio tools.
        ["summar", "recap", "so far"].iter().any(|w| q.contains(w))
    }

    fn call(&self, input: &ToolInput) -> Result<Value, String> {
        let history = input.history()?;
        let questions: Vec<&Message> = history.iter().filter(|m| m.role == Role::User).collect();
        let mut freq: HashMap<String, usize> = HashMap::new();
        for m in &questions {
            for w in m.text.split(|c: char| !c.is_alphanumeric() && c != '\'') {
                let w = w.trim_matches('\'').to_lowercase();
                if w.chars().count() > 2 && !STOPWORDS.contains(&w.as_str()) {
                    *freq.entry(w).or_default() += 1;
                }
            }
        }
        let mut terms: Vec<(String, usize)> = freq.into_iter().collect();
        terms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        terms.truncate(5);
        Ok(json!({
            "messages": history.len(),
            "questions": questions.len(),
            "first_question": questions.first().map(|m| m.text.clone()),
            "latest_question": questions.last().map(|m| m.text.clone()),
            "top_terms": terms.into_iter().map(|(t, _)| t).collect::<Vec<_>>(),
        }))
    }

    fn describe(&self, r: &Value) -> String {
        let mut out = format!(
            "So far {}, {} of them {}.",
            count(&r["messages"], "message", "messages"),
            r["questions"],
            if r["questions"].as_u64() == Some(1) {
                "a question"
            } else {
                "questions"
            }
        );
        if let Some(first) = r["first_question"].as_str() {
            out.push_str(&format!(" It began with \"{first}\""));
            match r["latest_question"].as_str() {
                Some(latest) if latest != first => {
                    out.push_str(&format!(" and the latest question is \"{latest}\"."))
                }
                _ => out.push('.'),
            }
        }
        let terms: Vec<&str> = r["top_terms"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !terms.is_empty() {
            out.push_str(&format!(" Recurring topics: {}.", terms.join(", ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palaver_storage::UserId;

    async fn input(texts: &[(Role, &str)], question: &str) -> ToolInput {
        let store = Store::temporary().unwrap();
        let session = store
            .sessions()
            .create(UserId::new(), "t".into(), None)
            .await
            .unwrap();
        for (role, text) in texts {
            store
                .messages()
                .append(
                    session.id,
                    *role,
                    (*text).into(),
                    MessageStatus::Complete,
                    vec![],
                )
                .await
                .unwrap();
        }
        store
            .messages()
            .append(
                session.id,
                Role::Assistant,
                String::new(),
                MessageStatus::Streaming,
                vec![],
            )
            .await
            .unwrap();
        ToolInput::new(store, session, question.into())
    }

    #[test]
    fn selection_by_question() {
        let pick = |q: &str| -> Vec<&'static str> {
            registry()
                .iter()
                .filter(|t| t.wanted(&q.to_lowercase()))
                .map(|t| t.name())
                .collect()
        };
        assert_eq!(
            pick("How many messages so far?"),
            ["message_count", "session_summary"]
        );
        assert_eq!(pick("count the words please"), ["word_count"]);
        assert_eq!(pick("Summarize this session"), ["session_summary"]);
        assert!(pick("hello there").is_empty());
    }

    #[tokio::test]
    async fn counts_exclude_the_reply_being_written() {
        let i = input(
            &[
                (Role::User, "one two three"),
                (Role::Assistant, "four five"),
                (Role::User, "six"),
            ],
            "six",
        )
        .await;
        let m = MessageCount.call(&i).unwrap();
        assert_eq!(m, json!({"messages": 3, "questions": 2, "replies": 1}));
        assert_eq!(
            MessageCount.describe(&m),
            "This conversation has 3 messages: 2 questions and 1 reply."
        );
        let w = WordCount.call(&i).unwrap();
        assert_eq!(
            w,
            json!({"words_in_questions": 4, "words_in_replies": 2, "words_in_this_question": 1})
        );
    }

    #[tokio::test]
    async fn summary_names_first_latest_and_topics() {
        let i = input(
            &[
                (Role::User, "Is the kick drum too loud?"),
                (Role::Assistant, "Somewhat."),
                (Role::User, "And the kick drum in the chorus?"),
            ],
            "summarize",
        )
        .await;
        let s = SessionSummary.call(&i).unwrap();
        assert_eq!(s["questions"], 2);
        assert_eq!(s["first_question"], "Is the kick drum too loud?");
        assert_eq!(s["latest_question"], "And the kick drum in the chorus?");
        let terms: Vec<&str> = s["top_terms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(&terms[..2], ["drum", "kick"]);
        let text = SessionSummary.describe(&s);
        assert!(text.contains("Recurring topics: drum, kick"), "{text}");
    }
}
