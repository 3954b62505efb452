// PTB-style caption tokenizer (see ptb_tokenize.h for the rules covered and the known gaps).
//
// Each whitespace-separated chunk is tokenised by peeling punctuation off its front and back, splitting
// what remains at inner separators (recursively), and finally splitting clitics off the words. The
// abbreviation list is the subset of the Java lexer's that was checked against CoreNLP 3.4.1.
#include "data/ptb_tokenize.h"

#include <algorithm>
#include <optional>
#include <unordered_set>

namespace vlp::data {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_ascii_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
// Letters for our purposes: ASCII letters and any byte of a multi-byte UTF-8 sequence.
bool is_letter(char c) { return is_ascii_letter(c) || (static_cast<unsigned char>(c) & 0x80); }
bool is_alnum(char c) { return is_letter(c) || is_digit(c); }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

std::string lower_ascii(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
  return s;
}

// ASCII and Latin-1 Supplement upper-case letters (U+00C0..U+00DE except U+00D7) to lower case.
std::string lower_token(const std::string& s) {
  std::string out = lower_ascii(s);
  for (size_t i = 0; i + 1 < out.size(); ++i) {
    auto b0 = static_cast<unsigned char>(out[i]), b1 = static_cast<unsigned char>(out[i + 1]);
    if (b0 == 0xC3 && b1 >= 0x80 && b1 <= 0x9E && b1 != 0x97) out[i + 1] = char(b1 + 0x20);
  }
  return out;
}

// Unicode punctuation the Java tokenizer normalises, replaced before splitting. Curly double quotes and
// dashes become stand-alone tokens; curly single quotes become ASCII ones so clitics still split.
std::string normalize_unicode(const std::string& s) {
  static const std::pair<const char*, const char*> map[] = {
      {"\xE2\x80\x99", "'"},      {"\xE2\x80\x98", "`"},      {"\xE2\x80\x9C", " `` "},
      {"\xE2\x80\x9D", " '' "},   {"\xE2\x80\x94", " -- "},   {"\xE2\x80\x93", " -- "},
      {"\xE2\x80\xA6", " ... "},  {"\xC2\xA0", " "}};
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    bool replaced = false;
    if (static_cast<unsigned char>(s[i]) >= 0xC2) {
      for (const auto& [from, to] : map) {
        size_t n = std::char_traits<char>::length(from);
        if (s.compare(i, n, from) == 0) {
          out += to;
          i += n;
          replaced = true;
          break;
        }
      }
    }
    if (!replaced) out += s[i++];
  }
  return out;
}

// Words that keep their final period (checked against CoreNLP 3.4.1; lower case).
const std::unordered_set<std::string>& abbreviations() {
  static const std::unordered_set<std::string> set = {
      "mr", "mrs", "ms", "dr", "st", "vs", "etc", "inc", "cf", "ft", "jr", "sr", "prof", "co", "ltd",
      "corp", "mt", "ave", "blvd", "rd", "gov", "sen", "rep", "reps", "sens", "gen", "col", "capt", "lt",
      "sgt", "adm", "maj", "pres", "messrs", "mme", "mlle", "esq", "hon", "msgr", "jan", "feb", "mar",
      "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "mon", "tue", "tues", "wed", "thu",
      "thurs", "fri", "al", "est", "dept", "univ", "assn", "bros", "rev", "ph", "calif", "fla", "ariz",
      "colo", "conn", "ga", "ind", "kan", "ky", "md", "mich", "minn", "mo", "mont", "neb", "nev", "okla",
      "tenn", "va", "vt", "wis", "wyo", "plc", "sq", "ste", "bldg"};
  return set;
}

// "u.s", "e.g", "a.m": letters with inner periods; a single letter; or a listed abbreviation.
bool keeps_period(const std::string& core) {
  if (core.empty() || core.back() == '.') return false;
  if (core.size() == 1) return is_ascii_letter(core[0]);
  bool letters_and_periods = std::all_of(core.begin(), core.end(), [](char c) { return is_letter(c) || c == '.'; });
  if (letters_and_periods && core.find('.') != std::string::npos && core.front() != '.') return true;
  return abbreviations().count(lower_ascii(core)) > 0;
}

