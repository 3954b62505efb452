// Text tokenizers with Hugging Face `tokenizers` semantics: one plain struct for both model kinds
// (byte-level BPE for GPT-2 / RoBERTa / BART, SentencePiece unigram for T5), free functions to encode,
// decode and batch.
//
// The pipeline for one text, as in HF:
//   1. added tokens that are not `normalized` are cut out of the raw text (leftmost-longest match);
//   2. each remaining piece is normalized (e.g. T5's Precompiled charsmap, Strip, Replace), then the
//      `normalized` added tokens are cut out of it;
//   3. each remaining piece is pre-tokenized (ByteLevel with the GPT-2 regex, or Metaspace) and every
//      pre-token goes through the model (BPE merges, or unigram Viterbi);
//   4. with add_special_tokens, the post-processor's ids are put around the sequence (T5: `</s>` after,
//      BART/RoBERTa: `<s>` before and `</s>` after, GPT-2: nothing).
// Decoding maps ids to tokens (added tokens to their content), drops special ones when asked, and runs
// the decoder chain (ByteLevel, Metaspace, ...).
//
// Loaders: load_tokenizer (HF tokenizer.json with a BPE or Unigram model, or a SentencePiece .model
// through libsentencepiece) here; the GPT-2 / BART file pairs in data/bpe_tokenizer.h.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data/unicode_text.h"
#include "runtime/tensor.h"

namespace vlp {

struct BpeModel;            // data/bpe_tokenizer.h
struct UnigramModel;        // data/sentencepiece_tokenizer.h
struct SentencePieceModel;  // data/sentencepiece_tokenizer.cpp (libsentencepiece)
struct PrecompiledCharsmap; // data/sentencepiece_tokenizer.h

// A token matched in the text before the model sees it (HF AddedToken).
struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;     // dropped by decode(skip_special_tokens = true)
  bool normalized = false;  // matched in the normalized text (else in the raw text)
  bool lstrip = false;      // swallow white space on its left
  bool rstrip = false;      // swallow white space on its right
  bool single_word = false; // only match when not inside a word
  std::string match;        // the text matched: content, or content normalized for normalized tokens
};

struct NormalizerStep {
  enum class Kind { Precompiled, Strip, Replace };
  Kind kind = Kind::Strip;
  std::shared_ptr<const PrecompiledCharsmap> charsmap;  // Precompiled
  bool strip_left = false, strip_right = false;         // Strip (Unicode White_Space)
  std::string pattern, content;                         // Replace: literal pattern, or a regex:
  bool pattern_is_regex = false;
  text::Regex regex;
};

struct PreTokenizer {
  enum class Kind { None, ByteLevel, Metaspace };
  enum class Prepend { Always, First, Never };
  Kind kind = Kind::None;
  bool add_prefix_space = false;  // ByteLevel: prepend a space when the piece does not start with one
  bool use_regex = true;          // ByteLevel: split with the GPT-2 pattern first
  std::string replacement = "\xE2\x96\x81";  // Metaspace: U+2581
  Prepend prepend = Prepend::Always;         // Metaspace prepend_scheme
  bool split = true;                         // Metaspace: split before each replacement char
};

struct DecoderStep {
  enum class Kind { ByteLevel, Metaspace, ByteFallback, Fuse, Replace, Strip };
  Kind kind = Kind::ByteLevel;
  std::string replacement = "\xE2\x96\x81";  // Metaspace
  bool prepend_never = false;                // Metaspace: prepend_scheme "never" keeps a leading space
  std::string pattern, content;              // Replace (literal)
  std::string strip_content = " ";           // Strip: remove up to `start` copies at the front, `stop` at the end
  int strip_start = 0, strip_stop = 0;
};

enum class TokenizerModel { Bpe, Unigram, SentencePiece };

struct Tokenizer {
  TokenizerModel model = TokenizerModel::Bpe;
  std::shared_ptr<const BpeModel> bpe;
  std::shared_ptr<const UnigramModel> unigram;
  std::shared_ptr<const SentencePieceModel> sentencepiece;  // does its own normalization and decoding
  std::vector<NormalizerStep> normalizer;
  PreTokenizer pre_tokenizer;
  std::vector<DecoderStep> decoder;
  std::vector<AddedToken> added_tokens;
  std::vector<int32_t> prefix_ids, suffix_ids;  // put around one sequence when add_special_tokens
  int32_t pad_id = -1;                          // id of "<pad>" when the vocabulary has one
  std::string source;                           // the file(s) it was loaded from, for messages
};

// ---- loading -----------------------------------------------------------------------------------------
// A Hugging Face tokenizer.json (model type BPE or Unigram), or a SentencePiece model (*.model) read by
// libsentencepiece. Throws naming the file when it is missing, unreadable or uses an unsupported part.
Tokenizer load_tokenizer(const std::string& path);

// Adds tokens with HF's rules: a token already in the model's vocabulary keeps its id, a new one gets
// the next id after the model vocabulary and the added tokens so far. Special tokens are matched in the
// raw text and skipped by decode(skip_special_tokens); others are matched after normalization. Tokens
// already added are left alone. Returns how many were new.
int add_tokens(Tokenizer& tok, const std::vector<std::string>& tokens, bool special);
// The same with every option of AddedToken (content, special, normalized, lstrip, rstrip, single_word);
// ids and `match` are filled in here.
int add_tokens(Tokenizer& tok, std::vector<AddedToken> tokens);

int64_t vocab_size(const Tokenizer& tok);  // model vocabulary plus added tokens
// The tokenizer's normalizer applied to text (the identity when it has none).
std::string normalize_text(const Tokenizer& tok, std::string_view text);
int32_t token_to_id(const Tokenizer& tok, std::string_view token);  // -1 when absent
std::string id_to_token(const Tokenizer& tok, int32_t id);          // throws for an unknown id

// ---- encoding and decoding -----------------------------------------------------------------------------
std::vector<int32_t> encode(const Tokenizer& tok, std::string_view text, bool add_special_tokens = true);
// The token strings of encode(...), for inspection.
std::vector<std::string> tokenize(const Tokenizer& tok, std::string_view text, bool add_special_tokens = false);
// Throws naming the id when one is outside the vocabulary.
std::string decode(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special_tokens = false);

struct BatchOptions {
  enum class Side { Right, Left };
  bool add_special_tokens = true;
  int64_t max_length = -1;         // truncate to at most this many ids, special tokens included; -1: none
  Side truncation_side = Side::Right;
  bool pad_to_max_length = false;  // pad to max_length rather than to the longest sequence
  Side padding_side = Side::Right;
  int32_t pad_id = -1;             // -1: the tokenizer's pad_id (an error when it has none and padding is needed)
};

struct BatchEncoding {
  std::vector<std::vector<int32_t>> ids;  // per text, truncated, not padded
  Tensor input_ids;                       // [batch, length] I64, padded
  Tensor attention_mask;                  // [batch, length] I64: 1 for tokens, 0 for padding
};

BatchEncoding encode_batch(const Tokenizer& tok, const std::vector<std::string>& texts, const BatchOptions& options = {});
// Truncates and pads sequences that are already ids (e.g. decoder targets) the same way; special
// tokens are not added; options.pad_id must be set when padding is needed.
BatchEncoding pad_batch(const std::vector<std::vector<int32_t>>& sequences, const BatchOptions& options);

}  // namespace vlp
