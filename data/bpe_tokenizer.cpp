// Byte-level BPE: bytes_to_unicode, the GPT-2 pre-tokenizer (PCRE2), rank-ordered merges with a word
// cache, and the vocab.json/merges.txt loaders (see bpe_tokenizer.h).
#include "data/bpe_tokenizer.h"

#include <array>
#include <cstdio>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

namespace vlp {
namespace {

using nlohmann::json;

struct ByteMaps {
  std::array<std::string, 256> to_char;
  std::unordered_map<char32_t, int> to_byte;
};

// GPT-2's table: the printable bytes ! .. ~, ¡ .. ¬, ® .. ÿ stand for themselves; the other 68 bytes,
// in increasing order, get U+0100, U+0101, ... so that every byte is a visible character.
const ByteMaps& byte_maps() {
  static const ByteMaps maps = [] {
    ByteMaps m;
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const char32_t cp = printable ? char32_t(b) : char32_t(next++);
      text::append_utf8(m.to_char[b], cp);
      m.to_byte[cp] = b;
    }
    return m;
  }();
  return maps;
}

// The GPT-2 pattern with \s spelled out as Unicode White_Space: PCRE2's \s under UCP also accepts
// U+180E, which Oniguruma (used by HF tokenizers) does not.
const text::Regex& gpt2_regex() {
  static const text::Regex re = [] {
    const std::string ws = "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";
    const std::string pattern = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" + ws + "\\p{L}\\p{N}]+|[" + ws +
                                "]+(?![^" + ws + "])|[" + ws + "]+";
    return text::compile_regex(pattern, "GPT-2 pre-tokenizer");
  }();
  return re;
}

std::string read_text_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  VLP_CHECK(in.good(), what, " ", path, ": cannot open file (missing or unreadable)");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::unordered_map<std::string, int32_t> read_vocab_json(const std::string& path) {
  const std::string text = read_text_file(path, "BPE vocabulary");
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    VLP_FAIL("BPE vocabulary ", path, ": invalid JSON: ", e.what());
  }
  VLP_CHECK(j.is_object() && !j.empty(), "BPE vocabulary ", path, ": expected a non-empty JSON object {token: id}");
  std::unordered_map<std::string, int32_t> vocab;
  for (const auto& [token, id] : j.items()) {
    VLP_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() < std::numeric_limits<int32_t>::max(),
              "BPE vocabulary ", path, ": token '", token, "' has id ", id.dump(), ", expected a non-negative integer");
    vocab[token] = id.get<int32_t>();
  }
  return vocab;
}

std::vector<std::pair<std::string, std::string>> read_merges(const std::string& path) {
  const std::string text = read_text_file(path, "BPE merges");
  std::vector<std::pair<std::string, std::string>> merges;
  size_t line_no = 0, pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    const size_t space = line.find(' ');
    VLP_CHECK(space != std::string::npos && space > 0 && space + 1 < line.size() && line.find(' ', space + 1) == std::string::npos,
              "BPE merges ", path, ": line ", line_no, " is '", line, "', expected two tokens separated by one space");
    merges.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  VLP_CHECK(!merges.empty(), "BPE merges ", path, ": no merges found");
  return merges;
}

uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

// Applies merges to one word's symbols: repeatedly merge the adjacent pair with the lowest rank, the
// leftmost among equals (what HF's priority queue does).
void apply_merges(const BpeModel& m, std::vector<int32_t>& sym) {
  while (sym.size() > 1) {
    int32_t best_rank = std::numeric_limits<int32_t>::max(), best_id = -1;
    size_t best_pos = 0;
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      const auto it = m.merges.find(pair_key(sym[i], sym[i + 1]));
      if (it != m.merges.end() && it->second.first < best_rank) {
        best_rank = it->second.first;
        best_id = it->second.second;
        best_pos = i;
      }
    }
    if (best_id < 0) break;
    sym[best_pos] = best_id;
    sym.erase(sym.begin() + best_pos + 1);
  }
}

}  // namespace

std::shared_ptr<BpeModel> make_bpe_model(const std::unordered_map<std::string, int32_t>& vocab,
                                         const std::vector<std::pair<std::string, std::string>>& merges,
                                         const std::string& source) {
  auto m = std::make_shared<BpeModel>();
  m->source = source;
  m->token_to_id = vocab;
  int32_t max_id = -1;
  for (const auto& [t, id] : vocab) max_id = std::max(max_id, id);
  m->id_to_token.assign(size_t(max_id + 1), std::string());
  for (const auto& [t, id] : vocab) m->id_to_token[id] = t;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    const auto ia = vocab.find(a), ib = vocab.find(b), iab = vocab.find(a + b);
    VLP_CHECK(ia != vocab.end() && ib != vocab.end(), "BPE ", source, ": merge ", rank, " ('", a, "' '", b,
              "') uses a token missing from the vocabulary");
    VLP_CHECK(iab != vocab.end(), "BPE ", source, ": merge ", rank, " ('", a, "' '", b, "') makes '", a + b,
              "', which is missing from the vocabulary");
    m->merges.emplace(pair_key(ia->second, ib->second), std::pair{int32_t(rank), iab->second});  // first rank wins
  }
  return m;
}

