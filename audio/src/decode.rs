//! Decoding: opens a file with symphonia (the container sniffed from its
//! bytes, never from its name), checks it is one of the accepted formats,
//! and hands out its audio as planar f32 blocks, one packet at a time.

use std::fs::File;
use std::path::Path;
use std::sync::LazyLock;

use symphonia::core::audio::Channels;
use symphonia::core::codecs::audio::well_known::{CODEC_ID_AAC, CODEC_ID_VORBIS};
use symphonia::core::codecs::audio::{AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::{Hint, Probe, ProbeOptions};
use symphonia::core::formats::well_known::{
    FORMAT_ID_FLAC, FORMAT_ID_ISOMP4, FORMAT_ID_MP3, FORMAT_ID_OGG, FORMAT_ID_WAVE,
};
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::packet::Packet;

use crate::{AudioError, Format};

/// The sample rates accepted: telephone speech to 8× DXD. Anything outside
/// is a broken header, not audio anyone uploads.
pub(crate) const RATES: std::ops::RangeInclusive<u32> = 8_000..=768_000;
/// The channel counts accepted (up to 22.2 plus margin).
pub(crate) const CHANNELS: std::ops::RangeInclusive<usize> = 1..=32;

/// Demuxer errors in a row after which the rest of the file is given up:
/// a reader that keeps failing without advancing must not spin forever.
const MAX_CONSECUTIVE_ERRORS: u32 = 64;
/// Packets read before the first one that decodes to audio; a file whose
/// first this many packets yield nothing is not audio.
const MAX_PACKETS_BEFORE_AUDIO: u32 = 256;

/// The prober: every enabled format and metadata reader, scanning at most
/// 256 KiB for a container's marker (symphonia's default is 1 MiB: a real
/// file starts with its container, after its tags, so a long scan only
/// finds sync words in noise).
static PROBE: LazyLock<Probe> = LazyLock::new(|| {
    let mut probe = Probe::new_with_options(&ProbeOptions {
        max_probe_depth: 256 * 1024,
        max_score_depth: 16 * 1024,
    });
    symphonia::default::register_enabled_formats(&mut probe);
    probe
});

/// An open file being decoded.
pub(crate) struct Source {
    reader: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    pub format: Format,
    /// Fixed by the first decoded block; blocks of another shape are
    /// skipped (and counted as errors).
    pub sample_rate: u32,
    pub channels: usize,
    /// The speaker positions of the channels (symphonia's `Position`
    /// bits, in plane order) when the file names them.
    pub layout: Option<u64>,
    /// The track's length in frames as the container states it.
    n_frames: Option<u64>,
    /// Seconds per tick of packet durations.
    time_base: Option<(u32, u32)>,
    /// The sum of the durations of the track's packets read so far (ticks).
    packet_ticks: u64,
    /// Packets (or demuxed units) that failed and were skipped.
    pub decode_errors: u64,
    /// The last decoded block, one vector per channel.
    planes: Vec<Vec<f32>>,
    /// A block decoded while opening, not yet handed out.
    pending: bool,
    ended: bool,
}

impl Source {
    /// Opens `path`, sniffs its container and decodes until the first
    /// packet with audio. `NotAudio` for anything that is not one of the
    /// accepted formats or yields no audio.
    pub fn open(path: &Path) -> Result<Source, AudioError> {
        let file = File::open(path)?;
        let mss = MediaSourceStream::new(Box::new(file), Default::default());
        // No hint: the name of an upload is not evidence of anything.
        let reader = PROBE
            .probe(
                &Hint::new(),
                mss,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
            .map_err(|e| not_audio("no known container", &e))?;
        let info = reader.format_info().format;
        let track = reader
            .default_track(TrackType::Audio)
            .ok_or_else(|| AudioError::NotAudio("no audio track".into()))?;
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .ok_or_else(|| AudioError::NotAudio("no audio codec parameters".into()))?
            .clone();
        let format = if info == FORMAT_ID_WAVE {
            Format::Wav
        } else if info == FORMAT_ID_FLAC {
            Format::Flac
        } else if info == FORMAT_ID_MP3 {
            Format::Mp3
        } else if info == FORMAT_ID_OGG && params.codec == CODEC_ID_VORBIS {
            Format::Ogg
        } else if info == FORMAT_ID_ISOMP4 && params.codec == CODEC_ID_AAC {
            Format::M4a
        } else {
            return Err(AudioError::NotAudio(format!(
                "{} is not an accepted format",
                reader.format_info().long_name
            )));
        };
        let track_id = track.id;
        let n_frames = track.num_frames;
        let time_base = track.time_base.map(|tb| (tb.numer.get(), tb.denom.get()));
        let decoder = make_decoder(&params)?;
        let mut source = Source {
            reader,
            decoder,
            track_id,
            format,
            sample_rate: 0,
            channels: 0,
            layout: None,
            n_frames,
            time_base,
            packet_ticks: 0,
            decode_errors: 0,
            planes: Vec::new(),
            pending: false,
            ended: false,
        };
        let mut packets = 0;
        while source.sample_rate == 0 {
            packets += 1;
            if packets > MAX_PACKETS_BEFORE_AUDIO || !source.decode_next()? {
                return Err(AudioError::NotAudio("no packet decodes to audio".into()));
            }
        }
        source.pending = true;
        Ok(source)
    }

    /// The next decoded block (one slice per channel, all the same
    /// length, at least one frame), or `None` at the end.
    pub fn next_block(&mut self) -> Result<Option<&[Vec<f32>]>, AudioError> {
        if self.pending {
            self.pending = false;
            return Ok(Some(&self.planes));
        }
        loop {
            if !self.decode_next()? {
                return Ok(None);
            }
            if self.pending {
                self.pending = false;
                return Ok(Some(&self.planes));
            }
        }
    }

    /// The duration the container states, or else the sum of the packets'
    /// durations found by reading (not decoding) the rest of the file.
    pub fn stated_or_scanned_seconds(mut self) -> f64 {
        let rate = f64::from(self.sample_rate);
        if let Some(frames) = self.n_frames.filter(|&n| n > 0) {
            return frames as f64 / rate;
        }
        let mut errors = 0;
        loop {
            match self.reader.next_packet() {
                Ok(Some(packet)) => {
                    errors = 0;
                    self.count_ticks(&packet);
                }
                Ok(None) => break,
                Err(SymError::DecodeError(_)) if errors < MAX_CONSECUTIVE_ERRORS => errors += 1,
                Err(_) => break,
            }
        }
        self.ticks_seconds()
    }

    fn ticks_seconds(&self) -> f64 {
        match self.time_base {
            Some((numer, denom)) => self.packet_ticks as f64 * f64::from(numer) / f64::from(denom),
            None => self.packet_ticks as f64 / f64::from(self.sample_rate),
        }
    }

    fn count_ticks(&mut self, packet: &Packet) {
        if packet.track_id == self.track_id {
            self.packet_ticks = self.packet_ticks.saturating_add(packet.dur.get());
        }
    }

    /// Reads and decodes one packet. `Ok(false)` at the end of the stream;
    /// `Ok(true)` with `pending` set when it left a block in `planes`.
    fn decode_next(&mut self) -> Result<bool, AudioError> {
        let mut failures = 0;
        let packet = loop {
            if self.ended {
                return Ok(false);
            }
            match self.reader.next_packet() {
                Ok(Some(packet)) if packet.track_id == self.track_id => break packet,
                Ok(Some(_)) => failures = 0,
                Ok(None) => self.ended = true,
                Err(SymError::ResetRequired) => self.reselect()?,
                Err(SymError::DecodeError(_)) if failures < MAX_CONSECUTIVE_ERRORS => {
                    self.decode_errors += 1;
                    failures += 1;
                }
                // A truncated file (the demuxer reads past the end), a
                // demuxer that keeps failing, or a feature it lacks: what
                // was read is all there is.
                Err(_) => {
                    self.decode_errors += 1;
                    self.ended = true;
                }
            }
        };
        self.count_ticks(&packet);
        let buf = match self.decoder.decode(&packet) {
            Ok(buf) => buf,
            Err(SymError::DecodeError(_) | SymError::IoError(_)) => {
                self.decode_errors += 1;
                return Ok(true);
            }
            Err(SymError::ResetRequired) => {
                self.decoder.reset();
                return Ok(true);
            }
            Err(_) => {
                self.decode_errors += 1;
                self.ended = true;
                return Ok(true);
            }
        };
        if buf.frames() == 0 {
            return Ok(true);
        }
        let rate = buf.spec().rate();
        let channels = buf.spec().channels().count();
        if self.sample_rate == 0 {
            if !RATES.contains(&rate) || !CHANNELS.contains(&channels) {
                return Err(AudioError::NotAudio(format!(
                    "{rate} Hz with {channels} channels is not plausible audio"
                )));
            }
            self.sample_rate = rate;
            self.channels = channels;
            self.layout = match buf.spec().channels() {
                Channels::Positioned(positions) => Some(positions.bits()),
                _ => None,
            };
        } else if rate != self.sample_rate || channels != self.channels {
            // A chained stream of another shape: not part of this track.
            self.decode_errors += 1;
            return Ok(true);
        }
        buf.copy_to_vecs_planar::<f32>(&mut self.planes);
        if self.planes.len() != self.channels {
            self.decode_errors += 1;
            return Ok(true);
        }
        self.pending = true;
        Ok(true)
    }

    /// After `ResetRequired` (a chained Ogg stream): the track list changed;
    /// follow the new default audio track with a new decoder.
    fn reselect(&mut self) -> Result<(), AudioError> {
        let Some(track) = self.reader.default_track(TrackType::Audio) else {
            self.ended = true;
            return Ok(());
        };
        let Some(params) = track.codec_params.as_ref().and_then(|p| p.audio()).cloned() else {
            self.ended = true;
            return Ok(());
        };
        self.track_id = track.id;
        match make_decoder(&params) {
            Ok(decoder) => self.decoder = decoder,
            Err(_) => {
                self.decode_errors += 1;
                self.ended = true;
            }
        }
        Ok(())
    }
}

fn make_decoder(params: &AudioCodecParameters) -> Result<Box<dyn AudioDecoder>, AudioError> {
    symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| not_audio("no decoder for its codec", &e))
}

fn not_audio(what: &str, e: &SymError) -> AudioError {
    AudioError::NotAudio(format!("{what} ({e})"))
}
