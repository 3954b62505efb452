// safetensors: round trips of every dtype (bit-identical values, metadata kept), the reference writer's
// header layout, zero-copy loading, atomic saving, and every malformed file the reader must refuse.
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/test_util.h"
#include "runtime/safetensors.h"

namespace vlp {
namespace {

namespace fs = std::filesystem;

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((n >> (8 * i)) & 0xff);
  return s;
}

// A file with this header text and data buffer (N = header size unless given).
std::string raw_file(const std::string& header, const std::string& data, int64_t n = -1) {
  return le64(n < 0 ? header.size() : uint64_t(n)) + header + data;
}

// The tensor's bytes in row-major order.
std::string tensor_bytes(const Tensor& t) {
  Tensor c = contiguous_raw(t);
  return std::string(static_cast<const char*>(c.data_ptr()), size_t(c.numel()) * c.element_size());
}

template <class T>
Tensor bits_tensor(const std::vector<T>& v, const Shape& shape) {
  Tensor t = empty(shape, dtype_of<T>());
  T* p = static_cast<T*>(t.data_ptr());
  for (size_t i = 0; i < v.size(); ++i) p[i] = v[i];
  return t;
}

// One tensor of every dtype, with the awkward values (NaN payloads, -0, inf, subnormals, extremes).
NamedTensors all_dtypes() {
  const float nan_payload = std::bit_cast<float>(0x7fc01234u);
  NamedTensors t;
  t.emplace_back("f32", bits_tensor<float>({1.5f, -0.0f, INFINITY, -INFINITY, nan_payload, 1e-45f}, {2, 3}));
  t.emplace_back("f64", bits_tensor<double>({3.141592653589793, -0.0, 5e-324, -1e308}, {4}));
  t.emplace_back("bf16", bits_tensor<bf16>({{0x3f80}, {0x8000}, {0x7f80}, {0x7fc1}, {0x0001}, {0xff7f}}, {3, 2}));
  t.emplace_back("f16", bits_tensor<f16>({{0x3c00}, {0x8000}, {0x7c00}, {0x7e01}, {0x0001}, {0x7bff}}, {1, 6}));
  t.emplace_back("i32", bits_tensor<int32_t>({INT32_MIN, -1, 0, INT32_MAX}, {2, 2}));
  t.emplace_back("i64", bits_tensor<int64_t>({INT64_MIN, -7, INT64_MAX}, {3}));
  t.emplace_back("u8", bits_tensor<uint8_t>({0, 1, 127, 128, 255}, {5}));
  t.emplace_back("bool", bits_tensor<bool>({true, false, true}, {3}));
  t.emplace_back("scalar", bits_tensor<float>({42.0f}, {}));
  t.emplace_back("empty", bits_tensor<float>({}, {0, 3}));
  return t;
}

TEST(Safetensors, RoundTripEveryDTypeBitIdentical) {
  fs::path dir = test::temp_dir("st_roundtrip");
  std::string path = (dir / "all.safetensors").string();
  NamedTensors in = all_dtypes();
  SafetensorsMetadata meta = {{"format", "pt"}, {"note", "ünïcode \"quoted\"\n"}};
  save_safetensors(path, in, meta);

  SafetensorsFile f = load_safetensors(path);
  EXPECT_EQ(f.metadata, meta);
  ASSERT_EQ(f.tensors.size(), in.size());
  for (const auto& [name, t] : in) {
    SCOPED_TRACE(name);
    const Tensor& got = f.at(name);
    EXPECT_EQ(got.dtype(), t.dtype());
    EXPECT_EQ(got.shape(), t.shape());
    EXPECT_EQ(tensor_bytes(got), tensor_bytes(t));
  }
  EXPECT_EQ(f.find("missing"), nullptr);
  EXPECT_THROW(f.at("missing"), Error);

  // Saving what was loaded reproduces the file byte for byte.
  std::string again = (dir / "again.safetensors").string();
  save_safetensors(again, f.tensors, f.metadata);
  EXPECT_EQ(read_bytes(again), read_bytes(path));
  fs::remove_all(dir);
}

TEST(Safetensors, HeaderLayoutMatchesReferenceWriter) {
  // Known answers of the reference writer: one F32 [1, 2, 3] tensor (a 64-byte header, no padding),
  // an empty file, and metadata only.
  Tensor attn = from_vector({0, 1, 2, 3, 4, 5}, {1, 2, 3});
  std::string bytes = serialize_safetensors({{"attn.0", attn}});
  std::string header = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  EXPECT_EQ(bytes, le64(64) + header + tensor_bytes(attn));
  EXPECT_EQ(serialize_safetensors({}), le64(8) + "{}      ");
  EXPECT_EQ(serialize_safetensors({}, {{"framework", "pt"}}),
            le64(40) + R"({"__metadata__":{"framework":"pt"}})" + "     ");
  // A 5-character name and a 4-dim shape: 65 header bytes, padded with 7 spaces to 72.
  Tensor attn4 = from_vector({0, 1, 2, 3, 4, 5}, {1, 1, 2, 3});
  std::string padded = serialize_safetensors({{"attn0", attn4}});
  std::string header4 = R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})";
  ASSERT_EQ(header4.size(), 65u);
  EXPECT_EQ(padded, le64(72) + header4 + "       " + tensor_bytes(attn4));
}

