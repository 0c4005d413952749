//! The pool's two capacities, its threads and its shutdown, tested on the
//! real actors (no sleeps stand in for synchronisation: tests wait on
//! events, gates and barriers).

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use palaver_storage::{MessageStatus, Role, Store, UserId};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::cpu::{CpuError, CpuPool};
use super::*;

fn settings(max_streams: usize, token_delay: Duration) -> AnalysisSettings {
    AnalysisSettings {
        engine: EngineKind::Echo,
        workers: 2,
        queue: 4,
        max_streams,
        token_delay,
        finish_on_disconnect: true,
        max_track_samples: u64::MAX,
        openai: None,
    }
}

/// A stored question and its placeholder reply, as question.rs makes them.
async fn job(store: &Store, text: &str) -> (Job, mpsc::UnboundedReceiver<Event>) {
    let session = store
        .sessions()
        .create(UserId::new(), "s".into(), None)
        .await
        .unwrap();
    let messages = store.messages();
    let question = messages
        .append(
            session.id,
            Role::User,
            text.into(),
            MessageStatus::Complete,
            vec![],
        )
        .await
        .unwrap();
    let reply = messages
        .append(
            session.id,
            Role::Assistant,
            String::new(),
            MessageStatus::Streaming,
            vec![],
        )
        .await
        .unwrap();
    let (events, receiver) = mpsc::unbounded_channel();
    let job = Job {
        session,
        question,
        reply,
        events: super::Sink::Channel(events),
        cancel: Arc::default(),
    };
    (job, receiver)
}

async fn next_token(events: &mut mpsc::UnboundedReceiver<Event>) -> String {
    match events.recv().await.expect("an event") {
        Event::Token(text) => text,
        other => panic!("expected a token, got {other:?}"),
    }
}

/// Reads events up to `Done`: the stored reply.
async fn done(events: &mut mpsc::UnboundedReceiver<Event>) -> Message {
    loop {
        if let Event::Done { reply, .. } = events.recv().await.expect("events until done") {
            return reply;
        }
    }
}

/// The thread a closure ran on: its name and id.
fn whereami() -> (Option<String>, thread::ThreadId) {
    let me = thread::current();
    (me.name().map(str::to_owned), me.id())
}

#[actix_rt::test]
async fn streams_are_bounded_by_max_streams_and_a_place_is_free_before_done() {
    let store = Store::temporary().unwrap();
    // Paced an hour apart: a reply stays on its first token until stopped.
    let pool = AnalysisPool::start(settings(2, Duration::from_secs(3600)), store.clone());
    let first = pool.reserve().unwrap();
    let second = pool.reserve().unwrap();
    assert_eq!(pool.reserve().err(), Some(Busy), "two places, both held");
    drop(second);
    let second = pool.reserve().expect("an unused place is given back");

    let (job, mut events) = job(&store, "one two three").await;
    let cancel = job.cancel.clone();
    first.submit(job);
    assert_eq!(next_token(&mut events).await, "one");
    assert_eq!(pool.streams(), 1);
    assert_eq!(
        pool.reserve().err(),
        Some(Busy),
        "a streaming reply holds its place"
    );
    cancel.by_client();
    let reply = done(&mut events).await;
    assert_eq!(
        (reply.status, reply.text.as_str()),
        (MessageStatus::Cancelled, "one")
    );
    // `done` arrives after the place was given back: asking again at once
    // finds room.
    assert_eq!(pool.streams(), 0);
    let _third = pool.reserve().expect("the finished reply's place is free");
    drop(second);
}

