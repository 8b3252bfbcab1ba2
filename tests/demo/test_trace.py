from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tallygate.demo.trace import COLUMNS, TRACE_FILE, build_trace_file, load_trace, main

SHARED_SOURCE = Path(__file__).resolve().parents[3] / "shared/data/azure-llm-inference-2023"


def test_the_shipped_trace_has_every_request_of_both_services() -> None:
    trace = load_trace()
    assert {name: len(service) for name, service in trace.items()} == {
        "code": 8819, "conv": 19366}
    for service in trace.values():
        assert service.offsets_ms[0] == 0
        assert list(service.offsets_ms) == sorted(service.offsets_ms)
        assert 50 * 60_000 < service.span_ms <= 60 * 60_000
        assert len(service.token_pairs) == len(service)
        assert all(i >= 0 and o >= 0 for i, o in service.token_pairs)
    # The README's means: conversations answer longer, code prompts are longer.
    conv, code = trace["conv"].token_pairs, trace["code"].token_pairs
    assert round(sum(i for i, _ in code) / len(code)) == 2048
    assert round(sum(o for _, o in conv) / len(conv)) == 211


def test_the_attribution_and_licence_ship_beside_the_trace() -> None:
    attribution = (TRACE_FILE.parent / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert "CC BY 4.0" in attribution
    assert ('"Splitwise: Efficient generative LLM inference\nusing phase splitting", ISCA 2024'
            in attribution)
    assert "Attribution 4.0 International" in (TRACE_FILE.parent / "LICENSE").read_text(
        encoding="utf-8-sig")


def _write_source(folder: Path) -> None:
    folder.mkdir()
    (folder / "code.csv").write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:17:03.9799600,4808,10\n"
        "2023-11-16 18:17:04.0319600,3180,8\n"
        "2023-11-16 18:17:05.1000001,110,27", encoding="utf-8")  # no final newline, as published
    (folder / "conv.csv").write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n", encoding="utf-8")
    (folder / "LICENSE").write_text("licence text", encoding="utf-8")


def test_build_writes_offsets_from_each_services_first_request(tmp_path: Path) -> None:
    _write_source(tmp_path / "src")
    out = tmp_path / "out" / "trace.csv.gz"
    assert main(["build", str(tmp_path / "src"), "--out", str(out)]) == 0
    lines = gzip.decompress(out.read_bytes()).decode().splitlines()
    assert lines == [",".join(COLUMNS), "code,0,4808,10", "code,52,3180,8", "code,1120,110,27",
                     "conv,0,374,44", "conv,4314,396,109"]
    assert (out.parent / "LICENSE").read_text(encoding="utf-8") == "licence text"
    trace = load_trace(out)
    assert trace["code"].offsets_ms == (0, 52, 1120)
    assert trace["conv"].token_pairs == ((374, 44), (396, 109))


def test_build_is_byte_for_byte_repeatable(tmp_path: Path) -> None:
    _write_source(tmp_path / "src")
    first, second = tmp_path / "a" / "t.csv.gz", tmp_path / "b" / "t.csv.gz"
    build_trace_file(tmp_path / "src", first)
    build_trace_file(tmp_path / "src", second)
    assert first.read_bytes() == second.read_bytes()


def test_build_refuses_a_file_with_other_columns(tmp_path: Path) -> None:
    _write_source(tmp_path / "src")
    (tmp_path / "src" / "conv.csv").write_text("time,in,out\n1,2,3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected the columns TIMESTAMP"):
        build_trace_file(tmp_path / "src", tmp_path / "t.csv.gz")


@pytest.mark.skipif(not SHARED_SOURCE.is_dir(), reason=f"{SHARED_SOURCE} is not here")
def test_the_shipped_trace_is_what_build_makes_from_the_published_files(tmp_path: Path) -> None:
    out = tmp_path / "trace.csv.gz"
    assert build_trace_file(SHARED_SOURCE, out) == 28185
    assert out.read_bytes() == TRACE_FILE.read_bytes()
