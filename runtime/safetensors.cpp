// safetensors reader and writer. The reader validates everything spec/peft.md §6.2 asks before it
// makes a tensor; the writer reproduces the reference writer's bytes (entry order, header layout,
// padding) and replaces files atomically.
#include "runtime/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>

namespace vlp {

namespace {

using Json = nlohmann::ordered_json;  // keeps the header's key order (ties in file order)

constexpr uint64_t kMaxHeaderBytes = 100000000;

// Every dtype name the safetensors format defines, with its rank in the reference writer's sort
// (the order of its Dtype enum, which increases with alignment). Names vlpeft has no DType for are
// listed so that they are refused as unsupported rather than as unknown.
struct FormatDType {
  std::string_view name;
  int rank;
};
constexpr FormatDType kFormatDTypes[] = {
    {"BOOL", 0},     {"U8", 1},          {"I8", 2},           {"F8_E5M2", 3},      {"F8_E4M3", 4},
    {"I16", 5},      {"U16", 6},         {"F16", 7},          {"BF16", 8},         {"I32", 9},
    {"U32", 10},     {"F32", 11},        {"F64", 12},         {"I64", 13},         {"U64", 14},
    {"C64", 15},     {"F8_E8M0", 16},    {"F8_E4M3FNUZ", 17}, {"F8_E5M2FNUZ", 18}, {"F6_E2M3", 19},
    {"F6_E3M2", 20}, {"F4", 21},
};

bool is_format_dtype(std::string_view name) {
  for (const auto& d : kFormatDTypes)
    if (d.name == name) return true;
  return false;
}

int writer_rank(DType dt) {
  for (const auto& d : kFormatDTypes)
    if (d.name == dtype_name(dt)) return d.rank;
  return 0;
}

std::string single_quoted(const std::string& s) { return "'" + s + "'"; }

// "safetensors file 'p'" (+ ": tensor 'x'") as the start of every reader message.
std::string where(const std::string& path, const std::string& tensor = "") {
  std::string w = "safetensors file " + single_quoted(path);
  if (!tensor.empty()) w += ": tensor " + single_quoted(tensor);
  return w;
}

// ---- reading --------------------------------------------------------------------------------------

struct FileHandle {
  int fd = -1;
  ~FileHandle() {
    if (fd >= 0) ::close(fd);
  }
};

// Opens path for reading and returns its size; refuses directories and other non-regular files.
uint64_t open_for_reading(const std::string& path, FileHandle& file) {
  file.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  VLP_CHECK(file.fd >= 0, "cannot open safetensors file ", single_quoted(path), ": ", std::strerror(errno));
  struct stat st {};
  VLP_CHECK(::fstat(file.fd, &st) == 0, "cannot stat safetensors file ", single_quoted(path), ": ",
            std::strerror(errno));
  VLP_CHECK(S_ISREG(st.st_mode), where(path), " is not a regular file");
  return uint64_t(st.st_size);
}

void read_exactly(int fd, const std::string& path, void* out, size_t n, uint64_t offset) {
  char* p = static_cast<char*>(out);
  while (n > 0) {
    ssize_t got = ::pread(fd, p, n, off_t(offset));
    if (got < 0 && errno == EINTR) continue;
    VLP_CHECK(got > 0, "error reading safetensors file ", single_quoted(path), ": ",
              got < 0 ? std::strerror(errno) : "unexpected end of file");
    p += got;
    n -= size_t(got);
    offset += uint64_t(got);
  }
}

// N from the first 8 bytes, checked against the limit and the file size.
uint64_t header_length(const std::string& path, const unsigned char* first8, uint64_t file_bytes) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | first8[i];
  VLP_CHECK(n <= kMaxHeaderBytes, where(path), ": header length ", n, " exceeds the limit of ", kMaxHeaderBytes,
            " bytes");
  VLP_CHECK(8 + n <= file_bytes, where(path), ": header length ", n, " reaches beyond the end of the file (",
            file_bytes, " bytes)");
  return n;
}

// Parses the JSON while recording the first duplicate key at any depth (nlohmann keeps the last
// duplicate silently, and a duplicate tensor name must be refused).
Json parse_json_rejecting_duplicates(const std::string& path, const char* text, size_t n) {
  std::vector<std::set<std::string>> keys_of_open_objects;
  std::vector<std::string> current_key;  // the latest key of each open object
  std::string duplicate;
  auto callback = [&](int, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::object_start) {
      keys_of_open_objects.emplace_back();
      current_key.emplace_back();
    } else if (event == Json::parse_event_t::object_end) {
      keys_of_open_objects.pop_back();
      current_key.pop_back();
    } else if (event == Json::parse_event_t::key) {
      std::string key = parsed.get<std::string>();
      if (!keys_of_open_objects.back().insert(key).second && duplicate.empty()) {
        size_t depth = keys_of_open_objects.size();
        if (depth == 1) duplicate = str("duplicate tensor name ", single_quoted(key));
        else if (depth == 2 && current_key[0] == "__metadata__")
          duplicate = str("duplicate __metadata__ key ", single_quoted(key));
        else duplicate = str("tensor ", single_quoted(current_key[0]), ": duplicate key ", single_quoted(key));
      }
      current_key.back() = key;
    }
    return true;
  };
  Json j;
  try {
    j = Json::parse(text, text + n, callback);
  } catch (const Json::exception& e) {
    VLP_FAIL(where(path), ": header is not valid JSON (", e.what(), ")");
  }
  VLP_CHECK(duplicate.empty(), where(path), ": ", duplicate);
  return j;
}

