// The tokenizer pipeline shared by both model kinds: added-token matching, normalizers, pre-tokenizers,
// post-processing, decoders, batching (see tokenizer.h). Model-specific work is in bpe_tokenizer.cpp and
// sentencepiece_tokenizer.cpp; tokenizer.json parsing in tokenizer_json.cpp.
#include "data/tokenizer.h"

#include <algorithm>
#include <bitset>
#include <unordered_map>

#include "data/bpe_tokenizer.h"
#include "data/sentencepiece_tokenizer.h"

namespace vlp {
namespace {

// ---- vocabulary -----------------------------------------------------------------------------------------

int64_t model_vocab_size(const Tokenizer& t) {
  switch (t.model) {
    case TokenizerModel::Bpe: return int64_t(t.bpe->id_to_token.size());
    case TokenizerModel::Unigram: return int64_t(t.unigram->pieces.size());
    case TokenizerModel::SentencePiece: return sentencepiece_size(*t.sentencepiece);
  }
  return 0;
}

int32_t model_token_to_id(const Tokenizer& t, std::string_view token) {
  switch (t.model) {
    case TokenizerModel::Bpe: {
      const auto it = t.bpe->token_to_id.find(std::string(token));
      return it == t.bpe->token_to_id.end() ? -1 : it->second;
    }
    case TokenizerModel::Unigram: {
      const auto it = t.unigram->piece_to_id.find(std::string(token));
      return it == t.unigram->piece_to_id.end() ? -1 : it->second;
    }
    case TokenizerModel::SentencePiece: return sentencepiece_piece_to_id(*t.sentencepiece, token);
  }
  return -1;
}

// The model's token for id, or false when the model has no such id.
bool model_id_to_token(const Tokenizer& t, int32_t id, std::string* out) {
  if (id < 0 || id >= model_vocab_size(t)) return false;
  switch (t.model) {
    case TokenizerModel::Bpe:
      *out = t.bpe->id_to_token[id];
      return !out->empty();
    case TokenizerModel::Unigram: *out = t.unigram->pieces[id]; return true;
    case TokenizerModel::SentencePiece: *out = sentencepiece_id_to_piece(*t.sentencepiece, id); return true;
  }
  return false;
}

void check_ready(const Tokenizer& t, const char* op) {
  const bool ok = (t.model == TokenizerModel::Bpe && t.bpe) || (t.model == TokenizerModel::Unigram && t.unigram) ||
                  (t.model == TokenizerModel::SentencePiece && t.sentencepiece);
  VLP_CHECK(ok, op, ": the tokenizer has no model loaded");
}

// ---- normalizers ------------------------------------------------------------------------------------------

std::string apply_normalizer(const Tokenizer& t, std::string s) {
  for (const NormalizerStep& step : t.normalizer) {
    switch (step.kind) {
      case NormalizerStep::Kind::Precompiled:
        if (step.charsmap) s = precompiled_normalize(*step.charsmap, s);
        break;
      case NormalizerStep::Kind::Strip: {
        const size_t left = step.strip_left ? text::leading_whitespace(s) : 0;
        const size_t right = step.strip_right && left < s.size() ? text::trailing_whitespace(s) : 0;
        s = left >= s.size() ? std::string() : s.substr(left, s.size() - left - right);
        break;
      }
      case NormalizerStep::Kind::Replace: {
        std::string out;
        size_t last = 0;
        if (step.pattern_is_regex) {
          for (const auto& [b, e] : text::find_all(step.regex, s)) {
            out.append(s, last, b - last);
            out += step.content;
            last = e;
          }
        } else if (!step.pattern.empty()) {
          for (size_t at = s.find(step.pattern); at != std::string::npos; at = s.find(step.pattern, last)) {
            out.append(s, last, at - last);
            out += step.content;
            last = at + step.pattern.size();
          }
        }
        out.append(s, last, std::string::npos);
        s = std::move(out);
        break;
      }
    }
  }
  return s;
}

// ---- added tokens -----------------------------------------------------------------------------------------

struct Segment {
  std::string text;        // text to pre-tokenize (when added_id < 0)
  int32_t added_id = -1;   // an added token
  bool at_start = false;   // begins at offset 0 of the input (Metaspace prepend_scheme "first")
};

bool is_word_char_at_edge(std::string_view s, bool at_end) {
  static const text::Regex ends = text::compile_regex("\\w$", "added tokens");
  static const text::Regex starts = text::compile_regex("^\\w", "added tokens");
  return !s.empty() && text::regex_search(at_end ? ends : starts, s);
}

// Cuts the added tokens of one kind (normalized or not) out of `s`, as HF's AddedVocabulary::find_matches:
// leftmost-longest matches, single_word matches discarded inside words, lstrip/rstrip swallowing
// white space. Pieces keep at_start only when they begin at offset 0 of an at_start piece.
void split_on_added(const Tokenizer& t, const std::string& s, bool normalized_kind, bool at_start, std::vector<Segment>& out) {
  std::vector<const AddedToken*> cands;
  std::bitset<256> first_bytes;
  for (const AddedToken& a : t.added_tokens)
    if (a.normalized == normalized_kind && !a.match.empty()) {
      cands.push_back(&a);
      first_bytes.set(uint8_t(a.match[0]));
    }
  size_t emitted = 0;  // end of what has been emitted so far
  size_t pos = 0;
  while (pos < s.size() && !cands.empty()) {
    if (!first_bytes.test(uint8_t(s[pos]))) {
      ++pos;
      continue;
    }
    const AddedToken* best = nullptr;
    for (const AddedToken* a : cands)
      if (s.compare(pos, a->match.size(), a->match) == 0 && (!best || a->match.size() > best->match.size())) best = a;
    if (!best) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + best->match.size();
    pos = stop;
    if (best->single_word && (is_word_char_at_edge(std::string_view(s).substr(0, start), true) ||
                              is_word_char_at_edge(std::string_view(s).substr(stop), false)))
      continue;
    if (best->lstrip) start = std::max(start - text::trailing_whitespace(std::string_view(s).substr(0, start)), emitted);
    if (best->rstrip) stop += text::leading_whitespace(std::string_view(s).substr(stop));
    if (start > emitted) out.push_back(Segment{s.substr(emitted, start - emitted), -1, at_start && emitted == 0});
    out.push_back(Segment{std::string(), best->id, false});
    emitted = pos = stop;
  }
  if (emitted < s.size() || s.empty()) out.push_back(Segment{s.substr(emitted), -1, at_start && emitted == 0});
}

// ---- pre-tokenizers and models -----------------------------------------------------------------------------

void encode_piece(const Tokenizer& t, std::string_view piece, std::vector<int32_t>& ids) {
  if (piece.empty()) return;
  if (t.model == TokenizerModel::Bpe) {
    bpe_encode_word(*t.bpe, piece, ids);
  } else {
    unigram_encode(*t.unigram, piece, ids);
  }
}

void encode_segment(const Tokenizer& t, const Segment& seg, std::vector<int32_t>& ids) {
  const PreTokenizer& p = t.pre_tokenizer;
  switch (p.kind) {
    case PreTokenizer::Kind::None: encode_piece(t, seg.text, ids); return;
    case PreTokenizer::Kind::ByteLevel: {
      std::vector<std::string> pieces;
      byte_level_pre_tokenize(seg.text, p.add_prefix_space, p.use_regex, pieces);
      for (const std::string& piece : pieces) encode_piece(t, piece, ids);
      return;
    }
    case PreTokenizer::Kind::Metaspace: {
      std::string s;
      for (char c : seg.text) {
        if (c == ' ') {
          s += p.replacement;
        } else {
          s += c;
        }
      }
      const bool starts_with_rep = s.compare(0, p.replacement.size(), p.replacement) == 0;
      if (!starts_with_rep && (p.prepend == PreTokenizer::Prepend::Always ||
                               (p.prepend == PreTokenizer::Prepend::First && seg.at_start)))
        s = p.replacement + s;
      if (!p.split) {
        encode_piece(t, s, ids);
        return;
      }
      // Split before each replacement character (HF's MergedWithNext).
      size_t begin = 0;
      for (size_t at = s.find(p.replacement, 1); at != std::string::npos; at = s.find(p.replacement, at + 1)) {
        encode_piece(t, std::string_view(s).substr(begin, at - begin), ids);
        begin = at;
      }
      encode_piece(t, std::string_view(s).substr(begin), ids);
      return;
    }
  }
}

// ---- decoders ------------------------------------------------------------------------------------------

bool byte_token_value(const std::string& tok, uint8_t* value) {
  if (tok.size() != 6 || tok.compare(0, 3, "<0x") != 0 || tok[5] != '>') return false;
  auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; };
  const int hi = hex(tok[3]), lo = hex(tok[4]);
  if (hi < 0 || lo < 0) return false;
  *value = uint8_t(hi * 16 + lo);
  return true;
}

std::vector<std::string> apply_decoder_step(const DecoderStep& d, std::vector<std::string> tokens) {
  switch (d.kind) {
    case DecoderStep::Kind::ByteLevel: return {byte_level_decode(tokens)};
    case DecoderStep::Kind::Metaspace:
      for (size_t i = 0; i < tokens.size(); ++i) {
        std::string out;
        const std::string& tk = tokens[i];
        for (size_t at = 0; at < tk.size();) {
          if (tk.compare(at, d.replacement.size(), d.replacement) == 0) {
            if (i != 0 || d.prepend_never) out += ' ';  // the first token's replacement chars are dropped
            at += d.replacement.size();
          } else {
            out += tk[at++];
          }
        }
        tokens[i] = std::move(out);
      }
      return tokens;
    case DecoderStep::Kind::ByteFallback: {
      std::vector<std::string> out;
      std::string bytes;
      size_t n_bytes = 0;
      auto flush = [&] {
        if (!n_bytes) return;
        if (text::find_invalid_utf8(bytes) == std::string_view::npos) {
          out.push_back(bytes);
        } else {
          for (size_t k = 0; k < n_bytes; ++k) out.push_back("\xEF\xBF\xBD");
        }
        bytes.clear();
        n_bytes = 0;
      };
      for (std::string& tk : tokens) {
        uint8_t b;
        if (byte_token_value(tk, &b)) {
          bytes += char(b);
          ++n_bytes;
        } else {
          flush();
          out.push_back(std::move(tk));
        }
      }
      flush();
      return out;
    }
    case DecoderStep::Kind::Fuse: {
      std::string all;
      for (const auto& tk : tokens) all += tk;
      return {all};
    }
    case DecoderStep::Kind::Replace:
      for (std::string& tk : tokens) {
        if (d.pattern.empty()) continue;
        std::string out;
        size_t last = 0;
        for (size_t at = tk.find(d.pattern); at != std::string::npos; at = tk.find(d.pattern, last)) {
          out.append(tk, last, at - last);
          out += d.content;
          last = at + d.pattern.size();
        }
        out.append(tk, last, std::string::npos);
        tk = std::move(out);
      }
      return tokens;
    case DecoderStep::Kind::Strip:
      for (std::string& tk : tokens) {
        const std::string& c = d.strip_content;
        for (int k = 0; k < d.strip_start && !c.empty() && tk.compare(0, c.size(), c) == 0; ++k) tk.erase(0, c.size());
        for (int k = 0; k < d.strip_stop && !c.empty() && tk.size() >= c.size() &&
                        tk.compare(tk.size() - c.size(), c.size(), c) == 0;
             ++k)
          tk.erase(tk.size() - c.size());
      }
      return tokens;
  }
  return tokens;
}

}  // namespace

