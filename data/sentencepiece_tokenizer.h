// SentencePiece unigram (T5): the Viterbi segmentation of HF's Unigram model, the Precompiled normalizer
// (SentencePiece's compiled character map) and the Metaspace pieces, implemented here for tokenizer.json;
// and SentencePiece .model files read through libsentencepiece.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/tokenizer.h"

namespace vlp {

struct UnigramModel {
  std::vector<std::string> pieces;
  std::vector<double> scores;
  std::unordered_map<std::string, int32_t> piece_to_id;
  int32_t unk_id = -1;
  double min_score = 0.0;      // unknown characters score min_score - 10, as in SentencePiece
  bool byte_fallback = false;  // unknown pieces become <0xXX> byte tokens when the vocabulary has them
  bool fuse_unk = true;        // consecutive unknown characters become one unk (HF default for Unigram)
  // Byte trie over all pieces: edges (node << 8 | byte) -> child node; node -> piece id or -1.
  std::unordered_map<uint64_t, int32_t> trie_edges;
  std::vector<int32_t> trie_piece;
  std::string source;
};

// Builds the model (and its trie) from pieces with scores. Throws naming `source` for a bad unk_id.
std::shared_ptr<UnigramModel> make_unigram_model(std::vector<std::pair<std::string, double>> pieces, int32_t unk_id,
                                                 bool byte_fallback, const std::string& source);
// The best segmentation of one pre-token (highest total score; ties keep the earlier, shorter piece),
// with unknown characters fused and byte fallback applied.
void unigram_encode(const UnigramModel& model, std::string_view piece, std::vector<int32_t>& out);

// SentencePiece's precompiled_charsmap: a double-array trie from UTF-8 sequences to replacement strings.
struct PrecompiledCharsmap {
  std::vector<uint32_t> trie;
  std::string replacements;  // NUL-terminated strings the trie's values point into
};
// Parses the binary blob (little-endian u32 trie size in bytes, the trie, the strings).
std::shared_ptr<PrecompiledCharsmap> parse_precompiled_charsmap(const std::string& blob, const std::string& source);
// HF's Precompiled normalizer: for each extended grapheme cluster shorter than 6 bytes, the replacement
// of the cluster's shortest prefix in the map when there is one; otherwise each character on its own,
// replaced when the map has an entry for a prefix of it.
std::string precompiled_normalize(const PrecompiledCharsmap& map, std::string_view s);

// libsentencepiece (a .model file): ids, pieces and decoding come from the library. load_tokenizer makes
// the model's control pieces and <unk> special tokens and appends </s> (HF T5Tokenizer's convention). T5's
// spiece.model has no sentinels: add_tokens(tok, {"<extra_id_99>", ..., "<extra_id_0>"}, true), in that
// order, gives them HF's ids 32000 ... 32099.
std::shared_ptr<const SentencePieceModel> load_sentencepiece_model(const std::string& path);
int64_t sentencepiece_size(const SentencePieceModel& model);
int32_t sentencepiece_piece_to_id(const SentencePieceModel& model, std::string_view piece);  // -1 when absent
std::string sentencepiece_id_to_piece(const SentencePieceModel& model, int32_t id);
void sentencepiece_encode(const SentencePieceModel& model, std::string_view text, std::vector<int32_t>& out);
std::string sentencepiece_decode(const SentencePieceModel& model, const std::vector<int32_t>& ids);
// Special ids the model defines (-1 when it has none).
int32_t sentencepiece_special_id(const SentencePieceModel& model, const std::string& which);  // "unk", "pad", "eos", "bos"

}  // namespace vlp