void bpe_encode_word(const BpeModel& m, std::string_view word, std::vector<int32_t>& out) {
  if (word.empty()) return;
  if (m.ignore_merges) {
    const auto it = m.token_to_id.find(std::string(word));
    if (it != m.token_to_id.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const std::string key(word);
  {
    std::lock_guard<std::mutex> lock(m.cache_mutex);
    const auto it = m.cache.find(key);
    if (it != m.cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  // Initial symbols: one per character; unknown characters by byte fallback, unk or dropped (HF).
  std::vector<int32_t> sym;
  bool last_was_unk = false;
  for (size_t i = 0; i < word.size();) {
    const size_t len = std::min(text::utf8_length(uint8_t(word[i])), word.size() - i);
    const std::string ch(word.substr(i, len));
    i += len;
    const auto it = m.token_to_id.find(ch);
    if (it != m.token_to_id.end()) {
      sym.push_back(it->second);
      last_was_unk = false;
      continue;
    }
    if (m.byte_fallback) {
      std::vector<int32_t> bytes;
      for (unsigned char b : ch) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", b);
        const auto bt = m.token_to_id.find(name);
        if (bt == m.token_to_id.end()) break;
        bytes.push_back(bt->second);
      }
      if (bytes.size() == ch.size()) {
        sym.insert(sym.end(), bytes.begin(), bytes.end());
        last_was_unk = false;
        continue;
      }
    }
    if (m.unk_id >= 0) {
      if (!(m.fuse_unk && last_was_unk)) sym.push_back(m.unk_id);
      last_was_unk = true;
    }
  }
  apply_merges(m, sym);
  out.insert(out.end(), sym.begin(), sym.end());
  std::lock_guard<std::mutex> lock(m.cache_mutex);
  if (m.cache.size() > 200000) m.cache.clear();  // bounded: a long corpus of rare words must not grow it forever
  m.cache.emplace(key, std::move(sym));
}

const std::string& byte_to_unicode(uint8_t byte) { return byte_maps().to_char[byte]; }

int unicode_to_byte(char32_t cp) {
  const auto& m = byte_maps().to_byte;
  const auto it = m.find(cp);
  return it == m.end() ? -1 : it->second;
}

std::vector<std::string_view> gpt2_split(std::string_view text) {
  std::vector<std::string_view> out;
  for (const auto& [s, e] : text::find_all(gpt2_regex(), text)) out.push_back(text.substr(s, e - s));
  return out;
}

std::string to_byte_level(std::string_view s) {
  std::string out;
  out.reserve(s.size() * 2);
  for (unsigned char b : s) out += byte_to_unicode(b);
  return out;
}

void byte_level_pre_tokenize(std::string_view text, bool add_prefix_space, bool use_regex, std::vector<std::string>& out) {
  std::string with_space;
  if (add_prefix_space && !text.empty() && text.front() != ' ') {
    with_space.reserve(text.size() + 1);
    with_space.push_back(' ');
    with_space.append(text);
    text = with_space;
  }
  if (!use_regex) {
    if (!text.empty()) out.push_back(to_byte_level(text));
    return;
  }
  for (std::string_view piece : gpt2_split(text)) out.push_back(to_byte_level(piece));
}

std::string byte_level_decode(const std::vector<std::string>& tokens) {
  std::string bytes;
  for (const std::string& t : tokens) {
    std::string decoded;
    bool all_mapped = true;
    for (size_t i = 0; i < t.size();) {
      size_t len;
      const int b = unicode_to_byte(text::decode_utf8(t, i, &len));
      if (b < 0) {
        all_mapped = false;
        break;
      }
      decoded += char(b);
      i += len;
    }
    bytes += all_mapped ? decoded : t;
  }
  return text::utf8_lossy(bytes);
}

Tokenizer load_bpe_tokenizer(const std::string& vocab_json, const std::string& merges_txt) {
  const auto vocab = read_vocab_json(vocab_json);
  const auto merges = read_merges(merges_txt);
  Tokenizer tok;
  tok.model = TokenizerModel::Bpe;
  tok.source = vocab_json + " + " + merges_txt;
  tok.bpe = make_bpe_model(vocab, merges, tok.source);
  tok.pre_tokenizer.kind = PreTokenizer::Kind::ByteLevel;
  tok.pre_tokenizer.add_prefix_space = false;
  tok.pre_tokenizer.use_regex = true;
  DecoderStep byte_level;
  byte_level.kind = DecoderStep::Kind::ByteLevel;
  tok.decoder.push_back(byte_level);
  const auto pad = vocab.find("<pad>");
  tok.pad_id = pad == vocab.end() ? -1 : pad->second;
  return tok;
}

namespace {
void add_special_from_vocab(Tokenizer& tok, const std::string& content, bool lstrip = false) {
  const int32_t id = token_to_id(tok, content);
  VLP_CHECK(id >= 0, "BPE ", tok.source, ": the vocabulary has no '", content, "' token");
  AddedToken t;
  t.content = content;
  t.id = id;
  t.special = true;
  t.lstrip = lstrip;
  t.match = content;  // not normalized (there is no normalizer anyway)
  tok.added_tokens.push_back(t);
}
}  // namespace

Tokenizer load_gpt2_tokenizer(const std::string& encoder_json, const std::string& vocab_bpe) {
  Tokenizer tok = load_bpe_tokenizer(encoder_json, vocab_bpe);
  add_special_from_vocab(tok, "<|endoftext|>");
  return tok;
}

Tokenizer load_bart_tokenizer(const std::string& vocab_json, const std::string& merges_txt) {
  Tokenizer tok = load_bpe_tokenizer(vocab_json, merges_txt);
  for (const char* t : {"<s>", "<pad>", "</s>", "<unk>"}) add_special_from_vocab(tok, t);
  add_special_from_vocab(tok, "<mask>", /*lstrip=*/true);
  tok.prefix_ids = {token_to_id(tok, "<s>")};
  tok.suffix_ids = {token_to_id(tok, "</s>")};
  return tok;
}

}  // namespace vlp
