"""Audio: multipart uploads read as a stream, billed by their length; speech streamed back."""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterator

import httpx
import openai
from openai.types.audio import Transcription, Translation


def wav(seconds: float, rate: int = 16_000) -> bytes:
    data = int(seconds * rate) * 2
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data) + bytes(data))


def test_whisper_bills_the_wav_files_duration(fake_url: str, oai: openai.OpenAI) -> None:
    answer = oai.audio.transcriptions.create(
        model="whisper-1", file=("call.wav", io.BytesIO(wav(12.5)), "audio/wav"))
    assert isinstance(answer, Transcription) and answer.text
    assert answer.usage is not None and answer.usage.type == "duration"
    assert answer.usage.seconds == 13  # whole seconds, rounded up


def test_a_compressed_file_is_timed_by_its_size_and_a_form_field_overrides(
        fake_url: str) -> None:
    mp3 = b"ID3" + bytes(16_000 * 30 - 3)  # 30 s at 128 kbit/s
    # (the SDK's audio.translations.create is deprecated: the answer is checked by its type)
    raw = httpx.post(f"{fake_url}/v1/audio/translations", data={"model": "whisper-1"},
                     files={"file": ("talk.mp3", mp3, "audio/mpeg")}).json()
    assert Translation.model_validate(raw).text
    assert raw["usage"] == {"type": "duration", "seconds": 30}
    told = httpx.post(f"{fake_url}/v1/audio/transcriptions",
                      data={"model": "whisper-1", "fake": '{"seconds": 4}'},
                      files={"file": ("talk.mp3", mp3, "audio/mpeg")}).json()
    assert told["usage"] == {"type": "duration", "seconds": 4}
    flat = httpx.post(f"{fake_url}/v1/audio/transcriptions",
                      data={"model": "whisper-1", "fake[seconds]": "9"},
                      files={"file": ("talk.mp3", mp3, "audio/mpeg")}).json()
    assert flat["usage"] == {"type": "duration", "seconds": 9}


def test_gpt_4o_transcribe_bills_tokens(fake_url: str, oai: openai.OpenAI) -> None:
    answer = oai.audio.transcriptions.create(
        model="gpt-4o-transcribe", file=("a.wav", io.BytesIO(wav(10)), "audio/wav"))
    usage = answer.usage
    assert usage is not None and usage.type == "tokens"
    assert usage.input_token_details is not None
    assert usage.input_token_details.audio_tokens == usage.input_tokens == 100
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


def test_a_large_upload_sent_in_pieces_arrives_whole(fake_url: str) -> None:
    boundary = "fakeboundary1234"
    payload = bytes(range(256)) * (6 * 4096)  # 6 MiB
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n"
            f"whisper-1\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"big.mp3\"\r\nContent-Type: audio/mpeg\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def pieces() -> Iterator[bytes]:  # chunked transfer encoding, as a streaming gateway sends
        yield head
        for start in range(0, len(payload), 65_521):
            yield payload[start:start + 65_521]
        yield tail

    answer = httpx.post(f"{fake_url}/v1/audio/transcriptions", content=pieces(), headers={
        "content-type": f"multipart/form-data; boundary={boundary}"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-fake-upload-bytes"] == str(len(payload))
    assert answer.headers["x-fake-upload-sha256"] == hashlib.sha256(payload).hexdigest()
    assert answer.json()["usage"]["seconds"] == -(-len(payload) // 16_000)


def test_text_formats_and_bad_requests(fake_url: str) -> None:
    plain = httpx.post(f"{fake_url}/v1/audio/transcriptions",
                       data={"model": "whisper-1", "response_format": "text"},
                       files={"file": ("a.wav", wav(1), "audio/wav")})
    assert plain.headers["content-type"].startswith("text/plain") and plain.text.strip()
    verbose = httpx.post(f"{fake_url}/v1/audio/transcriptions",
                         data={"model": "whisper-1", "response_format": "verbose_json"},
                         files={"file": ("a.wav", wav(3), "audio/wav")}).json()
    assert verbose["duration"] == 3.0 and verbose["usage"]["seconds"] == 3
    no_file = httpx.post(f"{fake_url}/v1/audio/transcriptions", data={"model": "whisper-1"},
                         files={"other": (None, "x")})
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    as_json = httpx.post(f"{fake_url}/v1/audio/transcriptions", json={"model": "whisper-1"})
    assert as_json.status_code == 400


def test_speech_streams_audio_as_long_as_the_text_takes_to_say(
        fake_url: str, oai: openai.OpenAI) -> None:
    text = "Tallygate meters every call, exactly. " * 4  # 152 characters: 11 s
    with httpx.stream("POST", f"{fake_url}/v1/audio/speech", json={
            "model": "gpt-4o-mini-tts", "voice": "alloy", "input": text,
            "response_format": "wav"}) as answer:
        assert answer.headers["content-type"] == "audio/wav"
        pieces = list(answer.iter_raw())
    audio = b"".join(pieces)
    assert len(pieces) > 1
    assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"
    assert len(audio) == 44 + 11 * 24_000 * 2
    mp3 = oai.audio.speech.create(model="tts-1", voice="alloy", input="hi")
    assert mp3.content.startswith(b"ID3") and len(mp3.content) > 16_000


def test_a_streamed_transcription_ends_with_its_usage(fake_url: str, oai: openai.OpenAI) -> None:
    events = list(oai.audio.transcriptions.create(
        model="gpt-4o-mini-transcribe", file=("a.wav", io.BytesIO(wav(5)), "audio/wav"),
        stream=True))
    assert [e.type for e in events] == ["transcript.text.delta"] * 4 + ["transcript.text.done"]
    done = events[-1]
    assert done.type == "transcript.text.done" and done.usage is not None
    assert done.usage.input_tokens == 50
    assert "".join(e.delta for e in events[:-1]) == done.text
