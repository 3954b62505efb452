#!/usr/bin/env python3
"""Reference token ids from Hugging Face `tokenizers` (and cross-checks with `transformers` and `sentencepiece`).

Writes, under tests/fixtures/data/:
  tokenizer_reference.json  texts and the ids / decoded strings HF produces for them with
                            * GPT-2 (../shared/assets/tokenizers/gpt2/encoder.json + vocab.bpe, <|endoftext|> special),
                            * T5 (../shared/assets/tokenizers/t5/tokenizer.json),
                            * the two tiny tokenizers below;
                            no vocabulary is stored for GPT-2 and T5 (tests skip those parts without the assets).
  tiny_bpe_tokenizer.json   a byte-level BPE with a handful of merges and RoBERTa-style <s> ... </s> (made here);
  tiny_unigram.model        a SentencePiece unigram model with byte fallback trained here on a small corpus,
  tiny_unigram_tokenizer.json  the same pieces as an HF Unigram tokenizer.json (Metaspace, byte fallback,
                            Replace/ByteFallback/Fuse/Strip decoder).

Run with the pinned packages:  tools/reference/.venv/bin/python tools/reference/make_tokenizer_fixtures.py
(VLP_ASSETS overrides ../shared/assets.)
"""
import io
import json
import os
import random
import sys

