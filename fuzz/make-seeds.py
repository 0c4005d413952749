#!/usr/bin/env python3
"""Writes the committed seed corpora of the text and frame targets
(fuzz/seeds/<target>/) and the audio files (with ffmpeg). The storage
codec's seeds are real encodings, written by a storage unit test
(`PALAVER_WRITE_FUZZ_SEEDS=1 cargo test -p palaver-storage fuzz_seeds`).

    python3 fuzz/make-seeds.py     # from the repository root or fuzz/
"""
import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")
ROOT = os.path.dirname(HERE)

# The fuzzing config's secrets (fuzz/src/lib.rs).
OWN_SECRET = b"fuzz-own-secret-fuzz-own-secret-fuzz-own-secret"
DJANGO_SECRET = b"fuzz-django-secret-fuzz-django-secret-fuzz"
FAR = 4102444800  # 2100-01-01: seeds stay unexpired


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(secret, header, claims):
    msg = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    sig = hmac.new(secret, msg.encode(), hashlib.sha256).digest()
    return msg + "." + b64(sig)


# ---------------------------------------------------------------- ws_frames
def frame(opcode, payload, fin=True, mask=b"\x37\xfa\x21\x3d"):
    if isinstance(payload, str):
        payload = payload.encode()
    out = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        out.append(0x80 | n)
    elif n < 65536:
        out.append(0x80 | 126)
        out += n.to_bytes(2, "big")
    else:
        out.append(0x80 | 127)
        out += n.to_bytes(8, "big")
    out += mask
    out += bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(out)


def ws_seeds():
    TEXT, BIN, CLOSE, PING, PONG, CONT = 1, 2, 8, 9, 10, 0
    q = '{"type":"question","text":"What is the tempo?","id":"c1"}'
    write("ws_frames", "question", b"\x04\x06" + frame(TEXT, q))
    write("ws_frames", "ping-cancel", b"\x0c\x06" + frame(TEXT, '{"type":"ping"}')
          + frame(TEXT, '{"type":"cancel"}'))
    write("ws_frames", "refresh", b"\x0c\x08" + frame(
        TEXT, '{"type":"refresh","token":"eyJhbGciOiJIUzI1NiJ9.e30.x"}'))
    write("ws_frames", "resume", b"\x0c\x08" + frame(
        TEXT, '{"type":"resume","message_id":"0190c7a4-7e1c-7000-8000-000000000000","after":3}'))
    write("ws_frames", "fragmented", b"\x02\x06" + frame(TEXT, '{"type":"que', fin=False)
          + frame(PING, "p") + frame(CONT, 'stion","text":"h', fin=False)
          + frame(CONT, 'i"}'))
    write("ws_frames", "control", b"\x0c\x04" + frame(PING, "x" * 125) + frame(PONG, "")
          + frame(BIN, b"\x00\x01") + frame(CLOSE, b"\x03\xe8bye"))
    write("ws_frames", "invalid-utf8", b"\x0c\x04" + frame(TEXT, b"\xff\xfe"))
    write("ws_frames", "long-length", b"\x0c\x0b" + frame(TEXT, "y" * 300))
    write("ws_frames", "unmasked", b"\x0c\x04" + bytes([0x81, 2]) + b"hi")


