"""``/v1/audio/transcriptions``, ``/translations`` (multipart in) and ``/speech`` (audio out).

A transcription's length is the audio's: a WAV file's own header says it, any other file is
taken as 128 kbit/s (``fake`` field ``seconds`` overrides both). Whisper bills it as
``{"type": "duration", "seconds": N}``; the gpt-4o transcribe models bill tokens (about ten
audio tokens a second in, a spoken 2.5 words a second out). Speech comes back as audio bytes,
streamed in chunks, as long as the input takes to say (about 15 characters a second).
"""

from __future__ import annotations

import math
import struct
from typing import Any

from tallygate.fake_upstream.asgi import SSE, Send, chunk, finish, send_json, sse, start
from tallygate.fake_upstream.call import Call, Upload, served_model, split, text

COMPRESSED_BYTES_PER_S = 16_000  # 128 kbit/s, a common MP3 / M4A bitrate
AUDIO_TOKENS_PER_S = 10
TEXT_TOKENS_PER_S = 3
CHARACTERS_PER_S = 15
SPEECH_RATE = 24_000  # samples a second, 16-bit mono, as OpenAI's PCM and WAV
SPEECH_CHUNK = 8192
_MEDIA = {"mp3": b"audio/mpeg", "opus": b"audio/opus", "aac": b"audio/aac",
          "flac": b"audio/flac", "wav": b"audio/wav", "pcm": b"audio/pcm"}


def audio_seconds(upload: Upload) -> int:
    head = upload.head
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE" and len(head) >= 32:
        byte_rate = int(struct.unpack_from("<I", head, 28)[0])
        if byte_rate:
            return max(1, math.ceil((upload.size - 44) / byte_rate))
    return max(1, math.ceil(upload.size / COMPRESSED_BYTES_PER_S))


def upload_headers(upload: Upload) -> list[tuple[bytes, bytes]]:
    """What arrived, so a test can tell the file came through whole."""
    return [(b"x-fake-upload-bytes", str(upload.size).encode()),
            (b"x-fake-upload-sha256", upload.sha256.encode())]


async def transcription(call: Call, send: Send, task: str) -> None:
    upload = call.upload
    if upload is None:
        await send_json(send, 400, {"error": {
            "message": "a multipart body with a 'file' part is required", "type":
            "invalid_request_error", "param": "file", "code": None}})
        return
    seconds = call.count("seconds", audio_seconds(upload))
    words = max(1, round(seconds * 2.5))
    content = text(words).strip()
    model = call.model
    usage: dict[str, Any]
    if "transcribe" in model and task == "transcribe":
        audio_tokens = seconds * AUDIO_TOKENS_PER_S
        output_tokens = seconds * TEXT_TOKENS_PER_S
        usage = {"type": "tokens", "input_tokens": audio_tokens,
                 "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                 "output_tokens": output_tokens, "total_tokens": audio_tokens + output_tokens}
    else:
        usage = {"type": "duration", "seconds": seconds}
    form = call.request.get("response_format", "json")
    headers = upload_headers(upload)
    if call.stream:
        await _stream_transcript(call, send, content, usage, headers)
        return
    if form in ("text", "srt", "vtt"):
        await start(send, 200, [(b"content-type", b"text/plain; charset=utf-8"), *headers])
        await finish(send, content.encode() + b"\n")
        return
    answer: dict[str, Any] = {"text": content}
    if form == "verbose_json":
        answer = {"task": task, "language": "english", "duration": float(seconds),
                  "text": content, "segments": [{
                      "id": 0, "seek": 0, "start": 0.0, "end": float(seconds), "text": content,
                      "tokens": [], "temperature": 0.0, "avg_logprob": -0.2,
                      "compression_ratio": 1.2, "no_speech_prob": 0.01}]}
    if call.report_usage:
        answer["usage"] = usage
    await send_json(send, 200, answer, headers)


async def _stream_transcript(call: Call, send: Send, content: str, usage: dict[str, Any],
                             headers: list[tuple[bytes, bytes]]) -> None:
    """``transcript.text.delta`` events, then ``transcript.text.done`` with the usage."""
    await start(send, 200, [*SSE, *headers])
    for piece in split(content, call.chunks):
        await call.pause()
        await chunk(send, sse({"type": "transcript.text.delta", "delta": piece},
                              stamp=call.stamp))
    done: dict[str, Any] = {"type": "transcript.text.done", "text": content}
    if call.report_usage:
        done["usage"] = usage
    await finish(send, sse(done, stamp=call.stamp))


async def speech(call: Call, send: Send) -> None:
    given = call.request.get("input")
    characters = len(given) if isinstance(given, str) else 0
    seconds = max(1, math.ceil(characters / CHARACTERS_PER_S))
    form = str(call.request.get("response_format") or "mp3")
    media = _MEDIA.get(form, b"audio/mpeg")
    if form in ("wav", "pcm"):
        size = seconds * SPEECH_RATE * 2
        head = _wav_header(size) if form == "wav" else b""
    else:
        size = seconds * COMPRESSED_BYTES_PER_S
        head = b"ID3\x04\x00\x00\x00\x00\x00\x00" if form == "mp3" else b""
    await start(send, 200, [(b"content-type", media),
                            (b"x-fake-model", served_model(call.model).encode())])
    await chunk(send, head)
    silence = bytes(SPEECH_CHUNK)
    sent = 0
    while sent < size:
        await call.pause()
        piece = silence[:min(SPEECH_CHUNK, size - sent)]
        await chunk(send, piece)
        sent += len(piece)
    await finish(send)


def _wav_header(data_bytes: int) -> bytes:
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, SPEECH_RATE, SPEECH_RATE * 2, 2, 16)
            + b"data" + struct.pack("<I", data_bytes))
