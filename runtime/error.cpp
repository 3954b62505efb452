#include "runtime/error.h"

#include <cstring>

namespace vlp {

[[noreturn]] void throw_error(const char* file, int line, const std::string& message) {
  // Keep only the path below the project root so messages stay short and stable.
  const char* shown = file;
  for (const char* dir : {"runtime/", "autograd/", "kernels/", "models/", "data/", "tools/"}) {
    if (const char* p = std::strstr(file, dir)) { shown = p; break; }
  }
  throw Error(str(message, " [", shown, ":", line, "]"));
}

}  // namespace vlp