// The part of a chunk after its last inner separator ("w" in "A&w"): what a final period attaches to.
std::string last_segment(const std::string& s) {
  auto upper = [](char c) { return c >= 'A' && c <= 'Z'; };
  size_t i = s.size();
  while (i > 0) {
    char c = s[i - 1];
    bool word_char = is_alnum(c) || c == '.' || c == '\'' || c == '-' || c == '/';
    bool acronym_joiner = (c == '&' || c == '+') && i >= 2 && i < s.size() && upper(s[i - 2]) && upper(s[i]);  // A&W
    if (!word_char && !acronym_joiner) break;
    --i;
  }
  return s.substr(i);
}

size_t run_length_back(const std::string& s, char c) {
  size_t n = 0;
  while (n < s.size() && s[s.size() - 1 - n] == c) ++n;
  return n;
}

bool is_clitic(const std::string& lower) {
  return lower == "'s" || lower == "'m" || lower == "'d" || lower == "'ll" || lower == "'re" || lower == "'ve" ||
         lower == "n't";
}

// Whole words with a leading apostrophe that the lexer keeps as one token.
bool is_apostrophe_word(const std::string& s) {
  std::string l = lower_ascii(s);
  if (l == "'em" || l == "'cause" || l == "'n'" || l == "'n") return true;
  // '90s: apostrophe, digits, optional s.
  if (l.size() >= 2 && l[0] == '\'' && is_digit(l[1])) {
    size_t i = 1;
    while (i < l.size() && is_digit(l[i])) ++i;
    return i == l.size() || (i + 1 == l.size() && l[i] == 's');
  }
  return false;
}

size_t run_length(const std::string& s, size_t pos, char c) {
  size_t n = 0;
  while (pos + n < s.size() && s[pos + n] == c) ++n;
  return n;
}

const char* bracket_token(char c) {
  switch (c) {
    case '(': return "-LRB-";
    case ')': return "-RRB-";
    case '[': return "-LSB-";
    case ']': return "-RSB-";
    case '{': return "-LCB-";
    case '}': return "-RCB-";
    default: return nullptr;
  }
}

// Splits the clitics and fused forms off one word with no punctuation at its ends.
void split_word(const std::string& word, std::vector<std::string>& out) {
  static const std::pair<const char*, int> fused[] = {{"cannot", 3}, {"gonna", 3}, {"gotta", 3},
                                                      {"wanna", 3},  {"lemme", 3}, {"gimme", 3}};
  std::string l = lower_ascii(word);
  for (const auto& [w, cut] : fused)
    if (l == w) {
      out.push_back(word.substr(0, size_t(cut)));
      out.push_back(word.substr(size_t(cut)));
      return;
    }
  size_t n_pos = l.find("'n'");
  if (n_pos != std::string::npos && n_pos > 0 && n_pos + 3 < l.size()) {  // rock'n'roll -> rock 'n' roll
    out.push_back(word.substr(0, n_pos));
    out.push_back(word.substr(n_pos, 3));
    split_word(word.substr(n_pos + 3), out);
    return;
  }
  if (l == "y'all") {
    out.push_back(word.substr(0, 2));
    out.push_back(word.substr(2));
    return;
  }
  // A number with inner separators followed by letters ("12:30pm"): the letters are a new token.
  if (!word.empty() && is_digit(word[0])) {
    size_t i = 0;
    bool separated = false;
    while (i < word.size()) {
      if (is_digit(word[i])) ++i;
      else if ((word[i] == '.' || word[i] == ',' || word[i] == ':' || word[i] == '/') && i + 1 < word.size() &&
               is_digit(word[i + 1])) {
        separated = true;
        ++i;
      } else {
        break;
      }
    }
    if (separated && i < word.size() && std::all_of(word.begin() + long(i), word.end(), is_ascii_letter)) {
      out.push_back(word.substr(0, i));
      out.push_back(word.substr(i));
      return;
    }
  }
  // Clitics from the end, repeatedly ("wouldn't've" -> would n't 've).
  std::vector<std::string> tail;
  std::string stem = word;
  for (;;) {
    std::string ls = lower_ascii(stem);
    size_t cut = std::string::npos;
    for (const char* c : {"'s", "'m", "'d", "'ll", "'re", "'ve", "n't"}) {
      size_t n = std::char_traits<char>::length(c);
      if (ls.size() > n && ls.compare(ls.size() - n, n, c) == 0) {
        cut = ls.size() - n;
        break;
      }
    }
    if (cut == std::string::npos || !is_alnum(stem[cut - 1])) break;
    tail.push_back(stem.substr(cut));
    stem = stem.substr(0, cut);
  }
  out.push_back(stem);
  out.insert(out.end(), tail.rbegin(), tail.rend());
}

