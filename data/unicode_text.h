// UTF-8 helpers and a small PCRE2 wrapper shared by the tokenizers: code point decoding, Unicode
// White_Space, lossy UTF-8 repair (as Rust's String::from_utf8_lossy), and Unicode-aware regular
// expressions (PCRE2 with UTF + UCP) for the GPT-2 pre-tokenizer, Replace normalizers and grapheme
// clusters (\X).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace vlp::text {

// Byte length of the UTF-8 sequence starting with lead byte b (1 for invalid lead bytes).
inline size_t utf8_length(uint8_t b) {
  return b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 1;
}
// The code point at s[pos] (s must be valid UTF-8 there); *len receives its byte length.
char32_t decode_utf8(std::string_view s, size_t pos, size_t* len);
void append_utf8(std::string& out, char32_t cp);
// Offset of the first byte that is not part of valid UTF-8, or npos when all of s is valid.
size_t find_invalid_utf8(std::string_view s);
// s with every maximal invalid subsequence replaced by U+FFFD (Rust's from_utf8_lossy).
std::string utf8_lossy(std::string_view s);

// Unicode White_Space (what Rust's char::is_whitespace and Oniguruma's \s accept).
bool is_unicode_whitespace(char32_t cp);
// Number of bytes of leading / trailing White_Space in s.
size_t leading_whitespace(std::string_view s);
size_t trailing_whitespace(std::string_view s);

// A compiled PCRE2 pattern (UTF, UCP). Copies share the compiled code.
struct Regex {
  std::shared_ptr<void> code;  // pcre2_code_8
  std::string pattern;
};
// Compiles `pattern`; throws naming `what` (e.g. the file it came from) and the PCRE2 error.
Regex compile_regex(const std::string& pattern, const std::string& what);
// Non-overlapping matches [start, end) scanning left to right; empty matches are skipped.
std::vector<std::pair<size_t, size_t>> find_all(const Regex& re, std::string_view subject);
// Whether re matches somewhere in subject.
bool regex_search(const Regex& re, std::string_view subject);
// Extended grapheme clusters of s (PCRE2's \X), as [start, end) byte ranges covering s.
std::vector<std::pair<size_t, size_t>> graphemes(std::string_view s);

}  // namespace vlp::text