std::string json_type(const Json& v) { return v.type_name(); }

// A JSON integer >= 0, as uint64.
bool json_uint(const Json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = uint64_t(v.get<int64_t>());
    return true;
  }
  return false;
}

SafetensorsEntry parse_entry(const std::string& path, const std::string& name, const Json& v, uint64_t buffer_bytes) {
  const std::string w = where(path, name);
  VLP_CHECK(v.is_object(), w, ": entry must be an object with dtype, shape and data_offsets, got ", json_type(v));
  for (const char* field : {"dtype", "shape", "data_offsets"})
    VLP_CHECK(v.contains(field), w, ": entry has no ", field);
  SafetensorsEntry e;
  e.name = name;

  const Json& dtype = v["dtype"];
  VLP_CHECK(dtype.is_string(), w, ": dtype must be a string, got ", json_type(dtype));
  std::string dtype_text = dtype.get<std::string>();
  if (!dtype_from_name(dtype_text, &e.dtype)) {
    VLP_CHECK(!is_format_dtype(dtype_text), w, ": dtype ", dtype_text,
              " is not supported by vlpeft (supported: F32, F64, BF16, F16, I32, I64, U8, BOOL)");
    VLP_FAIL(w, ": unknown dtype ", single_quoted(dtype_text));
  }

  const Json& shape = v["shape"];
  VLP_CHECK(shape.is_array(), w, ": shape must be a list of integers, got ", json_type(shape));
  uint64_t numel = 1;
  for (const Json& d : shape) {
    VLP_CHECK(d.is_number_integer(), w, ": shape ", shape.dump(), " must hold integers, found ", d.dump());
    VLP_CHECK(d.is_number_unsigned() || d.get<int64_t>() >= 0, w, ": negative dimension in shape ", shape.dump());
    uint64_t size = 0;
    json_uint(d, &size);
    VLP_CHECK(size <= uint64_t(INT64_MAX) && !__builtin_mul_overflow(numel, size, &numel) &&
                  numel <= uint64_t(INT64_MAX),
              w, ": shape ", shape.dump(), " has too many elements");
    e.shape.push_back(int64_t(size));
  }

  const Json& offsets = v["data_offsets"];
  VLP_CHECK(offsets.is_array() && offsets.size() == 2 && json_uint(offsets[0], &e.begin) &&
                json_uint(offsets[1], &e.end),
            w, ": data_offsets must be [begin, end] with non-negative integers, got ", offsets.dump());
  VLP_CHECK(e.begin <= e.end, w, ": data_offsets begin ", e.begin, " > end ", e.end);
  VLP_CHECK(e.end <= buffer_bytes, w, ": data_offsets [", e.begin, ", ", e.end,
            "] out of range of the data buffer (", buffer_bytes, " bytes)");
  uint64_t nbytes = 0;
  VLP_CHECK(!__builtin_mul_overflow(numel, uint64_t(dtype_size(e.dtype)), &nbytes), w, ": shape ", shape.dump(),
            " has too many bytes");
  VLP_CHECK(e.end - e.begin == nbytes, w, ": data size ", e.end - e.begin, " bytes does not match shape ",
            shape.dump(), " of ", dtype_text, " (", numel, " elements x ", dtype_size(e.dtype), " bytes = ", nbytes,
            ")");
  return e;
}

