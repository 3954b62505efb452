// load_tokenizer: Hugging Face tokenizer.json (BPE or Unigram model with the normalizers, pre-tokenizers,
// post-processors and decoders vlpeft implements) and SentencePiece .model files. Anything else in a
// tokenizer.json is rejected with the file and the component named, rather than silently ignored.
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/bpe_tokenizer.h"
#include "data/sentencepiece_tokenizer.h"
#include "data/tokenizer.h"

namespace vlp {
namespace {

using nlohmann::json;

std::string base64_decode(const std::string& in, const std::string& what) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=' || c == '\n' || c == '\r') continue;
    const int v = value(c);
    VLP_CHECK(v >= 0, what, ": invalid base64 character '", c, "'");
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xFF);
    }
  }
  return out;
}

// Field access with messages naming the file and the component.
struct Ctx {
  std::string path;
  std::string where;
  [[noreturn]] void fail(const std::string& msg) const { VLP_FAIL("tokenizer ", path, ": ", where, ": ", msg); }
};

bool get_bool(const json& j, const char* key, bool dflt, const Ctx& c) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  if (!j[key].is_boolean()) c.fail(std::string("field '") + key + "' should be true or false");
  return j[key].get<bool>();
}

std::string get_string(const json& j, const char* key, const Ctx& c) {
  if (!j.contains(key) || !j[key].is_string()) c.fail(std::string("missing string field '") + key + "'");
  return j[key].get<std::string>();
}

std::string type_of(const json& j, const Ctx& c) {
  if (!j.is_object()) c.fail("expected an object with a \"type\"");
  return get_string(j, "type", c);
}

void parse_bpe_model(const json& m, Tokenizer& tok, const Ctx& c) {
  if (!m.contains("vocab") || !m["vocab"].is_object()) c.fail("BPE model without a \"vocab\" object");
  std::unordered_map<std::string, int32_t> vocab;
  for (const auto& [t, id] : m["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) c.fail("token '" + t + "' has a bad id " + id.dump());
    vocab[t] = id.get<int32_t>();
  }
  std::vector<std::pair<std::string, std::string>> merges;
  if (m.contains("merges") && !m["merges"].is_null()) {
    for (const auto& e : m["merges"]) {
      if (e.is_string()) {  // "a b"
        const std::string s = e.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) c.fail("bad merge '" + s + "'");
        merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {  // ["a", "b"]
        merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
      } else {
        c.fail("bad merge " + e.dump());
      }
    }
  }
  if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() != 0.0)
    c.fail("BPE dropout is not supported");
  for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(k) && m[k].is_string() && !m[k].get<std::string>().empty())
      c.fail(std::string("BPE ") + k + " is not supported");
  auto bpe = make_bpe_model(vocab, merges, c.path);
  if (m.contains("unk_token") && m["unk_token"].is_string()) {
    const auto it = vocab.find(m["unk_token"].get<std::string>());
    if (it == vocab.end()) c.fail("unk_token '" + m["unk_token"].get<std::string>() + "' is not in the vocabulary");
    bpe->unk_id = it->second;
  }
  bpe->fuse_unk = get_bool(m, "fuse_unk", false, c);
  bpe->byte_fallback = get_bool(m, "byte_fallback", false, c);
  bpe->ignore_merges = get_bool(m, "ignore_merges", false, c);
  tok.model = TokenizerModel::Bpe;
  tok.bpe = bpe;
}

