"""pybroker data print / verify / recover on real journals written by a broker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from support import send

from pybroker.cli.data import data
from pybroker.testing import embedded_broker


async def _fill(directory: Path, count: int, address: str = "jq") -> None:
    async with embedded_broker(persistence=True, data_dir=directory) as broker:
        await asyncio.to_thread(send, broker.port, address, [f"m{i}" for i in range(count)], durable=True)


def _run(*args: str) -> object:
    return CliRunner().invoke(data, list(args), catch_exceptions=False)


def _dirs(root: Path) -> list[str]:
    return ["--journal", str(root / "data" / "journal"), "--bindings", str(root / "data" / "bindings")]


@pytest.mark.asyncio
async def test_print_lists_records_and_counts_per_queue(tmp_path):
    await _fill(tmp_path, 7)
    result = await asyncio.to_thread(_run, "print", *_dirs(tmp_path))
    assert result.exit_code == 0, result.output
    assert "operation@AddRecord" in result.output and "ADD_MESSAGE" in result.output
    assert "### Message Counts ###" in result.output
    assert "queue jq: 7" in result.output
    as_json = await asyncio.to_thread(_run, "print", "--json", *_dirs(tmp_path))
    summary = json.loads(as_json.output)
    assert summary["message_counts"] == {"jq": 7}
    assert summary["surviving_messages"] == 7
    # printing did not change the journal: a second print gives the same records
    again = json.loads((await asyncio.to_thread(_run, "print", "--json", *_dirs(tmp_path))).output)
    assert again["records"] == summary["records"]


@pytest.mark.asyncio
async def test_verify_ok_then_damage_then_recover(tmp_path):
    await _fill(tmp_path, 50)
    ok = await asyncio.to_thread(_run, "verify", *_dirs(tmp_path))
    assert ok.exit_code == 0 and "OK" in ok.output
    segment = sorted((tmp_path / "data" / "journal").glob("*.pbj"))[0]
    data_bytes = bytearray(segment.read_bytes())
    # flip a bit in the middle of the written records (not the tail)
    position = 64 + 30 * 75
    data_bytes[position] ^= 0x40
    segment.write_bytes(bytes(data_bytes))
    damaged = await asyncio.to_thread(_run, "verify", *_dirs(tmp_path))
    assert damaged.exit_code == 1
    assert "DAMAGE" in damaged.output and segment.name in damaged.output
    out = tmp_path / "recovered"
    recovered = await asyncio.to_thread(_run, "recover", *_dirs(tmp_path), "--output", str(out))
    assert "salvaged" in recovered.output and "damaged regions" in recovered.output
    assert recovered.exit_code == 1  # something was lost, and it says so
    summary = json.loads(
        (await asyncio.to_thread(
            _run, "print", "--json", "--journal", str(out / "journal"), "--bindings", str(out / "bindings")
        )).output
    )
    assert 45 <= summary["message_counts"]["jq"] < 50


@pytest.mark.asyncio
async def test_refuses_a_journal_a_live_broker_holds(tmp_path):
    async with embedded_broker(persistence=True, data_dir=tmp_path):
        result = await asyncio.to_thread(_run, "print", *_dirs(tmp_path))
        assert result.exit_code == 4
        assert "live broker" in result.output
        forced = await asyncio.to_thread(_run, "verify", "--force", *_dirs(tmp_path))
        assert forced.exit_code == 0