# ---------------------------------------------------------------------- jwt
def jwt_seeds():
    kid = hashlib.sha256(OWN_SECRET).hexdigest()[:16]
    own = {"iss": "palaver", "sub": "00000000-0000-0000-0000-000000000000",
           "user_id": "00000000-0000-0000-0000-000000000000", "token_type": "access",
           "jti": "0190c7a4-7e1c-7000-8000-000000000001",
           "fam": "0190c7a4-7e1c-7000-8000-000000000002", "iat": 1700000000,
           "exp": FAR, "is_demo": False}
    write("jwt", "raw-own", b"\x00" + jwt(OWN_SECRET, {"alg": "HS256", "typ": "JWT", "kid": kid}, own).encode())
    write("jwt", "raw-django", b"\x00" + jwt(DJANGO_SECRET, {"alg": "HS256", "typ": "JWT"},
          {"token_type": "access", "exp": FAR, "jti": "a", "user_id": 7}).encode())
    write("jwt", "raw-none", b"\x00" + (b64(b'{"alg":"none"}') + "." + b64(json.dumps(own).encode()) + ".").encode())
    write("jwt", "raw-garbage", b"\x00not.a.token")
    header = '{"alg":"HS256","typ":"JWT","kid":"%s"}' % kid
    claims = ('{"iss":"palaver","sub":"$SUB","user_id":"$SUB","token_type":"access",'
              '"jti":"0190c7a4-7e1c-7000-8000-000000000001","fam":"$FAM","iat":$NOW,'
              '"exp":$EXP,"is_demo":false}')
    write("jwt", "signed-own", "\x01" + header + "\n" + claims)
    write("jwt", "signed-own-refresh", "\x01" + header + "\n" + claims.replace('"access"', '"refresh"'))
    write("jwt", "signed-own-nbf-aud", "\x01" + header + "\n"
          + claims[:-1] + ',"nbf":$NOW,"aud":["a","b"]}')
    write("jwt", "signed-django", '\x02{"alg":"HS256","typ":"JWT"}\n'
          '{"token_type":"access","exp":$EXP,"jti":"j","user_id":42}')
    write("jwt", "signed-django-string-id", '\x02{"alg":"HS512"}\n'
          '{"token_type":"access","exp":$EXP,"user_id":"alice","is_demo":true}')
    write("jwt", "signed-wrong-iss", '\x02{"alg":"HS256"}\n{"iss":"palaver","exp":$EXP,"user_id":1}')


# -------------------------------------------------------------- credentials
def credential_seeds():
    write("credentials", "ticket", "ticket=$TICKET\nOrigin: http://localhost:8080")
    write("credentials", "subprotocol", "\nSec-WebSocket-Protocol: palaver.v1, bearer.$ACCESS")
    write("credentials", "query-token", "token=$MINTED&resume=0190c7a4-7e1c-7000-8000-000000000000:2")
    write("credentials", "bearer", "\nAuthorization: Bearer $ACCESS\nHost: localhost:8080")
    write("credentials", "bearer-refresh", "\nAuthorization: bearer   $REFRESH")
    write("credentials", "api-key-query", "api_key=$APIKEY")
    write("credentials", "api-key-header", "\nX-API-Key:  $APIKEY \nOrigin: https://evil.example")
    write("credentials", "external", "\nAuthorization: Bearer $EXTERNAL")
    write("credentials", "all", "ticket=x&token=$ACCESS&api_key=pvk_x\nSec-WebSocket-Protocol: bearer.\n"
          "Authorization: Basic abc\nX-API-Key: $APIKEY")
    write("credentials", "encoded", "token=%24ACCESS&ticket=%ZZ&api_key=pvk%5F")


# ------------------------------------------------------------------- config
def config_seeds():
    shutil.copy(os.path.join(ROOT, "config.toml"), os.path.join(SEEDS, "config", "shipped"))
    write("config", "empty", "")
    write("config", "external", '[auth]\nsecret = "0123456789abcdef0123456789abcdef-own"\n'
          '[[auth.external]]\nname = "django"\nsecret = "0123456789abcdef0123456789abcdef-dj"\n'
          '[[auth.external]]\nname = "kc"\nissuer = "https://kc.example.com/realms/main"\n'
          'algorithms = ["RS256", "ES256"]\njwks_url = "https://kc.example.com/certs"\n'
          'jwks_cache = "1h"\nuser_claim = "sub"\ntoken_type_claim = ""\ndemo_claim = "demo"\n')
    write("config", "env", '[demo]\nrequest_limit = 3\n\0DEMO__REQUEST_LIMIT=5\0AUTH__ACCESS_TTL=4s'
          '\0SERVER__ALLOWED_ORIGINS=["https://a.example"]\0WS__MAX_MESSAGE_BYTES=x')
    write("config", "openai", '[analysis]\nengine = "openai"\nworkers = 0\n[analysis.openai]\n'
          'base_url = "http://127.0.0.1:11434/v1"\nmodel = "llama3"\napi_key_env = "NOPE"\n'
          'temperature = 0.5\nidle_timeout = "1m"\n')
    write("config", "bad-values", '[ws]\nping_interval = "30s"\nidle_timeout = "10s"\n'
          '[logging]\nlevel = "palaver=debug,[span{x=1}]=trace"\n[server]\n'
          'allowed_origins = ["https://chat.example.com/"]\nbind = "[::1]:0"\n')
    write("config", "rs256", '[auth]\nalgorithm = "RS256"\nprivate_key = "missing.pem"\n'
          'public_key = "missing.pub"\nprevious_secrets = ["short"]\n')
    write("config", "metrics", '[metrics]\nbind = "127.0.0.1:9100"\ntoken = "scrape-token-0123456789"\n'
          '[storage]\ncache_bytes = 1\nmax_upload_bytes = 0\n')


