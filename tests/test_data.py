"""Corpora, tokenizers, shards and streaming, on small local files."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from gradpower.data.corpus import DataError, open_local, split_documents
from gradpower.data.pipeline import DataConfig, build_data
from gradpower.data.shards import PackedTokens, ShardBatches, build_shards
from gradpower.data.streaming import StreamBatches, local_stream
from gradpower.data.tokenizer import load_pretrained, train_bpe

DOCS = [f"Document number {i}. " + "The quick brown fox jumps over the lazy dog. " * (3 + i % 5) for i in range(200)]


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    return train_bpe(DOCS, 300, tmp_path_factory.mktemp("tok") / "bpe.json")


def test_bundled_corpus_is_verified_and_split():
    docs = list(open_local("shakespeare").documents())
    assert len(docs) > 500 and "ROMEO" in "".join(docs)
    assert split_documents("a\n\n\nb\n\nc") == ["a", "b\n\nc"]


def test_local_formats_read_the_same_documents(tmp_path):
    (tmp_path / "docs").mkdir()
    for i, d in enumerate(DOCS[:3]):
        (tmp_path / "docs" / f"{i}.txt").write_text(d)
    (tmp_path / "one.txt").write_text("\n\n\n".join(DOCS[:3]))
    with open(tmp_path / "d.jsonl", "w") as f:
        for d in DOCS[:3]:
            f.write(json.dumps({"text": d, "id": 1}) + "\n")
    pq.write_table(pa.table({"text": DOCS[:3]}), tmp_path / "d.parquet")
    for name in ("docs", "one.txt", "d.jsonl", "d.parquet"):
        assert [d.strip() for d in open_local(str(tmp_path / name)).documents()] == [d.strip() for d in DOCS[:3]], name


def test_bad_local_data_gets_clear_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "notext.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    pq.write_table(pa.table({"content": ["x"]}), tmp_path / "notext.parquet")
    (tmp_path / "nofiles").mkdir()
    cases = {
        "empty.txt": "empty", "latin1.txt": "not valid UTF-8", "notext.jsonl": "no 'text' column \\(columns: body\\)",
        "notext.parquet": "no 'text' column", "nofiles": "no .txt files", "missing.txt": "no such file",
    }
    for name, pattern in cases.items():
        with pytest.raises(DataError, match=pattern) as info:
            list(open_local(str(tmp_path / name)).documents())
        assert name in str(info.value)


def test_shards_pack_documents_with_eot_and_split_deterministically(tmp_path, bpe):
    meta = build_shards(iter(DOCS), bpe, tmp_path / "s", val_fraction=0.1, source="x")
    assert meta["documents"]["train"] + meta["documents"]["val"] == len(DOCS)
    assert 5 <= meta["documents"]["val"] <= 40 and meta["dtype"] == "uint16"
    assert meta["tokenizer"] == bpe.fingerprint and meta["vocab_size"] == 300
    # The train stream is exactly the train documents' ids, each followed by EOT.
    from gradpower.data.shards import is_validation

    expected = []
    for i, ids in enumerate(bpe.encode_batch(DOCS)):
        if not is_validation(i, 0.1):
            expected += ids + [bpe.eot_id]
    stream = np.fromfile(tmp_path / "s" / "train.bin", dtype=np.uint16)
    assert stream.tolist() == expected
    packed = PackedTokens.open(tmp_path / "s", "train", 16)
    assert len(packed) == len(expected) // 16
    assert packed.get([2]).tolist() == [expected[32:48]]
    again = build_shards(iter(DOCS), bpe, tmp_path / "s2", val_fraction=0.1, source="x")
    assert again["tokens"] == meta["tokens"]


def test_shards_made_with_another_tokenizer_are_rebuilt_with_a_warning(tmp_path, bpe, capsys):
    build_shards(iter(DOCS), bpe, tmp_path / "s", val_fraction=0.1, source="x")
    other = train_bpe(DOCS, 280, tmp_path / "other.json")
    meta = build_shards(iter(DOCS), other, tmp_path / "s", val_fraction=0.1, source="x")
    assert "made with another tokenizer" in capsys.readouterr().err
    assert meta["tokenizer"] == other.fingerprint
    stream = np.fromfile(tmp_path / "s" / "train.bin", dtype=np.uint16)
    assert stream.max() < 280


def test_shard_batches_resume_and_rank_sharding(tmp_path, bpe):
    build_shards(iter(DOCS), bpe, tmp_path / "s", val_fraction=0.1, source="x")
    data = PackedTokens.open(tmp_path / "s", "train", 8)
    straight = ShardBatches(data, 4, seed=3)
    seq = [straight.next() for _ in range(2 * len(data) // 4 + 3)]  # crosses epoch boundaries
    resumed = ShardBatches(data, 4, seed=3)
    for _ in range(5):
        resumed.next()
    state = resumed.state_dict()
    fresh = ShardBatches(data, 4, seed=3)
    fresh.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(seq[5:], [fresh.next() for _ in range(len(seq) - 5)]))
    r0, r1 = ShardBatches(data, 2, seed=3, rank=0, world_size=2), ShardBatches(data, 2, seed=3, rank=1, world_size=2)
    assert torch.equal(torch.cat([r0.next(), r1.next()]), seq[0])


def test_pretrained_tokenizer_folder_and_streaming_path(tmp_path, bpe):
    transformers = pytest.importorskip("transformers")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe.backend, eos_token="<|endoftext|>")
    fast.save_pretrained(tmp_path / "tok")
    tok = load_pretrained(str(tmp_path / "tok"))
    assert tok.eot_id == bpe.eot_id and tok.encode_batch(DOCS[:5]) == bpe.encode_batch(DOCS[:5])
    path = tmp_path / "c4-like.jsonl"
    with open(path, "w") as f:
        for d in DOCS:
            f.write(json.dumps({"text": d, "timestamp": "2019", "url": "u"}) + "\n")

    def make():
        return StreamBatches(lambda skip: local_stream(str(path), "json").skip(skip), tok, 16, 2)

    straight = make()
    expected = [straight.next() for _ in range(30)]
    flat = torch.cat([b.reshape(-1) for b in expected]).tolist()
    joined = [t for ids in tok.encode_batch(DOCS) for t in ids + [tok.eot_id]]
    assert flat == joined[: len(flat)]
    first = make()
    for _ in range(12):
        first.next()
    state = first.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    assert all(torch.equal(a, resumed.next()) for a in expected[12:])


def test_build_data_through_the_stream_prefix(tmp_path, bpe):
    transformers = pytest.importorskip("transformers")
    transformers.PreTrainedTokenizerFast(tokenizer_object=bpe.backend, eos_token="<|endoftext|>").save_pretrained(
        tmp_path / "tok")
    path = tmp_path / "owt.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    cfg = DataConfig(data=f"stream:{path}", tokenizer=str(tmp_path / "tok"), val_fraction=0.2, eval_batches=2)
    data = build_data(cfg, seq_len=16, micro_batch_size=2, seed=0, vocab_size=300)
    assert len(data.val) == 2 and data.train.next().shape == (2, 16)
    with pytest.raises(DataError, match="pretrained tokenizer"):
        build_data(DataConfig(data=f"stream:{path}"), seq_len=16, micro_batch_size=2, seed=0, vocab_size=300)