// Validates the header text (N bytes at `text`) of a file of file_bytes bytes.
SafetensorsHeader parse_header(const std::string& path, const char* text, uint64_t n, uint64_t file_bytes) {
  SafetensorsHeader h;
  h.header_bytes = n;
  h.data_start = 8 + n;
  h.file_bytes = file_bytes;
  const uint64_t buffer_bytes = file_bytes - h.data_start;

  Json j = parse_json_rejecting_duplicates(path, text, size_t(n));
  VLP_CHECK(j.is_object(), where(path), ": header must be a JSON object, got ", json_type(j));
  for (const auto& [key, value] : j.items()) {
    if (key == "__metadata__") {
      VLP_CHECK(value.is_object(), where(path), ": __metadata__ must be a flat string-to-string map, got ",
                json_type(value));
      for (const auto& [mk, mv] : value.items()) {
        VLP_CHECK(mv.is_string(), where(path), ": __metadata__ must be a flat string-to-string map, but key ",
                  single_quoted(mk), " holds ", json_type(mv));
        h.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    h.entries.push_back(parse_entry(path, key, value, buffer_bytes));
  }

  // The tensors must tile the data buffer exactly: sorted by offset, first begin 0, each begin the
  // previous end, the last end the end of the file.
  std::stable_sort(h.entries.begin(), h.entries.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry& e : h.entries) {
    if (e.begin < expected)
      VLP_FAIL(where(path, e.name), ": data_offsets [", e.begin, ", ", e.end, "] overlap tensor ",
               single_quoted(previous->name), " [", previous->begin, ", ", previous->end, "]");
    if (e.begin > expected)
      VLP_FAIL(where(path, e.name), ": data_offsets [", e.begin, ", ", e.end, "] leave a gap: bytes [", expected,
               ", ", e.begin, ") of the data buffer belong to no tensor");
    expected = e.end;
    previous = &e;
  }
  VLP_CHECK(expected == buffer_bytes, where(path), ": the tensors cover ", expected,
            " bytes of the data buffer but the file has ", buffer_bytes, " (8 + header ", n, " + ", expected,
            " != file size ", file_bytes, ")");
  return h;
}

// BOOL bytes other than 0 and 1 are not valid C++ bools; refuse them rather than read them.
void check_bool_bytes(const std::string& path, const SafetensorsEntry& e, const unsigned char* p) {
  for (uint64_t i = 0; i < e.end - e.begin; ++i)
    VLP_CHECK(p[i] <= 1, where(path, e.name), ": BOOL element ", i, " holds byte ", int(p[i]),
              " (only 0 and 1 are valid)");
}

// ---- writing --------------------------------------------------------------------------------------

struct PlannedEntry {
  std::string name;
  const Tensor* tensor;
  uint64_t begin, end;
};

std::string json_string(const std::string& s, const std::string& what) {
  try {
    return Json(s).dump();
  } catch (const Json::exception& e) {
    VLP_FAIL("save_safetensors: ", what, " is not valid UTF-8 (", e.what(), ")");
  }
}

// Checks the names, orders the entries as the reference writer does and builds the padded header.
std::vector<PlannedEntry> plan(const NamedTensors& tensors, const SafetensorsMetadata& metadata, std::string* header) {
  std::set<std::string> seen;
  std::vector<PlannedEntry> entries;
  for (const auto& [name, t] : tensors) {
    VLP_CHECK(!name.empty(), "save_safetensors: empty tensor name");
    VLP_CHECK(name != "__metadata__", "save_safetensors: '__metadata__' is reserved and cannot name a tensor");
    VLP_CHECK(seen.insert(name).second, "save_safetensors: duplicate tensor name ", single_quoted(name));
    VLP_CHECK(t.defined(), "save_safetensors: tensor ", single_quoted(name), " is undefined");
    entries.push_back({name, &t, 0, 0});
  }
  std::sort(entries.begin(), entries.end(), [](const PlannedEntry& a, const PlannedEntry& b) {
    int ra = writer_rank(a.tensor->dtype()), rb = writer_rank(b.tensor->dtype());
    return ra != rb ? ra > rb : a.name < b.name;
  });
  uint64_t offset = 0;
  for (PlannedEntry& e : entries) {
    e.begin = offset;
    offset += uint64_t(e.tensor->numel()) * e.tensor->element_size();
    e.end = offset;
  }

  std::string h = "{";
  if (!metadata.empty()) {
    h += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!first) h += ",";
      h += json_string(k, str("metadata key ", single_quoted(k)));
      h += ":";
      h += json_string(v, str("metadata value of ", single_quoted(k)));
      first = false;
    }
    h += "}";
  }
  for (size_t i = 0; i < entries.size(); ++i) {
    const PlannedEntry& e = entries[i];
    if (i > 0 || !metadata.empty()) h += ",";
    h += json_string(e.name, str("tensor name ", single_quoted(e.name))) + ":{\"dtype\":\"" +
         std::string(dtype_name(e.tensor->dtype())) + "\",\"shape\":[";
    for (int64_t d = 0; d < e.tensor->dim(); ++d) {
      if (d > 0) h += ",";
      h += std::to_string(e.tensor->size(d));
    }
    h += "],\"data_offsets\":[" + std::to_string(e.begin) + "," + std::to_string(e.end) + "]}";
  }
  h += "}";
  h.append((8 - h.size() % 8) % 8, ' ');  // the data buffer starts 8-byte aligned
  *header = std::move(h);
  return entries;
}

