// One error mechanism for the whole project: VLP_CHECK(cond, parts...) throws vlp::Error carrying the
// source location and a message built from the parts (streamed with operator<<). Anything a user can
// cause (a bad file, a wrong shape, an unknown key) goes through this; nothing calls abort() or assert().
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace vlp {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// str(a, b, c) concatenates anything printable with operator<<.
template <class... Parts>
std::string str(const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}

[[noreturn]] void throw_error(const char* file, int line, const std::string& message);

}  // namespace vlp

#define VLP_FAIL(...) ::vlp::throw_error(__FILE__, __LINE__, ::vlp::str(__VA_ARGS__))
#define VLP_CHECK(cond, ...)                                                   \
  do {                                                                         \
    if (!(cond)) ::vlp::throw_error(__FILE__, __LINE__, ::vlp::str(__VA_ARGS__)); \
  } while (0)
