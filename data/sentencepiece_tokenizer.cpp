// SentencePiece unigram: HF's Viterbi (the "optimized" single pass of SentencePiece's EncodeOptimized),
// the Precompiled normalizer (darts-clone double-array trie + replacement strings), and the
// libsentencepiece wrapper for .model files (see sentencepiece_tokenizer.h).
#include "data/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include <cstdio>
#include <cstring>
#include <limits>

namespace vlp {

// ---- unigram model ------------------------------------------------------------------------------------

std::shared_ptr<UnigramModel> make_unigram_model(std::vector<std::pair<std::string, double>> pieces, int32_t unk_id,
                                                 bool byte_fallback, const std::string& source) {
  VLP_CHECK(!pieces.empty(), "Unigram ", source, ": empty vocabulary");
  VLP_CHECK(unk_id >= -1 && unk_id < int64_t(pieces.size()), "Unigram ", source, ": unk_id ", unk_id,
            " outside the vocabulary of ", pieces.size());
  auto m = std::make_shared<UnigramModel>();
  m->source = source;
  m->unk_id = unk_id;
  m->byte_fallback = byte_fallback;
  m->min_score = std::numeric_limits<double>::infinity();
  m->pieces.reserve(pieces.size());
  m->scores.reserve(pieces.size());
  for (size_t id = 0; id < pieces.size(); ++id) {
    m->piece_to_id[pieces[id].first] = int32_t(id);  // a repeated piece maps to its last id, as in HF
    m->min_score = std::min(m->min_score, pieces[id].second);
    m->pieces.push_back(std::move(pieces[id].first));
    m->scores.push_back(pieces[id].second);
  }
  m->trie_piece.push_back(-1);  // root
  for (const auto& [piece, id] : m->piece_to_id) {
    if (piece.empty()) continue;
    int32_t node = 0;
    for (unsigned char b : piece) {
      const uint64_t key = (uint64_t(node) << 8) | b;
      const auto it = m->trie_edges.find(key);
      if (it != m->trie_edges.end()) {
        node = it->second;
      } else {
        const int32_t child = int32_t(m->trie_piece.size());
        m->trie_piece.push_back(-1);
        m->trie_edges.emplace(key, child);
        node = child;
      }
    }
    m->trie_piece[node] = id;
  }
  return m;
}

void unigram_encode(const UnigramModel& m, std::string_view s, std::vector<int32_t>& out) {
  if (s.empty()) return;
  const double unk_score = m.min_score - 10.0;  // SentencePiece's kUnkPenalty
  struct Best {
    int32_t id = -1;
    double score = 0.0;
    int64_t start = -1;  // -1: no path ends here yet
  };
  const size_t n = s.size();
  std::vector<Best> best(n + 1);
  // Forward pass over character starts. A candidate replaces the best path ending at its end only when
  // strictly better, so ties keep the candidate seen first (earlier start, then shorter piece).
  for (size_t start = 0; start < n;) {
    const double here = best[start].score;
    const size_t char_len = std::min(text::utf8_length(uint8_t(s[start])), n - start);
    bool has_single_char_piece = false;
    int32_t node = 0;
    for (size_t end = start; end < n; ++end) {
      const auto it = m.trie_edges.find((uint64_t(node) << 8) | uint8_t(s[end]));
      if (it == m.trie_edges.end()) break;
      node = it->second;
      const int32_t id = m.trie_piece[node];
      if (id < 0) continue;
      const size_t stop = end + 1;
      const double cand = here + m.scores[id];
      if (best[stop].start < 0 || cand > best[stop].score) best[stop] = Best{id, cand, int64_t(start)};
      if (stop - start == char_len) has_single_char_piece = true;
    }
    if (!has_single_char_piece) {
      VLP_CHECK(m.unk_id >= 0, "Unigram ", m.source, ": no piece covers '", std::string(s.substr(start, char_len)),
                "' and the model has no unk token");
      const size_t stop = start + char_len;
      const double cand = here + unk_score;
      if (best[stop].start < 0 || cand > best[stop].score) best[stop] = Best{m.unk_id, cand, int64_t(start)};
    }
    start += char_len;
  }
  // Backtrack, fusing runs of unknown pieces into one string.
  std::vector<std::pair<std::string_view, int32_t>> pieces;  // (text, id or -1 for a fused unknown run)
  for (size_t end = n; end > 0;) {
    const Best& b = best[end];
    const size_t start = size_t(b.start);
    const std::string_view piece = s.substr(start, end - start);
    if (m.fuse_unk && b.id == m.unk_id) {
      if (!pieces.empty() && pieces.back().second == -1) {
        pieces.back().first = s.substr(start, pieces.back().first.size() + piece.size());
      } else {
        pieces.emplace_back(piece, -1);
      }
    } else {
      pieces.emplace_back(piece, b.id);
    }
    end = start;
  }
  for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) {
    if (it->second >= 0) {
      out.push_back(it->second);
      continue;
    }
    // As HF: the fused string's own id if it is a piece, else its bytes' <0xXX> tokens, else unk.
    const auto known = m.piece_to_id.find(std::string(it->first));
    if (known != m.piece_to_id.end()) {
      out.push_back(known->second);
      continue;
    }
    if (m.byte_fallback) {
      std::vector<int32_t> bytes;
      for (unsigned char c : it->first) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", c);
        const auto bt = m.piece_to_id.find(name);
        if (bt == m.piece_to_id.end()) break;
        bytes.push_back(bt->second);
      }
      if (bytes.size() == it->first.size()) {
        out.insert(out.end(), bytes.begin(), bytes.end());
        continue;
      }
    }
    out.push_back(m.unk_id);
  }
}

// ---- Precompiled charsmap ----------------------------------------------------------------------------