// Hands the length prefix, the header and each tensor's bytes (contiguous, on the host) to sink.
void emit(const NamedTensors& tensors, const SafetensorsMetadata& metadata,
          const std::function<void(const void*, size_t)>& sink) {
  std::string header;
  std::vector<PlannedEntry> entries = plan(tensors, metadata, &header);
  unsigned char prefix[8];
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<unsigned char>(n >> (8 * i));
  sink(prefix, 8);
  sink(header.data(), header.size());
  for (const PlannedEntry& e : entries) {
    if (e.end == e.begin) continue;
    Tensor host = convert(*e.tensor, e.tensor->dtype(), Device::cpu());  // itself when already contiguous
    sink(host.data_ptr(), size_t(e.end - e.begin));
  }
}

void write_all(int fd, const std::string& tmp, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t put = ::write(fd, p, std::min<size_t>(n, size_t(1) << 30));
    if (put < 0 && errno == EINTR) continue;
    VLP_CHECK(put > 0, "save_safetensors: error writing ", single_quoted(tmp), ": ", std::strerror(errno));
    p += put;
    n -= size_t(put);
  }
}

// The temporary file: removed on any failure, unless it was renamed into place.
struct TempFile {
  std::string path;
  int fd = -1;
  bool committed = false;
  ~TempFile() {
    if (fd >= 0) ::close(fd);
    if (!committed && !path.empty()) ::unlink(path.c_str());
  }
};

}  // namespace

// ---- public API ----------------------------------------------------------------------------------