TEST(Safetensors, WriterOrderAlignmentAndMetadataFirst) {
  fs::path dir = test::temp_dir("st_order");
  std::string path = (dir / "order.safetensors").string();
  NamedTensors in = {
      {"z_i64", zeros({3}, DType::I64)}, {"a_bool", zeros({3}, DType::Bool)}, {"b_f32", zeros({1}, DType::F32)},
      {"a_f32", zeros({3}, DType::F32)}, {"c_i32", zeros({2}, DType::I32)},   {"bf", zeros({3}, DType::BF16)},
      {"h", zeros({1}, DType::F16)},     {"f64", zeros({2}, DType::F64)},     {"u", zeros({5}, DType::U8)},
  };
  save_safetensors(path, in, {{"format", "pt"}});
  SafetensorsHeader h = read_safetensors_header(path);
  std::vector<std::string> names;
  for (const auto& e : h.entries) names.push_back(e.name);
  // dtype alignment descending (the reference's order I64, F64, F32, I32, BF16, F16, U8, BOOL), then name.
  EXPECT_EQ(names, (std::vector<std::string>{"z_i64", "f64", "a_f32", "b_f32", "c_i32", "bf", "h", "u", "a_bool"}));
  EXPECT_EQ(h.header_bytes % 8, 0u);
  EXPECT_EQ(h.data_start, 8 + h.header_bytes);
  EXPECT_EQ(h.metadata, (SafetensorsMetadata{{"format", "pt"}}));
  for (const auto& e : h.entries) {
    EXPECT_EQ((h.data_start + e.begin) % dtype_size(e.dtype), 0u) << e.name << " is misaligned";
    EXPECT_EQ(e.shape, in[size_t(std::find_if(in.begin(), in.end(), [&](auto& p) { return p.first == e.name; }) -
                                 in.begin())]
                           .second.shape());
  }
  std::string bytes = read_bytes(path);
  EXPECT_EQ(bytes.substr(8, 16), R"({"__metadata__":)");
  // The padding is spaces, and the data buffer starts right after it.
  std::string header = bytes.substr(8, size_t(h.header_bytes));
  EXPECT_EQ(header.back(), ' ');
  EXPECT_EQ(header.find_last_not_of(' '), header.rfind('}'));
  EXPECT_EQ(h.file_bytes, bytes.size());
  // The header read alone agrees with a full load.
  SafetensorsFile f = load_safetensors(path);
  ASSERT_EQ(f.tensors.size(), h.entries.size());
  for (size_t i = 0; i < f.tensors.size(); ++i) EXPECT_EQ(f.tensors[i].first, h.entries[i].name);
  fs::remove_all(dir);
}

