//! The `echo` engine: the question back, word by word.

use super::{Run, Stop};

pub async fn answer(run: &mut Run<'_>) -> Result<(), Stop> {
    let text = run.job.question.text.clone();
    run.words(&text).await
}