// ---- public API -------------------------------------------------------------------------------------------

int64_t vocab_size(const Tokenizer& t) {
  check_ready(t, "vocab_size");
  int64_t n = model_vocab_size(t);
  for (const AddedToken& a : t.added_tokens) n = std::max<int64_t>(n, int64_t(a.id) + 1);
  return n;
}

std::string normalize_text(const Tokenizer& t, std::string_view text) { return apply_normalizer(t, std::string(text)); }

int32_t token_to_id(const Tokenizer& t, std::string_view token) {
  check_ready(t, "token_to_id");
  for (const AddedToken& a : t.added_tokens)
    if (a.content == token) return a.id;
  return model_token_to_id(t, token);
}

std::string id_to_token(const Tokenizer& t, int32_t id) {
  check_ready(t, "id_to_token");
  for (const AddedToken& a : t.added_tokens)
    if (a.id == id) return a.content;
  std::string tok;
  VLP_CHECK(model_id_to_token(t, id, &tok), "tokenizer ", t.source, ": unknown token id ", id, " (vocabulary size ",
            vocab_size(t), ")");
  return tok;
}

int add_tokens(Tokenizer& t, std::vector<AddedToken> tokens) {
  check_ready(t, "add_tokens");
  const int64_t model_size = model_vocab_size(t);
  int32_t max_added = -1;
  for (const AddedToken& a : t.added_tokens) max_added = std::max(max_added, a.id);
  int64_t next = max_added >= model_size ? int64_t(max_added) + 1 : model_size;
  int added = 0;
  for (AddedToken& a : tokens) {
    if (a.content.empty()) continue;
    const bool exists = std::any_of(t.added_tokens.begin(), t.added_tokens.end(),
                                    [&](const AddedToken& b) { return b.content == a.content; });
    if (exists) continue;
    const int32_t in_model = model_token_to_id(t, a.content);
    a.id = in_model >= 0 ? in_model : int32_t(next++);
    a.match = a.normalized ? apply_normalizer(t, a.content) : a.content;
    t.added_tokens.push_back(a);
    ++added;
  }
  return added;
}