TEST(Safetensors, NonContiguousAndSharedStorageWrittenAsSeparateContiguousBytes) {
  fs::path dir = test::temp_dir("st_views");
  std::string path = (dir / "views.safetensors").string();
  Tensor base = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor transposed = as_strided(base, {3, 2}, {1, 3}, 0);     // [[1, 4], [2, 5], [3, 6]]
  Tensor column = as_strided(base, {2}, {3}, 1);               // [2, 5]
  Tensor tail = as_strided(base, {2}, {1}, 4);                 // [5, 6], offset into the storage
  save_safetensors(path, {{"base", base}, {"t", transposed}, {"col", column}, {"tail", tail}});
  EXPECT_EQ(fs::file_size(path), 8 + read_safetensors_header(path).header_bytes + (6 + 6 + 2 + 2) * 4);
  SafetensorsFile f = load_safetensors(path);
  EXPECT_TRUE(test::values_are(f.at("t"), {1, 4, 2, 5, 3, 6}));
  EXPECT_TRUE(test::values_are(f.at("col"), {2, 5}));
  EXPECT_TRUE(test::values_are(f.at("tail"), {5, 6}));
  EXPECT_TRUE(f.at("t").is_contiguous());
  // Separate bytes: writing one loaded tensor leaves the others alone.
  fill_(f.at("base"), 0.0);
  EXPECT_TRUE(test::values_are(f.at("t"), {1, 4, 2, 5, 3, 6}));
  fs::remove_all(dir);
}

TEST(Safetensors, LoadIsZeroCopyAndKeepsTheMappingAlive) {
  fs::path dir = test::temp_dir("st_mmap");
  std::string path = (dir / "m.safetensors").string();
  Tensor big = rand({256, 256});
  save_safetensors(path, {{"w", big}, {"b", zeros({256})}});
  std::string before = read_bytes(path);

  int64_t bytes_before = memory_stats(Device::cpu()).current_bytes;
  Tensor w;
  {
    SafetensorsFile f = load_safetensors(path);
    // No allocation: the tensors view the mapping.
    EXPECT_EQ(memory_stats(Device::cpu()).current_bytes, bytes_before);
    w = f.at("w");
  }
  // The file object is gone; the tensor still reads the mapped data.
  EXPECT_TRUE(test::all_close(w, big, 0, 0));
  // Writes go to this process's private copy, never to the file.
  fill_(w, 7.0);
  EXPECT_EQ(to_vector(w)[0], 7.0);
  EXPECT_EQ(read_bytes(path), before);
  // Removing the file does not invalidate a live mapping.
  Tensor b = load_safetensors(path).at("b");
  fs::remove(path);
  EXPECT_TRUE(test::values_are(b, std::vector<double>(256, 0.0)));
  fs::remove_all(dir);
}

TEST(Safetensors, MisalignedForeignFileIsCopied) {
  // A header of 3 bytes' odd length puts the F32 data at file offset 8 + N, not 4-byte aligned.
  fs::path dir = test::temp_dir("st_misaligned");
  fs::path path = dir / "odd.safetensors";
  std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  header += std::string((4 - (8 + header.size()) % 4) % 4 + 1, ' ');  // 1 byte past alignment
  float v[2] = {1.25f, -2.5f};
  write_bytes(path, raw_file(header, std::string(reinterpret_cast<char*>(v), 8)));
  SafetensorsFile f = load_safetensors(path.string());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(f.at("x").data_ptr()) % 4, 0u);
  EXPECT_TRUE(test::values_are(f.at("x"), {1.25, -2.5}));
  fs::remove_all(dir);
}

TEST(Safetensors, ZeroSizeZeroDimAndTrailingSpacesAreLegal) {
  fs::path dir = test::temp_dir("st_legal");
  fs::path path = dir / "legal.safetensors";
  float one = 1.0f;
  std::string header =
      R"({"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},)"
      R"("z":{"dtype":"I64","shape":[2,0],"data_offsets":[4,4]}}          )";
  write_bytes(path, raw_file(header, std::string(reinterpret_cast<char*>(&one), 4)));
  SafetensorsFile f = load_safetensors(path.string());
  ASSERT_EQ(f.tensors.size(), 3u);
  EXPECT_EQ(f.at("e").shape(), (Shape{0, 3}));
  EXPECT_EQ(f.at("s").dim(), 0);
  EXPECT_EQ(f.at("s").item(), 1.0);
  EXPECT_EQ(f.at("z").numel(), 0);
  EXPECT_EQ(f.tensors[0].first, "e");  // file order: by offset
  EXPECT_EQ(f.tensors[2].first, "z");
  // A file with no tensors at all.
  write_bytes(path, raw_file("{}", ""));
  EXPECT_TRUE(load_safetensors(path.string()).tensors.empty());
  fs::remove_all(dir);
}