#[actix_rt::test]
async fn cpu_work_runs_on_the_worker_threads_never_the_callers() {
    let store = Store::temporary().unwrap();
    let settings = settings(4, Duration::ZERO);
    let cpu = CpuPool::start(2, 4);
    let (job, mut events) = job(&store, "where").await;
    let mut run = Run::new(&job, &store, &settings, &cpu);
    // Through the engines' API: `run.tool` announces, runs, reports.
    let (name, id) = whereami();
    let result = run
        .tool("whereami", json!({}), || {
            let (name, id) = whereami();
            Ok(json!({"name": name, "id": format!("{id:?}")}))
        })
        .await
        .expect("not stopped")
        .expect("the tool succeeded");
    let ran_on = result["name"].as_str().unwrap_or_default();
    assert!(ran_on.starts_with("palaver-cpu-"), "ran on {ran_on:?}");
    assert_ne!(Some(ran_on), name.as_deref());
    assert_ne!(result["id"], json!(format!("{id:?}")));
    assert!(matches!(events.recv().await, Some(Event::ToolCall { .. })));
    assert!(matches!(
        events.recv().await,
        Some(Event::ToolResult { success: true, .. })
    ));
    assert_eq!(run.tools.len(), 1);
    assert!(run.tools[0].success);
}

/// Two jobs that each wait (up to `patience`) until both have started: true
/// for a job that saw the other arrive.
async fn meet(cpu: &CpuPool, patience: Duration) -> (bool, bool) {
    let arrived = Arc::new((Mutex::new(0u32), Condvar::new()));
    let job = || {
        let arrived = arrived.clone();
        move || {
            let (count, cv) = &*arrived;
            let mut n = count.lock().unwrap();
            *n += 1;
            cv.notify_all();
            let (n, _) = cv.wait_timeout_while(n, patience, |n| *n < 2).unwrap();
            *n == 2
        }
    };
    let (a, b) = tokio::join!(cpu.run(job()), cpu.run(job()));
    (a.unwrap(), b.unwrap())
}

#[actix_rt::test]
async fn two_cpu_jobs_run_in_parallel_with_two_workers() {
    // Each job waits at a barrier for the other: only two threads at once
    // get both through (the wait's bound only turns a hang into a failure).
    let two = CpuPool::start(2, 4);
    assert_eq!(meet(&two, Duration::from_secs(30)).await, (true, true));
    // The control: with one worker the first job can never see the second.
    let one = CpuPool::start(1, 4);
    assert_eq!(meet(&one, Duration::from_millis(100)).await, (false, true));
}

#[actix_rt::test]
async fn a_full_cpu_queue_refuses_at_once_and_a_panic_spares_the_worker() {
    let cpu = CpuPool::start(1, 1);
    // A holds the only worker until its gate opens.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (gate_tx, gate_rx) = std_mpsc::channel::<()>();
    let a = cpu.run(move || {
        let _ = started_tx.send(());
        gate_rx.recv().is_ok()
    });
    let mut a = Box::pin(a);
    assert!((&mut a).now_or_never().is_none());
    started_rx.await.unwrap();
    // B waits in the queue (its one place).
    let mut b = Box::pin(cpu.run(|| true));
    assert!((&mut b).now_or_never().is_none());
    assert_eq!(cpu.waiting(), 1);
    // C finds the queue full: refused without running.
    let c = cpu
        .run(|| -> bool { panic!("a refused job never runs") })
        .await;
    assert_eq!(c, Err(CpuError::Busy));
    gate_tx.send(()).unwrap();
    assert_eq!(a.await, Ok(true));
    assert_eq!(b.await, Ok(true));
    assert_eq!(cpu.waiting(), 0);
    // A panic fails its job; the one worker goes on.
    let crashed = cpu.run(|| -> bool { panic!("a tool bug") }).await;
    assert_eq!(crashed, Err(CpuError::Crashed));
    assert_eq!(cpu.run(|| 7).await, Ok(7));
}

#[actix_rt::test]
async fn a_reply_waiting_for_a_tool_stops_at_once() {
    let store = Store::temporary().unwrap();
    let settings = settings(4, Duration::ZERO);
    let cpu = CpuPool::start(1, 4);
    let (job, _events) = job(&store, "q").await;
    let mut run = Run::new(&job, &store, &settings, &cpu);
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (gate_tx, gate_rx) = std_mpsc::channel::<()>();
    let stopper = async {
        started_rx.await.unwrap();
        job.cancel.by_shutdown();
    };
    let (outcome, ()) = tokio::join!(
        run.tool("slow", json!({}), move || {
            let _ = started_tx.send(());
            let _ = gate_rx.recv();
            Ok(Value::Null)
        }),
        stopper
    );
    assert!(matches!(outcome, Err(Stop::Cancelled)));
    assert!(!run.tools[0].success, "the call is recorded as cut short");
    assert_eq!(job.cancel.status(), MessageStatus::Failed);
    // The job still holds its worker until it returns; then the next runs.
    gate_tx.send(()).unwrap();
    assert_eq!(cpu.run(|| 1).await, Ok(1));
}