void parse_unigram_model(const json& m, Tokenizer& tok, const Ctx& c) {
  if (!m.contains("vocab") || !m["vocab"].is_array()) c.fail("Unigram model without a \"vocab\" array");
  std::vector<std::pair<std::string, double>> pieces;
  pieces.reserve(m["vocab"].size());
  for (const auto& e : m["vocab"]) {
    if (!e.is_array() || e.size() != 2 || !e[0].is_string() || !e[1].is_number()) c.fail("bad vocab entry " + e.dump());
    pieces.emplace_back(e[0].get<std::string>(), e[1].get<double>());
  }
  int32_t unk = -1;
  if (m.contains("unk_id") && !m["unk_id"].is_null()) unk = m["unk_id"].get<int32_t>();
  tok.model = TokenizerModel::Unigram;
  tok.unigram = make_unigram_model(std::move(pieces), unk, get_bool(m, "byte_fallback", false, c), c.path);
}

void parse_normalizer(const json& n, Tokenizer& tok, const Ctx& c) {
  if (n.is_null()) return;
  const std::string type = type_of(n, c);
  if (type == "Sequence") {
    for (const auto& sub : n["normalizers"]) parse_normalizer(sub, tok, c);
    return;
  }
  NormalizerStep s;
  if (type == "Precompiled") {
    s.kind = NormalizerStep::Kind::Precompiled;
    if (n.contains("precompiled_charsmap") && n["precompiled_charsmap"].is_string()) {
      const std::string blob = base64_decode(n["precompiled_charsmap"].get<std::string>(), c.path + ": precompiled_charsmap");
      if (!blob.empty()) s.charsmap = parse_precompiled_charsmap(blob, c.path);
    }
  } else if (type == "Strip") {
    s.kind = NormalizerStep::Kind::Strip;
    s.strip_left = get_bool(n, "strip_left", true, c);
    s.strip_right = get_bool(n, "strip_right", true, c);
  } else if (type == "Replace") {
    s.kind = NormalizerStep::Kind::Replace;
    const json& p = n["pattern"];
    if (p.contains("String")) {
      s.pattern = p["String"].get<std::string>();
    } else if (p.contains("Regex")) {
      s.pattern = p["Regex"].get<std::string>();
      s.pattern_is_regex = true;
      s.regex = text::compile_regex(s.pattern, "tokenizer " + c.path + ": Replace normalizer");
    } else {
      c.fail("Replace normalizer without a String or Regex pattern");
    }
    s.content = get_string(n, "content", c);
  } else {
    c.fail("normalizer type '" + type + "' is not supported (supported: Precompiled, Strip, Replace, Sequence)");
  }
  tok.normalizer.push_back(std::move(s));
}

void parse_pre_tokenizer(const json& p, Tokenizer& tok, const Ctx& c) {
  if (p.is_null()) return;
  const std::string type = type_of(p, c);
  if (type == "Sequence" && p["pretokenizers"].size() == 1) {
    parse_pre_tokenizer(p["pretokenizers"][0], tok, c);
    return;
  }
  PreTokenizer& pt = tok.pre_tokenizer;
  if (type == "ByteLevel") {
    pt.kind = PreTokenizer::Kind::ByteLevel;
    pt.add_prefix_space = get_bool(p, "add_prefix_space", true, c);
    pt.use_regex = get_bool(p, "use_regex", true, c);
  } else if (type == "Metaspace") {
    pt.kind = PreTokenizer::Kind::Metaspace;
    pt.replacement = p.contains("replacement") ? p["replacement"].get<std::string>() : std::string("\xE2\x96\x81");
    if (p.contains("prepend_scheme") && p["prepend_scheme"].is_string()) {
      const std::string scheme = p["prepend_scheme"].get<std::string>();
      if (scheme == "always") {
        pt.prepend = PreTokenizer::Prepend::Always;
      } else if (scheme == "first") {
        pt.prepend = PreTokenizer::Prepend::First;
      } else if (scheme == "never") {
        pt.prepend = PreTokenizer::Prepend::Never;
      } else {
        c.fail("unknown Metaspace prepend_scheme '" + scheme + "'");
      }
    } else {  // older files: add_prefix_space
      pt.prepend = get_bool(p, "add_prefix_space", true, c) ? PreTokenizer::Prepend::Always : PreTokenizer::Prepend::Never;
    }
    pt.split = get_bool(p, "split", true, c);
  } else {
    c.fail("pre-tokenizer type '" + type + "' is not supported (supported: ByteLevel, Metaspace)");
  }
}