// ---- malformed files ----

struct Malformed {
  const char* what;
  std::string bytes;
  const char* expected;  // a piece of the message
  const char* tensor;    // the tensor the message must name, or null
};

std::string entry(const std::string& name, const std::string& body) { return "\"" + name + "\":" + body; }

std::vector<Malformed> malformed_cases() {
  const std::string f8(8, '\0'), f16(16, '\0');
  auto one = [](const std::string& body, const std::string& data) {
    return raw_file("{" + entry("w", body) + "}", data);
  };
  return {
      {"shorter than 8 bytes", std::string(5, '\0'), "shorter than the 8-byte", nullptr},
      {"header length over the limit", le64(100000001) + "{}", "exceeds the limit", nullptr},
      {"header length beyond the file", le64(64) + "{}", "beyond the end of the file", nullptr},
      {"header not JSON", raw_file("{\"w\": {", ""), "not valid JSON", nullptr},
      {"header not UTF-8", raw_file("{\"\xff\":{}}", ""), "not valid JSON", nullptr},
      {"header empty", raw_file("", ""), "not valid JSON", nullptr},
      {"header not an object", raw_file("[1, 2]", ""), "must be a JSON object", nullptr},
      {"entry not an object", one("[1]", ""), "entry must be an object", "w"},
      {"missing dtype", one(R"({"shape":[2],"data_offsets":[0,8]})", f8), "has no dtype", "w"},
      {"missing shape", one(R"({"dtype":"F32","data_offsets":[0,8]})", f8), "has no shape", "w"},
      {"missing data_offsets", one(R"({"dtype":"F32","shape":[2]})", f8), "has no data_offsets", "w"},
      {"dtype not a string", one(R"({"dtype":4,"shape":[2],"data_offsets":[0,8]})", f8), "dtype must be a string", "w"},
      {"shape not a list", one(R"({"dtype":"F32","shape":"2","data_offsets":[0,8]})", f8), "shape must be a list", "w"},
      {"shape with a float", one(R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})", f8), "must hold integers",
       "w"},
      {"negative dim", one(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})", f8), "negative dimension", "w"},
      {"shape overflow", one(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]})", f8),
       "too many elements", "w"},
      {"offsets not a pair", one(R"({"dtype":"F32","shape":[2],"data_offsets":[0]})", f8), "data_offsets must be", "w"},
      {"offsets not integers", one(R"({"dtype":"F32","shape":[2],"data_offsets":["0","8"]})", f8),
       "data_offsets must be", "w"},
      {"negative offset", one(R"({"dtype":"F32","shape":[2],"data_offsets":[-8,0]})", f8), "data_offsets must be", "w"},
      {"unknown dtype", one(R"({"dtype":"F33","shape":[2],"data_offsets":[0,8]})", f8), "unknown dtype 'F33'", "w"},
      {"unsupported I8", one(R"({"dtype":"I8","shape":[8],"data_offsets":[0,8]})", f8),
       "dtype I8 is not supported", "w"},
      {"unsupported I16", one(R"({"dtype":"I16","shape":[4],"data_offsets":[0,8]})", f8),
       "dtype I16 is not supported", "w"},
      {"unsupported U16", one(R"({"dtype":"U16","shape":[4],"data_offsets":[0,8]})", f8),
       "dtype U16 is not supported", "w"},
      {"unsupported U32", one(R"({"dtype":"U32","shape":[2],"data_offsets":[0,8]})", f8),
       "dtype U32 is not supported", "w"},
      {"unsupported U64", one(R"({"dtype":"U64","shape":[1],"data_offsets":[0,8]})", f8),
       "dtype U64 is not supported", "w"},
      {"unsupported F8", one(R"({"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]})", f8),
       "dtype F8_E4M3 is not supported", "w"},
      {"offsets out of range", one(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})", f8), "out of range", "w"},
      {"begin after end", one(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})", f8), "begin 8 > end 0", "w"},
      {"size does not match shape", one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})", f8),
       "does not match shape", "w"},
      {"first tensor not at 0",
       raw_file("{" + entry("w", R"({"dtype":"F32","shape":[1],"data_offsets":[4,8]})") + "}", f8), "leave a gap", "w"},
      {"gap between tensors",
       raw_file("{" + entry("a", R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})") + "," +
                    entry("b", R"({"dtype":"F32","shape":[2],"data_offsets":[8,16]})") + "}",
                f16),
       "leave a gap", "b"},
      {"overlapping tensors",
       raw_file("{" + entry("a", R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})") + "," +
                    entry("b", R"({"dtype":"F32","shape":[2],"data_offsets":[4,12]})") + "}",
                std::string(12, '\0')),
       "overlap tensor 'a'", "b"},
      {"trailing bytes after the last tensor", one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})", f16),
       "cover 8 bytes of the data buffer but the file has 16", nullptr},
      {"bytes but no tensors", raw_file("{}", f8), "cover 0 bytes", nullptr},
      {"duplicate names",
       raw_file("{" + entry("w", R"({"dtype":"F32","shape":[1],"data_offsets":[0,4]})") + "," +
                    entry("w", R"({"dtype":"F32","shape":[1],"data_offsets":[4,8]})") + "}",
                f8),
       "duplicate tensor name 'w'", nullptr},
      {"duplicate field", one(R"({"dtype":"F32","dtype":"F64","shape":[2],"data_offsets":[0,8]})", f8),
       "duplicate key 'dtype'", "w"},
      {"metadata not an object", raw_file(R"({"__metadata__":"pt"})", ""), "flat string-to-string map", nullptr},
      {"metadata with a number", raw_file(R"({"__metadata__":{"a":1}})", ""), "key 'a' holds number", nullptr},
      {"metadata nested", raw_file(R"({"__metadata__":{"a":{"b":"c"}}})", ""), "key 'a' holds object", nullptr},
      {"metadata null", raw_file(R"({"__metadata__":null})", ""), "flat string-to-string map", nullptr},
      {"metadata duplicate key", raw_file(R"({"__metadata__":{"a":"1","a":"2"}})", ""), "duplicate __metadata__ key",
       nullptr},
      {"BOOL byte other than 0 and 1",
       one(R"({"dtype":"BOOL","shape":[2],"data_offsets":[0,2]})", std::string("\x01\x02")),
       "only 0 and 1 are valid", "w"},
  };
}

