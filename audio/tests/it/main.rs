//! palaver-audio's integration tests, one binary: every file they read is
//! generated here (tones, noise, a music-like pattern), encoded into the
//! other containers with ffmpeg where a test needs them.

mod bad_input;
mod containers;
mod levels;
mod loudness;
mod overview;
mod support;