void parse_decoder(const json& d, Tokenizer& tok, const Ctx& c) {
  if (d.is_null()) return;
  const std::string type = type_of(d, c);
  if (type == "Sequence") {
    for (const auto& sub : d["decoders"]) parse_decoder(sub, tok, c);
    return;
  }
  DecoderStep s;
  if (type == "ByteLevel") {
    s.kind = DecoderStep::Kind::ByteLevel;
  } else if (type == "Metaspace") {
    s.kind = DecoderStep::Kind::Metaspace;
    if (d.contains("replacement")) s.replacement = d["replacement"].get<std::string>();
    if (d.contains("prepend_scheme") && d["prepend_scheme"].is_string()) {
      s.prepend_never = d["prepend_scheme"].get<std::string>() == "never";
    } else {
      s.prepend_never = !get_bool(d, "add_prefix_space", true, c);
    }
  } else if (type == "ByteFallback") {
    s.kind = DecoderStep::Kind::ByteFallback;
  } else if (type == "Fuse") {
    s.kind = DecoderStep::Kind::Fuse;
  } else if (type == "Replace") {
    s.kind = DecoderStep::Kind::Replace;
    if (!d["pattern"].contains("String")) c.fail("Replace decoder: only String patterns are supported");
    s.pattern = d["pattern"]["String"].get<std::string>();
    s.content = get_string(d, "content", c);
  } else if (type == "Strip") {
    s.kind = DecoderStep::Kind::Strip;
    s.strip_content = get_string(d, "content", c);
    s.strip_start = d.value("start", 0);
    s.strip_stop = d.value("stop", 0);
  } else {
    c.fail("decoder type '" + type + "' is not supported (supported: ByteLevel, Metaspace, ByteFallback, Fuse, "
           "Replace, Strip, Sequence)");
  }
  tok.decoder.push_back(std::move(s));
}

int32_t special_pair_id(const json& pair, const Ctx& c) {  // ["</s>", 2]
  if (!pair.is_array() || pair.size() != 2 || !pair[1].is_number_integer()) c.fail("expected [token, id], got " + pair.dump());
  return pair[1].get<int32_t>();
}

void parse_post_processor(const json& p, Tokenizer& tok, const Ctx& c) {
  if (p.is_null()) return;
  const std::string type = type_of(p, c);
  if (type == "Sequence") {
    for (const auto& sub : p["processors"]) parse_post_processor(sub, tok, c);
  } else if (type == "ByteLevel") {
    // offsets only
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    tok.prefix_ids = {special_pair_id(p["cls"], c)};
    tok.suffix_ids = {special_pair_id(p["sep"], c)};
  } else if (type == "TemplateProcessing") {
    std::vector<int32_t> before, after;
    bool seen_sequence = false;
    for (const auto& item : p["single"]) {
      if (item.contains("Sequence")) {
        seen_sequence = true;
      } else if (item.contains("SpecialToken")) {
        const std::string name = item["SpecialToken"]["id"].get<std::string>();
        if (!p["special_tokens"].contains(name)) c.fail("template token '" + name + "' missing from special_tokens");
        for (const auto& id : p["special_tokens"][name]["ids"]) (seen_sequence ? after : before).push_back(id.get<int32_t>());
      } else {
        c.fail("unknown template item " + item.dump());
      }
    }
    tok.prefix_ids = before;
    tok.suffix_ids = after;
  } else {
    c.fail("post-processor type '" + type + "' is not supported (supported: TemplateProcessing, RobertaProcessing, "
           "BertProcessing, ByteLevel, Sequence)");
  }
}