TEST(Safetensors, MalformedFilesAreRefusedNamingFileTensorAndProblem) {
  fs::path dir = test::temp_dir("st_malformed");
  int i = 0;
  for (const Malformed& m : malformed_cases()) {
    SCOPED_TRACE(m.what);
    std::string path = (dir / ("case" + std::to_string(i++) + ".safetensors")).string();
    write_bytes(path, m.bytes);
    bool header_only_sees_it = std::string(m.what).find("BOOL") == std::string::npos;  // data is not read
    for (int pass = 0; pass < (header_only_sees_it ? 2 : 1); ++pass) {
      try {
        if (pass == 0) load_safetensors(path);
        else read_safetensors_header(path);
        ADD_FAILURE() << "accepted (pass " << pass << ")";
      } catch (const Error& e) {
        std::string msg = e.what();
        EXPECT_NE(msg.find(m.expected), std::string::npos) << msg;
        EXPECT_NE(msg.find(path), std::string::npos) << "does not name the file: " << msg;
        if (m.tensor) {
          EXPECT_NE(msg.find("tensor '" + std::string(m.tensor) + "'"), std::string::npos) << msg;
        }
      }
    }
  }
  // Not a file at all.
  EXPECT_THROW(load_safetensors((dir / "absent.safetensors").string()), Error);
  EXPECT_THROW(load_safetensors(dir.string()), Error);
  fs::remove_all(dir);
}

// ---- saving ----

// Fails every allocation: a save that needs a contiguous copy then fails halfway through writing.
struct FailingAllocator final : Allocator {
  void* allocate(size_t) override { VLP_FAIL("test allocator refuses"); }
  void deallocate(void*, size_t) override {}
};

bool has_temp_files(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) return true;
  return false;
}

