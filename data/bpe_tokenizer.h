// Byte-level BPE (GPT-2, RoBERTa, BART): the byte <-> printable-character mapping, the GPT-2
// pre-tokenizer, merges applied by rank, and loaders for the two file layouts OpenAI and fairseq/HF use
// (encoder.json + vocab.bpe, vocab.json + merges.txt). tokenizer.json files go through load_tokenizer
// (data/tokenizer.h).
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/tokenizer.h"

namespace vlp {

struct BpeModel {
  std::vector<std::string> id_to_token;                    // "" where an id is unused
  std::unordered_map<std::string, int32_t> token_to_id;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;  // (left id << 32 | right id) -> (rank, merged id)
  int32_t unk_id = -1;         // symbols missing from the vocabulary become this (else they are dropped)
  bool fuse_unk = false;       // consecutive unknown symbols become one unk
  bool byte_fallback = false;  // unknown symbols become their <0xXX> byte tokens when present
  bool ignore_merges = false;  // a word that is itself in the vocabulary is one token
  std::string source;

  // Words already split (the same word recurs a lot); guarded because a model is shared across threads.
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;
};

// Builds a model from a vocabulary and ordered merges (rank = position). Throws naming `source` when a
// merge uses a token missing from the vocabulary or produces one.
std::shared_ptr<BpeModel> make_bpe_model(const std::unordered_map<std::string, int32_t>& vocab,
                                         const std::vector<std::pair<std::string, std::string>>& merges,
                                         const std::string& source);

// The ids of one pre-token (already in byte-level characters for byte-level models).
void bpe_encode_word(const BpeModel& model, std::string_view word, std::vector<int32_t>& out);

// GPT-2's bytes_to_unicode: each byte as a printable character (printable Latin-1 bytes map to
// themselves, the rest to U+0100 onwards), as UTF-8.
const std::string& byte_to_unicode(uint8_t byte);
// The inverse: the byte a character stands for, or -1.
int unicode_to_byte(char32_t cp);
// Splits text with the GPT-2 pattern ('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|
// \s+(?!\S)|\s+), with \s as Oniguruma's Unicode White_Space so that the splits equal HF's.
std::vector<std::string_view> gpt2_split(std::string_view text);
// Every byte of s as its byte-level character.
std::string to_byte_level(std::string_view s);
// HF's ByteLevel pre-tokenizer: optionally a leading space, the GPT-2 split, then byte-level characters.
void byte_level_pre_tokenize(std::string_view text, bool add_prefix_space, bool use_regex, std::vector<std::string>& out);
// HF's ByteLevel decoder on a token sequence: byte-level characters back to bytes (a token holding any
// other character is taken as its UTF-8 bytes), then invalid UTF-8 replaced by U+FFFD.
std::string byte_level_decode(const std::vector<std::string>& tokens);

// A tokenizer from a vocabulary JSON ({"token": id}) and a merges file ("a b" per line, an optional
// "#version" first line), with the ByteLevel pre-tokenizer and decoder and no special tokens.
Tokenizer load_bpe_tokenizer(const std::string& vocab_json, const std::string& merges_txt);
// GPT-2 from encoder.json + vocab.bpe: as above, with <|endoftext|> a special token (nothing is added
// around sequences, as HF's GPT-2 tokenizer).
Tokenizer load_gpt2_tokenizer(const std::string& encoder_json, const std::string& vocab_bpe);
// BART / RoBERTa from vocab.json + merges.txt: <s> <pad> </s> <unk> special, <mask> special with lstrip,
// and <s> ... </s> around each sequence.
Tokenizer load_bart_tokenizer(const std::string& vocab_json, const std::string& merges_txt);

}  // namespace vlp