Tokenizer load_tokenizer_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  VLP_CHECK(in.good(), "tokenizer ", path, ": cannot open file (missing or unreadable)");
  json root;
  try {
    root = json::parse(in);
  } catch (const json::exception& e) {
    VLP_FAIL("tokenizer ", path, ": invalid JSON: ", e.what());
  }
  Ctx c{path, "model"};
  if (!root.is_object() || !root.contains("model")) c.fail("not a tokenizer.json (no \"model\")");
  Tokenizer tok;
  tok.source = path;
  const json& model = root["model"];
  // Older files omit the model type; tell BPE and Unigram apart by their vocab layout.
  std::string type = model.contains("type") ? model["type"].get<std::string>()
                     : model.contains("merges")          ? "BPE"
                     : model.contains("vocab") && model["vocab"].is_array() ? "Unigram"
                                                                            : "";
  if (type == "BPE") {
    parse_bpe_model(model, tok, c);
  } else if (type == "Unigram") {
    parse_unigram_model(model, tok, c);
  } else {
    c.fail("model type '" + type + "' is not supported (supported: BPE, Unigram)");
  }
  c.where = "normalizer";
  parse_normalizer(root.value("normalizer", json()), tok, c);
  c.where = "pre_tokenizer";
  parse_pre_tokenizer(root.value("pre_tokenizer", json()), tok, c);
  c.where = "decoder";
  parse_decoder(root.value("decoder", json()), tok, c);
  c.where = "post_processor";
  parse_post_processor(root.value("post_processor", json()), tok, c);
  c.where = "added_tokens";
  if (root.contains("added_tokens"))
    for (const auto& a : root["added_tokens"]) {
      AddedToken t;
      t.id = a.at("id").get<int32_t>();
      t.content = get_string(a, "content", c);
      t.special = get_bool(a, "special", false, c);
      t.normalized = get_bool(a, "normalized", !t.special, c);
      t.lstrip = get_bool(a, "lstrip", false, c);
      t.rstrip = get_bool(a, "rstrip", false, c);
      t.single_word = get_bool(a, "single_word", false, c);
      t.match = t.normalized ? normalize_text(tok, t.content) : t.content;
      tok.added_tokens.push_back(t);
    }
  if (root.contains("padding") && root["padding"].is_object() && root["padding"].contains("pad_id")) {
    tok.pad_id = root["padding"]["pad_id"].get<int32_t>();
  } else {
    tok.pad_id = token_to_id(tok, "<pad>");
  }
  return tok;
}

Tokenizer load_sentencepiece_tokenizer(const std::string& path) {
  Tokenizer tok;
  tok.model = TokenizerModel::SentencePiece;
  tok.source = path;
  tok.sentencepiece = load_sentencepiece_model(path);
  const SentencePieceModel& m = *tok.sentencepiece;
  // Control pieces (<pad>, </s>, <s>) and <unk> are special tokens, matched in the text and skipped by
  // decode(skip_special_tokens), as in HF's SentencePiece-based tokenizers.
  for (const char* which : {"pad", "eos", "bos", "unk"}) {
    const int32_t id = sentencepiece_special_id(m, which);
    if (id < 0) continue;
    AddedToken t;
    t.id = id;
    t.content = sentencepiece_id_to_piece(m, id);
    t.special = true;
    t.match = t.content;
    tok.added_tokens.push_back(t);
  }
  tok.pad_id = sentencepiece_special_id(m, "pad");
  // T5's convention (HF T5Tokenizer): </s> appended, nothing prepended.
  const int32_t eos = sentencepiece_special_id(m, "eos");
  if (eos >= 0) tok.suffix_ids = {eos};
  return tok;
}

}  // namespace

Tokenizer load_tokenizer(const std::string& path) {
  if (path.size() >= 6 && path.compare(path.size() - 6, 6, ".model") == 0) return load_sentencepiece_tokenizer(path);
  return load_tokenizer_json(path);
}

}  // namespace vlp