TEST(Safetensors, AtomicSaveReplacesOnlyOnSuccessAndLeavesNoTempFile) {
  fs::path dir = test::temp_dir("st_atomic");
  std::string path = (dir / "ckpt.safetensors").string();
  save_safetensors(path, {{"a", from_vector({1, 2, 3}, {3})}});
  EXPECT_FALSE(has_temp_files(dir));
  std::string first = read_bytes(path);

  // Overwrite succeeds.
  save_safetensors(path, {{"a", from_vector({4, 5, 6, 7}, {4})}});
  EXPECT_FALSE(has_temp_files(dir));
  EXPECT_TRUE(test::values_are(load_safetensors(path).at("a"), {4, 5, 6, 7}));
  std::string second = read_bytes(path);
  EXPECT_NE(first, second);

  // A save that fails after it started writing (the non-contiguous tensor, written last, needs a copy
  // and the allocator refuses) leaves the previous file and no temporary behind.
  Tensor base = from_vector({1, 2, 3, 4}, {2, 2});
  Tensor transposed = as_strided(base, {2, 2}, {1, 2}, 0);
  Allocator* previous = get_allocator(Device::cpu());
  FailingAllocator failing;
  set_allocator(Device::cpu(), &failing);
  bool threw = false;
  try {
    save_safetensors(path, {{"a_first", base}, {"z_last", transposed}});
  } catch (const Error& e) {
    threw = std::string(e.what()).find("test allocator refuses") != std::string::npos;
  }
  set_allocator(Device::cpu(), previous);
  EXPECT_TRUE(threw);
  EXPECT_EQ(read_bytes(path), second);
  EXPECT_FALSE(has_temp_files(dir));

  // Refused before anything is written: bad names, undefined tensors, a missing directory.
  EXPECT_THROW(save_safetensors(path, {{"a", base}, {"a", base}}), Error);
  EXPECT_THROW(save_safetensors(path, {{"__metadata__", base}}), Error);
  EXPECT_THROW(save_safetensors(path, {{"", base}}), Error);
  EXPECT_THROW(save_safetensors(path, {{"u", Tensor()}}), Error);
  EXPECT_THROW(save_safetensors(path, {{std::string("bad\xff"), base}}), Error);
  EXPECT_EQ(read_bytes(path), second);
  try {
    save_safetensors((dir / "no" / "such" / "x.safetensors").string(), {{"a", base}});
    ADD_FAILURE() << "saved into a missing directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("x.safetensors"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(has_temp_files(dir));
  fs::remove_all(dir);
}

TEST(Safetensors, ReadsFilesOfTheReferenceWriter) {
  // Written by tools/reference/gen_safetensors_fixture.py with the pinned safetensors package.
  fs::path fixture = fs::path(VLP_SOURCE_DIR) / "tests" / "fixtures" / "runtime" / "reference.safetensors";
  ASSERT_TRUE(fs::exists(fixture)) << fixture;
  SafetensorsFile f = load_safetensors(fixture.string());
  EXPECT_EQ(f.metadata, (SafetensorsMetadata{{"format", "pt"}}));
  EXPECT_TRUE(test::values_are(f.at("weight"), {0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(f.at("weight").shape(), (Shape{2, 3}));
  EXPECT_EQ(f.at("weight").dtype(), DType::F32);
  EXPECT_TRUE(test::values_are(f.at("double"), {0.5, -1.5}));
  EXPECT_TRUE(test::values_are(f.at("half"), {1, -2, 0.5}));
  EXPECT_TRUE(test::values_are(f.at("brain"), {1, -2, 0.5}));
  EXPECT_TRUE(test::values_are(f.at("ids"), {7, -8}));
  EXPECT_TRUE(test::values_are(f.at("ids64"), {9, -10, 11}));
  EXPECT_TRUE(test::values_are(f.at("bytes"), {0, 255}));
  EXPECT_TRUE(test::values_are(f.at("mask"), {1, 0, 1}));
  EXPECT_TRUE(test::values_are(f.at("scalar"), {3}));
  EXPECT_EQ(f.at("scalar").dim(), 0);
  EXPECT_EQ(f.at("empty").shape(), (Shape{0, 4}));
  // Our writer reproduces the reference bytes exactly.
  EXPECT_EQ(serialize_safetensors(f.tensors, f.metadata), read_bytes(fixture));
}

}  // namespace
}  // namespace vlp
