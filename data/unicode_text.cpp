// UTF-8 helpers and the PCRE2 wrapper (see unicode_text.h).
#include "data/unicode_text.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "runtime/error.h"

namespace vlp::text {
namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 with *bad_len = the maximal invalid subpart length
// (at least 1), following the Unicode "maximal subpart" rule that Rust's from_utf8_lossy uses.
size_t valid_sequence_at(std::string_view s, size_t i, size_t* bad_len) {
  const uint8_t b = uint8_t(s[i]);
  if (b < 0x80) return 1;
  size_t need;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    need = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;
  } else {
    *bad_len = 1;
    return 0;
  }
  for (size_t k = 1; k < need; ++k) {
    if (i + k >= s.size()) {
      *bad_len = k;
      return 0;
    }
    const uint8_t c = uint8_t(s[i + k]);
    const bool ok = k == 1 ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
    if (!ok) {
      *bad_len = k;
      return 0;
    }
  }
  return need;
}

pcre2_code* code_of(const Regex& re) { return static_cast<pcre2_code*>(re.code.get()); }

}  // namespace

char32_t decode_utf8(std::string_view s, size_t pos, size_t* len) {
  const uint8_t b = uint8_t(s[pos]);
  const size_t n = std::min(utf8_length(b), s.size() - pos);
  *len = n;
  if (n == 1) return b;
  char32_t cp = b & (0xFF >> (n + 1));
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (uint8_t(s[pos + k]) & 0x3F);
  return cp;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

size_t find_invalid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    size_t bad = 0;
    const size_t n = valid_sequence_at(s, i, &bad);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t bad = 0;
    const size_t n = valid_sequence_at(s, i, &bad);
    if (n) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      i += bad;
    }
  }
  return out;
}

bool is_unicode_whitespace(char32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

size_t leading_whitespace(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t len;
    if (!is_unicode_whitespace(decode_utf8(s, i, &len))) break;
    i += len;
  }
  return i;
}

size_t trailing_whitespace(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (uint8_t(s[start]) & 0xC0) == 0x80) --start;  // back to the lead byte
    size_t len;
    if (!is_unicode_whitespace(decode_utf8(s, start, &len))) break;
    end = start;
  }
  return s.size() - end;
}

Regex compile_regex(const std::string& pattern, const std::string& what) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                                   &error, &offset, nullptr);
  if (!code) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    VLP_FAIL(what, ": invalid regular expression '", pattern, "' at offset ", offset, ": ",
             reinterpret_cast<const char*>(message));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // optional speed-up; interpreted matching if unavailable
  return Regex{std::shared_ptr<void>(code, [](void* p) { pcre2_code_free(static_cast<pcre2_code*>(p)); }), pattern};
}

std::vector<std::pair<size_t, size_t>> find_all(const Regex& re, std::string_view subject) {
  std::vector<std::pair<size_t, size_t>> out;
  pcre2_code* code = code_of(re);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  VLP_CHECK(md, "regex: out of memory");
  size_t start = 0;
  while (start < subject.size()) {
    int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), start, 0, md, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)  // very long runs: the interpreter has no such limit
      rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), start, PCRE2_NO_JIT, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof message);
      VLP_FAIL("regex '", re.pattern, "': matching failed: ", reinterpret_cast<const char*>(message));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t s = ov[0], e = ov[1];
    if (e == s) {  // empty match: step one character and look again
      size_t len;
      decode_utf8(subject, s, &len);
      start = s + len;
      continue;
    }
    out.emplace_back(s, e);
    start = e;
  }
  pcre2_match_data_free(md);
  return out;
}

bool regex_search(const Regex& re, std::string_view subject) {
  pcre2_code* code = code_of(re);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  VLP_CHECK(md, "regex: out of memory");
  const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), 0, 0, md, nullptr);
  pcre2_match_data_free(md);
  return rc >= 0;
}

std::vector<std::pair<size_t, size_t>> graphemes(std::string_view s) {
  static const Regex cluster = compile_regex("\\X", "graphemes");
  return find_all(cluster, s);
}

}  // namespace vlp::text