int add_tokens(Tokenizer& t, const std::vector<std::string>& tokens, bool special) {
  std::vector<AddedToken> list;
  for (const std::string& content : tokens) {
    AddedToken a;
    a.content = content;
    a.special = special;
    a.normalized = !special;  // HF's AddedToken default
    list.push_back(a);
  }
  return add_tokens(t, std::move(list));
}

std::vector<int32_t> encode(const Tokenizer& t, std::string_view text, bool add_special_tokens) {
  check_ready(t, "encode");
  const size_t bad = text::find_invalid_utf8(text);
  VLP_CHECK(bad == std::string_view::npos, "encode: the text is not valid UTF-8 (byte ", bad, ")");
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = t.prefix_ids;
  std::vector<Segment> raw;
  split_on_added(t, std::string(text), /*normalized_kind=*/false, /*at_start=*/true, raw);
  for (const Segment& r : raw) {
    if (r.added_id >= 0) {
      ids.push_back(r.added_id);
      continue;
    }
    if (r.text.empty()) continue;
    if (t.model == TokenizerModel::SentencePiece) {  // the library normalizes and splits itself
      sentencepiece_encode(*t.sentencepiece, r.text, ids);
      continue;
    }
    std::vector<Segment> pieces;
    split_on_added(t, apply_normalizer(t, r.text), /*normalized_kind=*/true, r.at_start, pieces);
    for (const Segment& p : pieces) {
      if (p.added_id >= 0) {
        ids.push_back(p.added_id);
      } else if (!p.text.empty()) {
        encode_segment(t, p, ids);
      }
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), t.suffix_ids.begin(), t.suffix_ids.end());
  return ids;
}