// The first inner separator of a chunk (after peeling): where it starts, how long it is, its token.
struct Separator {
  size_t pos = 0, len = 0;
  std::string token;
};

std::optional<Separator> find_separator(const std::string& s) {
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool digit_before = i > 0 && is_digit(s[i - 1]), digit_after = i + 1 < s.size() && is_digit(s[i + 1]);
    if (c == '-' && run_length(s, i, '-') >= 2) return Separator{i, run_length(s, i, '-'), "--"};
    if (c == '.' && run_length(s, i, '.') >= 3) return Separator{i, run_length(s, i, '.'), "..."};
    // "A+B" between capitals stays whole (acronym-like, as in the Java lexer); "a+b" splits.
    bool capitals_around = i > 0 && i + 1 < s.size() && s[i - 1] >= 'A' && s[i - 1] <= 'Z' && s[i + 1] >= 'A' && s[i + 1] <= 'Z';
    bool between_alnum = i > 0 && is_alnum(s[i - 1]) && i + 1 < s.size() && is_alnum(s[i + 1]);
    if (((c == ',' || c == ':') && !(digit_before && digit_after)) || c == ';' || c == '=' || c == '*' ||
        ((c == '+' || c == '&') && !capitals_around && between_alnum))
      return Separator{i, 1, std::string(1, c)};
    if (const char* b = bracket_token(c)) return Separator{i, 1, b};
    if (c == '"') return Separator{i, 1, i > 0 && is_alnum(s[i - 1]) ? "''" : "``"};
    if (c == '\'' && digit_before && digit_after) return Separator{i, 1, "'"};
  }
  return std::nullopt;
}