# ------------------------------------------------------------------- upload
def multipart(boundary, parts):
    out = b""
    for headers, body in parts:
        out += b"--" + boundary + b"\r\n" + headers + b"\r\n\r\n" + body + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


def upload_seeds(audio):
    b = b"XyZzY"
    ct = b"multipart/form-data; boundary=" + b
    wav = audio["tiny.wav"]
    write("upload", "wav", b"\x09\x07" + ct + b"\n" + multipart(b, [
        (b'Content-Disposition: form-data; name="file"; filename="take 1.wav"\r\nContent-Type: audio/wav', wav)]))
    write("upload", "mp3-and-field", b"\x0c\x07" + ct + b"\n" + multipart(b, [
        (b'Content-Disposition: form-data; name="title"', b"hello"),
        (b'Content-Disposition: form-data; name="file"; filename="../../etc/passwd"', audio["tiny.mp3"])]))
    write("upload", "two-files", b"\x03\x07" + ct + b"\n" + multipart(b, [
        (b'Content-Disposition: form-data; name="file"; filename="a.wav"', b"RIFF"),
        (b'Content-Disposition: form-data; name="file"; filename="b.wav"', b"RIFF")]))
    write("upload", "no-file", b"\x0c\x00" + ct + b"\n" + multipart(b, [
        (b'Content-Disposition: form-data; name="other"', b"x" * 300)]))
    write("upload", "quoted-boundary", b"\x05\x07" + b'multipart/form-data; boundary="a b"; charset=utf-8\n'
          + multipart(b"a b", [(b'Content-Disposition: form-data; name=file; filename*=UTF-8\'\'%C3%A9.flac',
                                 audio["tiny.flac"])]))
    write("upload", "not-multipart", b"\x0c\x07application/json\n{}")


# -------------------------------------------------------------------- audio
def audio_seeds():
    """Tiny real files (a tenth of a second of a tone), each format
    (ffmpeg; FLAC with sox)."""
    out = {}
    tmp = tempfile.mkdtemp()
    try:
        specs = {
            "tiny.wav": ["-ar", "8000", "-ac", "1", "-c:a", "pcm_s16le"],
            "tiny-f32-stereo.wav": ["-ar", "8000", "-ac", "2", "-c:a", "pcm_f32le"],
            "tiny-adpcm.wav": ["-ar", "8000", "-ac", "1", "-c:a", "adpcm_ms"],
            "tiny.mp3": ["-ar", "8000", "-ac", "1", "-c:a", "libmp3lame", "-b:a", "8k"],
            "tiny.ogg": ["-ar", "8000", "-ac", "1", "-c:a", "libvorbis", "-q:a", "0"],
            "tiny.m4a": ["-ar", "8000", "-ac", "1", "-c:a", "aac", "-b:a", "8k"],
        }
        for name, codec in specs.items():
            path = os.path.join(tmp, name)
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                            "sine=frequency=440:duration=0.1:sample_rate=8000", *codec,
                            "-map_metadata", "-1", "-fflags", "+bitexact", path], check=True)
            with open(path, "rb") as f:
                out[name] = f.read()
            write("audio", name, out[name])
        # sox: ffmpeg's FLAC muxer adds 8 KiB of padding.
        for name, channels in [("tiny.flac", "1"), ("tiny-6ch.flac", "6")]:
            path = os.path.join(tmp, name)
            subprocess.run(["sox", "-n", "-r", "8000", "-c", channels, "-b", "16", path,
                            "synth", "0.1", "sine", "440"], check=True)
            with open(path, "rb") as f:
                out[name] = f.read()
            write("audio", name, out[name])
    finally:
        shutil.rmtree(tmp)
    return out


if __name__ == "__main__":
    ws_seeds()
    jwt_seeds()
    credential_seeds()
    os.makedirs(os.path.join(SEEDS, "config"), exist_ok=True)
    config_seeds()
    audio = audio_seeds()
    upload_seeds(audio)