const Tensor* SafetensorsFile::find(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

const Tensor& SafetensorsFile::at(const std::string& name) const {
  const Tensor* t = find(name);
  VLP_CHECK(t != nullptr, "safetensors: no tensor named ", single_quoted(name));
  return *t;
}

SafetensorsHeader read_safetensors_header(const std::string& path) {
  FileHandle file;
  uint64_t file_bytes = open_for_reading(path, file);
  VLP_CHECK(file_bytes >= 8, where(path), ": file is ", file_bytes, " bytes, shorter than the 8-byte header length");
  unsigned char first8[8];
  read_exactly(file.fd, path, first8, 8, 0);
  uint64_t n = header_length(path, first8, file_bytes);
  std::string text(size_t(n), '\0');
  read_exactly(file.fd, path, text.data(), size_t(n), 8);
  return parse_header(path, text.data(), n, file_bytes);
}

SafetensorsFile load_safetensors(const std::string& path, Device device) {
  FileHandle file;
  uint64_t file_bytes = open_for_reading(path, file);
  VLP_CHECK(file_bytes >= 8, where(path), ": file is ", file_bytes, " bytes, shorter than the 8-byte header length");
  // Private and writable: tensors behave like ordinary memory, and writes never reach the file.
  void* addr = ::mmap(nullptr, size_t(file_bytes), PROT_READ | PROT_WRITE, MAP_PRIVATE, file.fd, 0);
  VLP_CHECK(addr != MAP_FAILED, "cannot memory-map safetensors file ", single_quoted(path), ": ", std::strerror(errno));
  size_t map_bytes = size_t(file_bytes);
  std::shared_ptr<void> mapping(addr, [map_bytes](void* p) { ::munmap(p, map_bytes); });
  const auto* bytes = static_cast<unsigned char*>(addr);

  uint64_t n = header_length(path, bytes, file_bytes);
  SafetensorsHeader h = parse_header(path, reinterpret_cast<const char*>(bytes + 8), n, file_bytes);

  SafetensorsFile out;
  out.metadata = std::move(h.metadata);
  for (const SafetensorsEntry& e : h.entries) {
    unsigned char* data = static_cast<unsigned char*>(addr) + h.data_start + e.begin;
    size_t nbytes = size_t(e.end - e.begin);
    if (e.dtype == DType::Bool) check_bool_bytes(path, e, data);
    Tensor t;
    if (reinterpret_cast<uintptr_t>(data) % dtype_size(e.dtype) == 0) {
      t = Tensor(wrap_storage(data, nbytes, Device::cpu(), mapping), e.shape, contiguous_strides(e.shape), 0, e.dtype);
    } else {  // misaligned (a header length that is not a multiple of 8): copy
      t = empty(e.shape, e.dtype);
      if (nbytes > 0) std::memcpy(t.data_ptr(), data, nbytes);
    }
    if (!device.is_cpu()) t = convert(t, e.dtype, device);
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

std::string serialize_safetensors(const NamedTensors& tensors, const SafetensorsMetadata& metadata) {
  std::string out;
  emit(tensors, metadata, [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); });
  return out;
}

void save_safetensors(const std::string& path, const NamedTensors& tensors, const SafetensorsMetadata& metadata) {
  namespace fs = std::filesystem;
  VLP_CHECK(!path.empty(), "save_safetensors: empty path");
  VLP_CHECK(!fs::is_directory(path), "save_safetensors: ", single_quoted(path), " is a directory");
  // Check names and sizes before creating anything on disk.
  std::string unused;
  plan(tensors, metadata, &unused);

  // A fresh name next to the target (same directory, so the rename is atomic).
  static std::atomic<uint64_t> counter{0};
  TempFile tmp;
  for (int attempt = 0; attempt < 100 && tmp.fd < 0; ++attempt) {
    uint64_t tick = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
    std::string candidate = str(path, ".tmp.", ::getpid(), ".", counter.fetch_add(1), ".", tick % 1000000);
    int fd = ::open(candidate.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) {
      tmp.fd = fd;
      tmp.path = candidate;
    } else {
      VLP_CHECK(errno == EEXIST, "save_safetensors: cannot create a temporary file next to ", single_quoted(path), ": ",
                std::strerror(errno));
    }
  }
  VLP_CHECK(tmp.fd >= 0, "save_safetensors: cannot find a free temporary name next to ", single_quoted(path));

  emit(tensors, metadata, [&](const void* p, size_t n) { write_all(tmp.fd, tmp.path, p, n); });
  VLP_CHECK(::fsync(tmp.fd) == 0, "save_safetensors: fsync of ", single_quoted(tmp.path), " failed: ",
            std::strerror(errno));
  int fd = tmp.fd;
  tmp.fd = -1;
  VLP_CHECK(::close(fd) == 0, "save_safetensors: closing ", single_quoted(tmp.path), " failed: ", std::strerror(errno));
  VLP_CHECK(::rename(tmp.path.c_str(), path.c_str()) == 0, "save_safetensors: cannot rename ", single_quoted(tmp.path),
            " to ", single_quoted(path), ": ", std::strerror(errno));
  tmp.committed = true;

  // Make the rename itself durable.
  fs::path dir = fs::path(path).parent_path();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  VLP_CHECK(dfd >= 0, "save_safetensors: cannot open directory of ", single_quoted(path), " to sync it: ",
            std::strerror(errno));
  int rc = ::fsync(dfd);
  int err = errno;
  ::close(dfd);
  VLP_CHECK(rc == 0, "save_safetensors: fsync of the directory of ", single_quoted(path), " failed: ",
            std::strerror(err));
}

}  // namespace vlp