void tokenize_chunk(const std::string& chunk, std::vector<std::string>& out) {
  std::string s = chunk;
  if (s.empty()) return;
  if (is_clitic(lower_ascii(s)) || s == "--" || s == "..." || s == "``" || s == "''") {
    out.push_back(s);
    return;
  }
  std::vector<std::string> front, back;  // back in reverse order
  // Peel leading punctuation (an apostrophe word like '90s keeps its apostrophe even with trailing
  // punctuation, so look at the word without it).
  auto strip_trailing = [](std::string w, bool keep_apostrophe) {
    while (!w.empty() && !is_alnum(w.back()) && !(keep_apostrophe && w.back() == '\'')) w.pop_back();
    return w;
  };
  auto keeps_leading_apostrophe = [&](const std::string& w) {
    std::string with = strip_trailing(w, true), without = strip_trailing(w, false);
    return is_apostrophe_word(with) || is_apostrophe_word(without) || is_clitic(lower_ascii(without));
  };
  while (!s.empty() && !keeps_leading_apostrophe(s)) {
    char c = s[0];
    size_t take = 0;
    std::string tok;
    if (s.compare(0, 2, "``") == 0) take = 2, tok = "``";
    else if (s.compare(0, 2, "''") == 0) take = 2, tok = "''";
    else if (c == '"') take = 1, tok = "``";
    else if (bracket_token(c)) take = 1, tok = bracket_token(c);
    else if (c == '`') take = 1, tok = "`";
    else if (c == '\'') {
      std::string l = lower_ascii(strip_trailing(s, false));
      if (l == "'tis" || l == "'twas") take = 2, tok = s.substr(0, 2);
      else take = 1, tok = "`";
    } else if (c == '$' || (c == '#' && s.size() > 1 && is_digit(s[1]))) take = 1, tok = std::string(1, c);
    else if (c == '.' && run_length(s, 0, '.') >= 3) take = run_length(s, 0, '.'), tok = "...";
    else if (c == '-' && run_length(s, 0, '-') >= 2) take = run_length(s, 0, '-'), tok = "--";
    else if ((c == '.' || c == '-') && s.size() > 1 && is_digit(s[1])) take = 0;  // .5 and -5 are numbers
    else if (c == '.' || c == ',' || c == ';' || c == ':' || c == '-') take = 1, tok = std::string(1, c);
    else if (c == '!' || c == '?') {
      while (take < s.size() && (s[take] == '!' || s[take] == '?')) ++take;
      tok = s.substr(0, take);
    }
    if (take == 0) break;
    front.push_back(tok);
    s = s.substr(take);
  }
  // Peel trailing punctuation.
  while (!s.empty() && !is_apostrophe_word(s) && !is_clitic(lower_ascii(s))) {
    size_t n = s.size();
    char c = s[n - 1];
    size_t take = 0;
    std::string tok;
    if (n >= 2 && s.compare(n - 2, 2, "''") == 0) take = 2, tok = "''";
    else if (c == '"') take = 1, tok = "''";
    else if (bracket_token(c)) take = 1, tok = bracket_token(c);
    else if (c == '\'') take = 1, tok = "'";
    else if (c == '.' && run_length_back(s, '.') >= 2 && keeps_period(last_segment(s.substr(0, n - run_length_back(s, '.'))))) {
      // "a..." -> "a." ". .", "mr...." -> "mr." "...": the abbreviation keeps one period.
      size_t extra = run_length_back(s, '.') - 1;
      take = extra >= 3 ? 3 : 1, tok = extra >= 3 ? "..." : ".";
    } else if (c == '.' && n >= 3 && s.compare(n - 3, 3, "...") == 0) take = 3, tok = "...";
    else if (c == '.' && !keeps_period(last_segment(s.substr(0, n - 1)))) take = 1, tok = ".";
    else if (c == '-' && n >= 2 && s[n - 2] == '-') {
      while (take < n && s[n - 1 - take] == '-') ++take;
      tok = "--";
    } else if (c == ',' || c == ';' || c == ':' || c == '%' || c == '-' || c == '/') take = 1, tok = std::string(1, c);
    else if (c == '!' || c == '?') {
      while (take < n && (s[n - 1 - take] == '!' || s[n - 1 - take] == '?')) ++take;
      tok = s.substr(n - take);
    }
    if (take == 0) break;
    back.push_back(tok);
    s = s.substr(0, n - take);
  }
  out.insert(out.end(), front.begin(), front.end());
  if (!s.empty()) {
    if (auto sep = find_separator(s)) {
      tokenize_chunk(s.substr(0, sep->pos), out);
      out.push_back(sep->token);
      tokenize_chunk(s.substr(sep->pos + sep->len), out);
    } else {
      split_word(s, out);
    }
  }
  out.insert(out.end(), back.rbegin(), back.rend());
}

}  // namespace

std::vector<std::string> ptb_tokens(const std::string& text) {
  std::string s = normalize_unicode(text);
  std::vector<std::string> tokens;
  std::string chunk;
  auto flush = [&] {
    if (!chunk.empty()) tokenize_chunk(chunk, tokens);
    chunk.clear();
  };
  for (char c : s) {
    if (is_space(c)) flush();
    else chunk += c;
  }
  flush();
  for (auto& t : tokens) t = lower_token(t);
  tokens.erase(std::remove(tokens.begin(), tokens.end(), std::string()), tokens.end());
  return tokens;
}

bool is_ptb_punctuation(const std::string& token) {
  // pycocoevalcap's list, verbatim: its bracket entries are upper case and so never match the
  // lower-cased output of -lowerCase (the Java tokenizer's -lrb- etc. are kept).
  static const std::unordered_set<std::string> punctuation = {
      "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"};
  return punctuation.count(token) > 0;
}

std::string ptb_tokenize(const std::string& caption) {
  std::string line = caption;
  std::replace(line.begin(), line.end(), '\n', ' ');
  std::string out;
  for (const auto& t : ptb_tokens(line)) {
    if (is_ptb_punctuation(t)) continue;
    if (!out.empty()) out += ' ';
    out += t;
  }
  return out;
}

}  // namespace vlp::data