std::vector<std::string> tokenize(const Tokenizer& t, std::string_view text, bool add_special_tokens) {
  std::vector<std::string> out;
  for (int32_t id : encode(t, text, add_special_tokens)) out.push_back(id_to_token(t, id));
  return out;
}

std::string decode(const Tokenizer& t, const std::vector<int32_t>& ids, bool skip_special_tokens) {
  check_ready(t, "decode");
  std::unordered_map<int32_t, const AddedToken*> added;
  for (const AddedToken& a : t.added_tokens) added.emplace(a.id, &a);
  const int64_t size = vocab_size(t);
  if (t.model == TokenizerModel::SentencePiece) {  // the library decodes runs of model ids
    std::string out;
    std::vector<int32_t> run;
    auto flush = [&] {
      if (!run.empty()) out += sentencepiece_decode(*t.sentencepiece, run);
      run.clear();
    };
    for (int32_t id : ids) {
      const auto it = added.find(id);
      if (it != added.end()) {
        flush();
        if (!(skip_special_tokens && it->second->special)) out += it->second->content;
        continue;
      }
      VLP_CHECK(id >= 0 && id < sentencepiece_size(*t.sentencepiece), "decode: unknown token id ", id,
                " (vocabulary size ", size, ") for ", t.source);
      run.push_back(id);
    }
    flush();
    return out;
  }
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const auto it = added.find(id);
    if (it != added.end()) {
      // HF decodes a normalized added token as its normalized form, so the decoder sees what the
      // normalizer produced (e.g. T5's full-width letters come back as ASCII).
      const AddedToken& a = *it->second;
      if (!(skip_special_tokens && a.special)) tokens.push_back(a.normalized ? a.match : a.content);
      continue;
    }
    std::string tok;
    VLP_CHECK(model_id_to_token(t, id, &tok), "decode: unknown token id ", id, " (vocabulary size ", size, ") for ",
              t.source);
    tokens.push_back(std::move(tok));
  }
  for (const DecoderStep& d : t.decoder) tokens = apply_decoder_step(d, std::move(tokens));
  std::string out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i > 0 && t.decoder.empty()) out += ' ';  // HF joins with spaces when there is no decoder
    out += tokens[i];
  }
  return out;
}

