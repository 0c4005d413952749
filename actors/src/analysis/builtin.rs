//! The `builtin` engine: a local agent that needs no network. It picks the
//! tools the question asks for (the audio tools too when the session is
//! bound to a track), announces and runs each, then answers in words built
//! from their results.

use super::audio_tools::TRACK_HELP;
use super::tools::{tools_for, ToolInput};
use super::{Run, Stop};

/// What the engine says when no tool fits the question.
pub const HELP: &str = "I can count the messages and the words in this conversation and \
summarize it so far. Try \"how many messages so far?\", \"count the words\" or \
\"summarize this session\".";

pub async fn answer(run: &mut Run<'_>) -> Result<(), Stop> {
    let question = run.job.question.text.clone();
    let lowered = question.to_lowercase();
    let input = ToolInput::new(run.store.clone(), run.job.session.clone(), question);
    let chosen: Vec<_> = tools_for(&run.job.session)
        .into_iter()
        .filter(|t| t.wanted(&lowered))
        .collect();
    if chosen.is_empty() {
        if run.job.session.track_id.is_some() {
            return run.words(&format!("{TRACK_HELP} {HELP}")).await;
        }
        return run.words(HELP).await;
    }
    let mut sentences = Vec::new();
    for tool in chosen {
        let args = tool.args(&input);
        let (t, i) = (tool.clone(), input.clone());
        match run.tool(tool.name(), args, move || t.call(&i)).await? {
            Ok(result) => sentences.push(tool.describe(&result)),
            Err(error) => sentences.push(format!("{} failed: {error}.", tool.name())),
        }
    }
    let answer = sentences.join(" ");
    run.words(&answer).await
}