import sentencepiece as spm
import tokenizers
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASSETS = os.environ.get("VLP_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))
OUT = os.path.join(ROOT, "tests", "fixtures", "data")

# The corpus: plain text, unicode, accents (precomposed and combining), CJK, emoji (ZWJ, skin tone, flags),
# runs of spaces, tabs, newlines, CRLF, digits, long words, contractions, leading/trailing spaces, unusual
# white space (NBSP, ideographic space, NEL, U+180E), zero-width characters, NFKC cases (full-width,
# ligatures, circled digits), and special-token look-alikes.
CORPUS = [
    "Hello world",
    "Hello, world! How are you today?",
    "A man riding a horse on a beach.",
    "what is the man holding in his hand?",
    "  leading and trailing spaces  ",
    " single leading space",
    "trailing space ",
    "multiple    spaces   between\twords",
    "tabs\tand\nnewlines\r\nand CRLF\n\n",
    "\n\nnewline first",
    "Numbers: 0 7 42 1234567890 3.14159 -17 1,000,000 2nd 3rd",
    "Contractions: don't it's I'll we've they're she'd I'm DON'T IT'S O'Neil rock'n'roll",
    "Ünïcödé àccénts: café naïve résumé Zoë façade",
    "Combining: cafe\u0301 nai\u0308ve A\u030a",
    "CJK: 日本語のテキストです。中文文本。한국어 텍스트",
    "Emoji: 🙂😀🎉 👍🏽 👨‍👩‍👧 🇫🇷 ❤️",
    "Mixed 日本 and English and 🙂 together",
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "Full-width: ＡＢＣ ａｂｃ １２３ ！？",
    "Ligatures and compat: ﬁne ﬂow ① ② ™ ½ ℃ Ⅳ",
    "Odd spaces: a\u00a0b\u3000c\u2009d\u0085e\u180ef\u200bg\u200dh",
    "Arabic: مرحبا بالعالم Hindi: नमस्ते दुनिया Greek: Καλημέρα κόσμε",
    "Math: ∑ x² ≤ √y ∞ ≠ π·r²",
    "Quotes “curly” ‘single’ — dash – en … ellipsis",
    "Hello<|endoftext|>world <|endoftext|> again",
    "T5 sentinels: <extra_id_0> fills <extra_id_1> the gaps</s>",
    "<pad><pad> and </s> and <unk> inside",
    "<extra_id_0>start and end<extra_id_99>",
    "fake <extra_id_ and </s and <|endoftext| tokens",
    "vqa: what color is the cat?",
    "caption: A dog plays with a red ball in the park.",
    "x",
    " ",
    "",
    "!!!???...,,,;;;:::",
    "email@example.com https://example.com/path?q=1&r=2#frag",
    "CamelCaseWord snake_case_word kebab-case-word",
    "ALL CAPS SENTENCE WITH NUMBERS 2024",
    "   ",
    "a  b   c    d",
]

# Random strings drawn from these pools (seeded): a wider net than the hand-written corpus, with
# characters in unusual neighbourhoods (combining marks after full-width letters, emoji modifiers next to
# digits, specials glued to words, control characters).
RANDOM_POOLS = [
    "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " ", "  ", "\t", "\n", "\r\n",
    "'s", "'t", "'re", "'ll", "'", ".,;:!?-_()[]{}\"/\\@#$%^&*+=<>|~`", "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßœ",
    "\u0300\u0301\u0302\u0308\u0327\u20dd\ufe0f\u200d", "日本語中文字한국어ひらがなカタカナ",
    "🙂😀🎉👍🏽👨‍👩‍👧🇫🇷❤️🤖", "ＡＢＣａｂｃ１２３！？　", "ﬁﬂ①②™½℃Ⅳ㎏ｶﾞ",
    "\u00a0\u3000\u2009\u0085\u180e\u200b\u2028\u2029\u00ad\u202f\u205f", "مرحبا नमस्ते Καλημέρα привет שלום",
    "∑²≤√∞≠π·", "“”‘’—–…", "<|endoftext|>", "</s>", "<pad>", "<unk>", "<extra_id_0>", "<extra_id_17>",
    "\x01\x07\x1b\x7f", "ℌ𝔢𝔩𝔩𝔬 𝐁𝐨𝐥𝐝", "ǅǈ", "ΐ", "Ω", "K", "Å",
]


def random_texts(n, seed):
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        s = ""
        for _ in range(rng.randint(1, 8)):
            p = rng.choice(RANDOM_POOLS)
            s += "".join(rng.choice(p) if len(p) > 3 and rng.random() < 0.7 else p for _ in range(rng.randint(1, 4)))
        texts.append(s)
    return texts


RANDOM_TEXTS = random_texts(60, seed=2024)

# id sequences whose decoding exercises partial UTF-8 (one byte of a multi-byte character) and specials.
GPT2_DECODE_IDS = [[10545], [10545, 245, 98], [15496, 50256, 995], [50256], [220, 220, 15496], [198, 197, 15496]]
T5_DECODE_IDS = [[3, 3, 3, 8, 1], [32099, 8, 1, 0, 0], [2, 8], [3], [8774, 32099, 296, 1], [1, 1, 0]]


def die(msg):
    sys.exit(msg)


def added_variants(tok, specs, parts, n, seed):
    """Adds tokens with the given options, then records the ids of random concatenations of `parts`."""
    tok.add_tokens([tokenizers.AddedToken(s["content"], single_word=s.get("single_word", False),
                                          lstrip=s.get("lstrip", False), rstrip=s.get("rstrip", False),
                                          normalized=s.get("normalized", not s.get("special", False)),
                                          special=s.get("special", False)) for s in specs])
    rng = random.Random(seed)
    texts = ["".join(rng.choice(parts) for _ in range(rng.randint(1, 6))) for _ in range(n)]
    return {"specs": specs, "token_ids": {s["content"]: tok.token_to_id(s["content"]) for s in specs},
            "texts": texts, "ids": [tok.encode(t).ids for t in texts],
            "decode": [tok.decode(tok.encode(t).ids, skip_special_tokens=False) for t in texts],
            "decode_skip": [tok.decode(tok.encode(t).ids, skip_special_tokens=True) for t in texts]}


def gpt2_section(d):
    enc, merges = os.path.join(d, "encoder.json"), os.path.join(d, "vocab.bpe")
    tok = Tokenizer(models.BPE.from_file(enc, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    # Cross-check against transformers' GPT-2 tokenizer built from the same files.
    vocab = json.load(open(enc, encoding="utf-8"))
    merge_lines = [l for l in open(merges, encoding="utf-8").read().split("\n")[1:] if l.strip()]
    tf = transformers.GPT2Tokenizer(vocab=vocab, merges=[tuple(l.split(" ")) for l in merge_lines])
    sec = {"ids": [], "decode": [], "decode_skip": []}
    for text in CORPUS:
        ids = tok.encode(text).ids
        tf_ids = tf(text, add_special_tokens=True)["input_ids"]
        if ids != tf_ids:
            die(f"GPT-2: tokenizers and transformers disagree on {text!r}: {ids} vs {tf_ids}")
        sec["ids"].append(ids)
        sec["decode"].append(tok.decode(ids, skip_special_tokens=False))
        sec["decode_skip"].append(tok.decode(ids, skip_special_tokens=True))
    sec["decode_ids"] = [{"ids": ids, "text": tok.decode(ids, skip_special_tokens=False),
                          "text_skip": tok.decode(ids, skip_special_tokens=True)} for ids in GPT2_DECODE_IDS]
    sec["random_ids"] = [tok.encode(t).ids for t in RANDOM_TEXTS]
    # Added special tokens (BART-style sentinels) get ids after the vocabulary.
    tok.add_special_tokens(["<extra_id_99>", "<extra_id_0>"])
    added_texts = ["a<extra_id_0>b <extra_id_99> c", "<extra_id_0><|endoftext|>"]
    sec["added"] = {"special": ["<extra_id_99>", "<extra_id_0>"],
                    "ids": {t: tok.token_to_id(t) for t in ["<extra_id_99>", "<extra_id_0>"]},
                    "texts": added_texts, "text_ids": [tok.encode(t).ids for t in added_texts]}
    # Batch: padding with <|endoftext|> on the left, truncation to 6.
    tok.enable_padding(direction="left", pad_id=50256, pad_token="<|endoftext|>")
    tok.enable_truncation(max_length=6)
    batch_texts = ["Hello world", "A man riding a horse on a beach.", "x"]
    b = tok.encode_batch(batch_texts)
    sec["batch"] = {"texts": batch_texts, "max_length": 6, "padding_side": "left", "pad_id": 50256,
                    "ids": [e.ids for e in b], "attention_mask": [e.attention_mask for e in b]}
    return sec


def t5_section(path):
    tok = Tokenizer.from_file(path)
    sec = {"ids": [], "ids_no_special": [], "decode": [], "decode_skip": [], "normalized": []}
    for text in CORPUS:
        e = tok.encode(text)
        sec["ids"].append(e.ids)
        sec["ids_no_special"].append(tok.encode(text, add_special_tokens=False).ids)
        sec["decode"].append(tok.decode(e.ids, skip_special_tokens=False))
        sec["decode_skip"].append(tok.decode(e.ids, skip_special_tokens=True))
        sec["normalized"].append(tok.normalizer.normalize_str(text))
    sec["decode_ids"] = [{"ids": ids, "text": tok.decode(ids, skip_special_tokens=False),
                          "text_skip": tok.decode(ids, skip_special_tokens=True)} for ids in T5_DECODE_IDS]
    sec["random_ids"] = [tok.encode(t).ids for t in RANDOM_TEXTS]
    sec["random_decode"] = [tok.decode(ids, skip_special_tokens=False) for ids in sec["random_ids"]]
    # Caller-added tokens: VL-T5's visual sentinels (special) and an ordinary word-like token.
    special = ["<vis_extra_id_99>", "<vis_extra_id_98>", "<vis_extra_id_0>"]
    plain = ["newtok"]
    tok.add_special_tokens(special)
    tok.add_tokens(plain)
    added_texts = ["a <vis_extra_id_0> b<vis_extra_id_98>c", "this newtok and newtoks", "<vis_extra_id_99><extra_id_0>"]
    sec["added"] = {"special": special, "plain": plain,
                    "ids": {t: tok.token_to_id(t) for t in special + plain},
                    "texts": added_texts, "text_ids": [tok.encode(t).ids for t in added_texts],
                    "decode_skip": [tok.decode(tok.encode(t).ids, skip_special_tokens=True) for t in added_texts]}
    # Normalized added tokens are matched after T5's normalizer (full-width XY is matched as XY) and
    # decoded as their normalized form; a special one with rstrip.
    variant = Tokenizer.from_file(path)
    specs = [{"content": "ＸＹ", "normalized": True}, {"content": "Hello", "normalized": True},
             {"content": " spaced ", "normalized": True}, {"content": "<V>", "rstrip": True, "special": True}]
    parts = ["ＸＹ", "XY", "Hello", "hello", " spaced ", "<V>", " ", "\t", "x", "the", "日本", "a cat"]
    sec["added_variants"] = added_variants(variant, specs, parts, 30, seed=6)
    batches = []
    batch_texts = ["Hello world", "what is the man holding in his hand?", "x", ""]
    for side, max_len in [("right", 8), ("left", 5)]:
        t = Tokenizer.from_file(path)
        t.enable_padding(direction=side, pad_id=0, pad_token="<pad>")
        t.enable_truncation(max_length=max_len)
        b = t.encode_batch(batch_texts)
        batches.append({"texts": batch_texts, "max_length": max_len, "padding_side": side, "pad_id": 0,
                        "ids": [e.ids for e in b], "attention_mask": [e.attention_mask for e in b]})
    sec["batches"] = batches
    # transformers' T5 tokenizer on the same file must agree on the ids (with </s>).
    tf = transformers.T5Tokenizer(tokenizer_file=path)
    for text, ids in list(zip(CORPUS, sec["ids"])) + list(zip(RANDOM_TEXTS, sec["random_ids"])):
        if tf(text)["input_ids"] != ids:
            die(f"T5: transformers and tokenizers disagree on {text!r}")
    return sec


def tiny_bpe():
    """A byte-level BPE: the 256 byte characters plus a handful of merges, RoBERTa-style specials."""
    byte_chars = list(pre_tokenizers.ByteLevel.alphabet())
    byte_chars.sort()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for c in byte_chars:
        vocab[c] = len(vocab)
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("l", "o"), ("lo", "w"), ("e", "r"), ("Ġ", "low"),
              ("Ġlow", "er"), ("i", "n"), ("in", "g"), ("Ġ", "a")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>"])
    tok.add_special_tokens([tokenizers.AddedToken("<mask>", lstrip=True, special=True)])
    tok.save(os.path.join(OUT, "tiny_bpe_tokenizer.json"))
    texts = ["the lower tower", "lowering the    low a", "the<mask> lower", "a <mask>the", "héllo wörld 🙂",
             "  ", "", "ingthe lowerlow\n\tthe"]
    sec = {"file": "tiny_bpe_tokenizer.json", "texts": texts, "ids": [], "ids_no_special": [], "decode": [],
           "decode_skip": []}
    for t in texts:
        e = tok.encode(t)
        sec["ids"].append(e.ids)
        sec["ids_no_special"].append(tok.encode(t, add_special_tokens=False).ids)
        sec["decode"].append(tok.decode(e.ids, skip_special_tokens=False))
        sec["decode_skip"].append(tok.decode(e.ids, skip_special_tokens=True))
    # Added tokens with every matching option (single_word, lstrip, rstrip, special or not).
    specs = [{"content": "cat", "single_word": True}, {"content": "[R]", "rstrip": True},
             {"content": "[L]", "lstrip": True}, {"content": "[B]", "lstrip": True, "rstrip": True, "special": True},
             {"content": "dog", "single_word": True, "special": True}, {"content": "he"}]
    parts = ["cat", "cats", "a cat", "concat", "cat.", "[R]", "[L]", "[B]", "dog", " ", "  ", "\t", "x", "the",
             "lower", "_dog"]
    sec["added"] = added_variants(tok, specs, parts, 40, seed=5)
    return sec


TINY_CORPUS = [
    "the cat sat on the mat", "a dog is playing with a ball", "the man is riding a horse",
    "two people are walking on the beach", "what color is the car", "how many dogs are there",
    "is the woman holding an umbrella", "a plate of food on a table", "the sky is blue and clear",
    "children are playing in the park", "a red bus on the street", "the train arrives at the station",
] * 20


def tiny_unigram():
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TINY_CORPUS), model_writer=model, vocab_size=340, hard_vocab_limit=False, model_type="unigram",
        byte_fallback=True, normalization_rule_name="identity", character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=3, minloglevel=2, num_threads=1)
    blob = model.getvalue()
    with open(os.path.join(OUT, "tiny_unigram.model"), "wb") as f:
        f.write(blob)
    sp = spm.SentencePieceProcessor(model_proto=blob)
    pieces = [[sp.id_to_piece(i), float(sp.get_score(i))] for i in range(sp.get_piece_size())]
    tj = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": sp.id_to_piece(i), "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True} for i in range(4)],
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}},
                                      {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]},
                                              "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "Unigram", "unk_id": 0, "vocab": pieces, "byte_fallback": True},
    }
    path = os.path.join(OUT, "tiny_unigram_tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False)
    tok = Tokenizer.from_file(path)
    texts = ["the cat sat on the mat", "a dog on the beach", "zebra xylophone quiz", "日本 🙂 café",
             "  spaced   out  ", "the<s>cat</s>", "", "what color is the bus?"]
    sec = {"file": "tiny_unigram_tokenizer.json", "model_file": "tiny_unigram.model", "texts": texts,
           "ids": [], "ids_no_special": [], "decode": [], "decode_skip": [], "spm_ids": [], "spm_decode": []}
    for t in texts:
        e = tok.encode(t)
        sec["ids"].append(e.ids)
        sec["ids_no_special"].append(tok.encode(t, add_special_tokens=False).ids)
        sec["decode"].append(tok.decode(e.ids, skip_special_tokens=False))
        sec["decode_skip"].append(tok.decode(e.ids, skip_special_tokens=True))
    # libsentencepiece's own answer for the .model (texts without control-token look-alikes).
    sec["spm_texts"] = [t for t in texts if "<" not in t]
    for t in sec["spm_texts"]:
        ids = sp.encode(t)
        sec["spm_ids"].append(ids)
        sec["spm_decode"].append(sp.decode(ids))
    return sec


def main():
    os.makedirs(OUT, exist_ok=True)
    out = {"generator": "tools/reference/make_tokenizer_fixtures.py",
           "versions": {"tokenizers": tokenizers.__version__, "transformers": transformers.__version__,
                        "sentencepiece": spm.__version__},
           "corpus": CORPUS, "random_texts": RANDOM_TEXTS}
    gpt2_dir = os.path.join(ASSETS, "tokenizers", "gpt2")
    t5_path = os.path.join(ASSETS, "tokenizers", "t5", "tokenizer.json")
    if not (os.path.isdir(gpt2_dir) and os.path.exists(t5_path)):
        die(f"assets not found under {ASSETS} (set VLP_ASSETS)")
    out["gpt2"] = gpt2_section(gpt2_dir)
    out["t5"] = t5_section(t5_path)
    out["tiny_bpe"] = tiny_bpe()
    out["tiny_unigram"] = tiny_unigram()
    with open(os.path.join(OUT, "tokenizer_reference.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print("wrote", os.path.join(OUT, "tokenizer_reference.json"))


if __name__ == "__main__":
    main()