#[actix_rt::test]
async fn drain_lets_replies_finish_within_the_grace() {
    let store = Store::temporary().unwrap();
    let pool = AnalysisPool::start(settings(4, Duration::from_millis(5)), store.clone());
    let (job, mut events) = job(&store, "a b c d").await;
    pool.reserve().unwrap().submit(job);
    assert_eq!(next_token(&mut events).await, "a");
    pool.drain(Duration::from_secs(60)).await;
    let reply = done(&mut events).await;
    assert_eq!(
        (reply.status, reply.text.as_str()),
        (MessageStatus::Complete, "a b c d")
    );
    assert_eq!(
        pool.reserve().err(),
        Some(Busy),
        "no reply is taken once draining"
    );
}

#[actix_rt::test]
async fn drain_stops_replies_after_the_grace_and_they_end_failed() {
    let store = Store::temporary().unwrap();
    let pool = AnalysisPool::start(settings(4, Duration::from_secs(3600)), store.clone());
    let mut streams = Vec::new();
    for text in ["alpha beta", "gamma delta"] {
        let (job, mut events) = job(&store, text).await;
        let reply_id = job.reply.id;
        let session = job.session.id;
        pool.reserve().unwrap().submit(job);
        next_token(&mut events).await;
        streams.push((events, reply_id, session));
    }
    let started = Instant::now();
    pool.drain(Duration::from_millis(50)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "the grace was given"
    );
    assert_eq!(pool.streams(), 0, "drain returns once every reply ended");
    for (mut events, reply_id, session) in streams {
        let reply = done(&mut events).await;
        assert_eq!(reply.id, reply_id);
        assert_eq!(reply.status, MessageStatus::Failed);
        let stored = store.messages().list(session, 0, 10).unwrap().items;
        assert_eq!(stored[1].status, MessageStatus::Failed);
        assert!(
            ["alpha", "gamma"].contains(&stored[1].text.as_str()),
            "what was said is kept: {:?}",
            stored[1].text
        );
    }
}

#[actix_rt::test]
async fn a_reply_goes_on_after_its_listener_left_unless_told_not_to() {
    for finish in [true, false] {
        let store = Store::temporary().unwrap();
        let mut settings = settings(4, Duration::ZERO);
        settings.finish_on_disconnect = finish;
        let cpu = CpuPool::start(1, 4);
        let (job, events) = job(&store, "one two three").await;
        drop(events);
        let mut run = Run::new(&job, &store, &settings, &cpu);
        let outcome = echo::answer(&mut run).await;
        if finish {
            assert!(outcome.is_ok());
            assert_eq!(run.text, "one two three");
        } else {
            assert!(matches!(outcome, Err(Stop::Cancelled)));
            assert_eq!(job.cancel.status(), MessageStatus::Cancelled);
        }
    }
}

/// A token the run could not send (the reply was cancelled just before)
/// is not stored: the stored reply is exactly what the client was sent.
/// Found by the crash loop (`palaver-bench crash`): with no token delay,
/// every cancelled reply was stored with one word more than its client saw.
#[actix_rt::test]
async fn a_token_refused_after_a_cancel_is_not_stored() {
    let store = Store::temporary().unwrap();
    let settings = settings(4, Duration::ZERO);
    let cpu = CpuPool::start(1, 4);
    let (job, mut events) = job(&store, "one two three").await;
    let mut run = Run::new(&job, &store, &settings, &cpu);
    run.token("one".into()).await.unwrap();
    job.cancel.by_client();
    assert!(matches!(
        run.token(" two".into()).await,
        Err(Stop::Cancelled)
    ));
    assert_eq!(run.text, "one");
    assert_eq!(next_token(&mut events).await, "one");
    assert!(events.try_recv().is_err(), "nothing else was sent");
}