namespace {

BatchEncoding pad_sequences(std::vector<std::vector<int32_t>> seqs, const BatchOptions& o, int32_t pad_id) {
  size_t len = 0;
  for (const auto& s : seqs) len = std::max(len, s.size());
  if (o.pad_to_max_length) {
    VLP_CHECK(o.max_length > 0, "encode_batch: pad_to_max_length needs max_length > 0");
    len = size_t(o.max_length);
  }
  bool needs_padding = false;
  for (const auto& s : seqs) needs_padding |= s.size() < len;
  VLP_CHECK(!needs_padding || pad_id >= 0, "encode_batch: sequences need padding but no pad id is known (set BatchOptions::pad_id)");
  BatchEncoding b;
  const int64_t batch = int64_t(seqs.size());
  b.input_ids = empty({batch, int64_t(len)}, DType::I64);
  b.attention_mask = empty({batch, int64_t(len)}, DType::I64);
  int64_t* ids = b.input_ids.data<int64_t>();
  int64_t* mask = b.attention_mask.data<int64_t>();
  for (int64_t i = 0; i < batch; ++i) {
    const auto& s = seqs[i];
    const size_t pad = len - s.size();
    const size_t first = o.padding_side == BatchOptions::Side::Left ? pad : 0;
    for (size_t j = 0; j < len; ++j) {
      const bool real = j >= first && j < first + s.size();
      ids[i * int64_t(len) + j] = real ? s[j - first] : pad_id;
      mask[i * int64_t(len) + j] = real ? 1 : 0;
    }
  }
  b.ids = std::move(seqs);
  return b;
}

void truncate(std::vector<int32_t>& ids, size_t keep, BatchOptions::Side side) {
  if (ids.size() <= keep) return;
  if (side == BatchOptions::Side::Right) {
    ids.resize(keep);
  } else {
    ids.erase(ids.begin(), ids.end() - keep);
  }
}

}  // namespace

BatchEncoding encode_batch(const Tokenizer& t, const std::vector<std::string>& texts, const BatchOptions& o) {
  check_ready(t, "encode_batch");
  const size_t n_special = o.add_special_tokens ? t.prefix_ids.size() + t.suffix_ids.size() : 0;
  std::vector<std::vector<int32_t>> seqs;
  seqs.reserve(texts.size());
  for (const std::string& text : texts) {
    std::vector<int32_t> body = encode(t, text, /*add_special_tokens=*/false);
    if (o.max_length >= 0) {
      // As HF: the text is truncated so that it fits together with the special tokens.
      const size_t room = size_t(o.max_length) > n_special ? size_t(o.max_length) - n_special : 0;
      truncate(body, room, o.truncation_side);
    }
    std::vector<int32_t> ids;
    if (o.add_special_tokens) ids = t.prefix_ids;
    ids.insert(ids.end(), body.begin(), body.end());
    if (o.add_special_tokens) ids.insert(ids.end(), t.suffix_ids.begin(), t.suffix_ids.end());
    seqs.push_back(std::move(ids));
  }
  return pad_sequences(std::move(seqs), o, o.pad_id >= 0 ? o.pad_id : t.pad_id);
}

BatchEncoding pad_batch(const std::vector<std::vector<int32_t>>& sequences, const BatchOptions& o) {
  std::vector<std::vector<int32_t>> seqs = sequences;
  if (o.max_length >= 0)
    for (auto& s : seqs) truncate(s, size_t(o.max_length), o.truncation_side);
  return pad_sequences(std::move(seqs), o, o.pad_id);
}

}  // namespace vlp