std::shared_ptr<PrecompiledCharsmap> parse_precompiled_charsmap(const std::string& blob, const std::string& source) {
  VLP_CHECK(blob.size() >= 4, "Precompiled normalizer in ", source, ": charsmap of ", blob.size(), " bytes is too short");
  uint32_t trie_bytes = 0;
  for (int k = 3; k >= 0; --k) trie_bytes = (trie_bytes << 8) | uint8_t(blob[k]);
  VLP_CHECK(trie_bytes % 4 == 0 && trie_bytes > 0 && 4 + size_t(trie_bytes) <= blob.size(), "Precompiled normalizer in ",
            source, ": trie size ", trie_bytes, " does not fit the ", blob.size(), "-byte charsmap");
  auto map = std::make_shared<PrecompiledCharsmap>();
  map->trie.resize(trie_bytes / 4);
  for (size_t i = 0; i < map->trie.size(); ++i) {
    uint32_t u = 0;
    for (int k = 3; k >= 0; --k) u = (u << 8) | uint8_t(blob[4 + i * 4 + k]);  // little endian
    map->trie[i] = u;
  }
  map->replacements = blob.substr(4 + trie_bytes);
  return map;
}

namespace {

// darts-clone unit fields.
inline bool unit_has_leaf(uint32_t u) { return (u >> 8) & 1; }
inline uint32_t unit_value(uint32_t u) { return u & ((1u << 31) - 1); }
inline uint32_t unit_label(uint32_t u) { return u & ((1u << 31) | 0xFF); }
inline uint32_t unit_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }

// The replacement for the shortest prefix of `key` that the map holds, or nullptr.
const char* shortest_replacement(const PrecompiledCharsmap& map, std::string_view key, size_t* rep_len) {
  const auto& a = map.trie;
  size_t pos = unit_offset(a[0]);
  for (unsigned char c : key) {
    if (c == 0) return nullptr;
    pos ^= c;
    if (pos >= a.size()) return nullptr;
    const uint32_t unit = a[pos];
    if (unit_label(unit) != c) return nullptr;
    pos ^= unit_offset(unit);
    if (pos >= a.size()) return nullptr;
    if (unit_has_leaf(unit)) {
      const size_t at = unit_value(a[pos]);
      if (at >= map.replacements.size()) return nullptr;
      const char* r = map.replacements.data() + at;
      *rep_len = strnlen(r, map.replacements.size() - at);
      return r;
    }
  }
  return nullptr;
}

}  // namespace

std::string precompiled_normalize(const PrecompiledCharsmap& map, std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t rep_len = 0;
  for (const auto& [gs, ge] : text::graphemes(s)) {
    const std::string_view g = s.substr(gs, ge - gs);
    if (g.size() < 6) {
      if (const char* r = shortest_replacement(map, g, &rep_len)) {
        out.append(r, rep_len);
        continue;
      }
    }
    for (size_t i = 0; i < g.size();) {
      const size_t len = std::min(text::utf8_length(uint8_t(g[i])), g.size() - i);
      const std::string_view ch = g.substr(i, len);
      if (const char* r = shortest_replacement(map, ch, &rep_len)) {
        out.append(r, rep_len);
      } else {
        out.append(ch);
      }
      i += len;
    }
  }
  return out;
}

// ---- libsentencepiece -----------------------------------------------------------------------------------

struct SentencePieceModel {
  sentencepiece::SentencePieceProcessor processor;
  std::string source;
};

std::shared_ptr<const SentencePieceModel> load_sentencepiece_model(const std::string& path) {
  auto m = std::make_shared<SentencePieceModel>();
  m->source = path;
  const auto status = m->processor.Load(path);
  VLP_CHECK(status.ok(), "SentencePiece model ", path, ": cannot load (", status.ToString(), ")");
  return m;
}

int64_t sentencepiece_size(const SentencePieceModel& m) { return m.processor.GetPieceSize(); }

int32_t sentencepiece_piece_to_id(const SentencePieceModel& m, std::string_view piece) {
  const int id = m.processor.PieceToId(piece);
  if (id < 0) return -1;
  // PieceToId answers unk_id for unknown pieces; only "<unk>" itself really is that id.
  return m.processor.IdToPiece(id) == piece ? id : -1;
}

std::string sentencepiece_id_to_piece(const SentencePieceModel& m, int32_t id) {
  VLP_CHECK(id >= 0 && id < m.processor.GetPieceSize(), "SentencePiece model ", m.source, ": unknown token id ", id,
            " (vocabulary size ", m.processor.GetPieceSize(), ")");
  return m.processor.IdToPiece(id);
}

void sentencepiece_encode(const SentencePieceModel& m, std::string_view text, std::vector<int32_t>& out) {
  std::vector<int> ids;
  const auto status = m.processor.Encode(text, &ids);
  VLP_CHECK(status.ok(), "SentencePiece model ", m.source, ": encode failed (", status.ToString(), ")");
  out.insert(out.end(), ids.begin(), ids.end());
}

std::string sentencepiece_decode(const SentencePieceModel& m, const std::vector<int32_t>& ids) {
  std::string text;
  const auto status = m.processor.Decode(std::vector<int>(ids.begin(), ids.end()), &text);
  VLP_CHECK(status.ok(), "SentencePiece model ", m.source, ": decode failed (", status.ToString(), ")");
  return text;
}

int32_t sentencepiece_special_id(const SentencePieceModel& m, const std::string& which) {
  if (which == "unk") return m.processor.unk_id();
  if (which == "pad") return m.processor.pad_id();
  if (which == "eos") return m.processor.eos_id();
  if (which == "bos") return m.processor.bos_id();
  VLP_FAIL("sentencepiece_special_id: unknown kind '", which, "' (expected unk, pad, eos or bos)");
}

}  // namespace vlp
