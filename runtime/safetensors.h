// safetensors files (huggingface/safetensors; byte layout in spec/peft.md §6.2):
//   8 bytes N (u64 little-endian) | N bytes of JSON header | data buffer (raw little-endian, C order).
//
// Loading maps the file (mmap, private copy-on-write) and returns tensors that are views of the mapping:
// no copy on the CPU, and the mapping stays alive while any tensor still uses it (Storage::owner).
// Writing to a loaded tensor changes only this process's copy, never the file. Every file is validated
// before any tensor is made: a malformed one is refused with an Error naming the file, the tensor and
// the problem. Saving follows the reference writer byte for byte and is atomic (temporary file,
// fsync, rename, fsync of the directory), so a crash never leaves a half-written file under the name.
//
// Supported dtypes are those of runtime/dtype.h (F32, F64, BF16, F16, I32, I64, U8, BOOL); files
// with other safetensors dtypes (I8, U16, F8_E4M3, ...) are refused naming the tensor and dtype.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "runtime/tensor.h"

namespace vlp {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
using SafetensorsMetadata = std::map<std::string, std::string>;  // the "__metadata__" string map

// One header entry. Offsets are relative to the start of the data buffer, end exclusive.
struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0, end = 0;
};

// A validated header. Entries are in file order: sorted by data offset (ties, which only zero-size
// tensors can have, keep the order of the JSON text).
struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;
  SafetensorsMetadata metadata;
  uint64_t header_bytes = 0;  // N
  uint64_t data_start = 0;    // 8 + N: file offset of the data buffer
  uint64_t file_bytes = 0;
};

// A loaded file: tensors in file order with their names, plus the metadata.
struct SafetensorsFile {
  NamedTensors tensors;
  SafetensorsMetadata metadata;

  // The tensor of that name, or nullptr.
  const Tensor* find(const std::string& name) const;
  // The tensor of that name; throws naming the name when absent.
  const Tensor& at(const std::string& name) const;
};

// Reads and validates only the header (names, dtypes, shapes, offsets); no tensor data is touched.
SafetensorsHeader read_safetensors_header(const std::string& path);

// Loads every tensor. On the CPU the tensors view the memory-mapped file (zero copy; a tensor whose
// data is not aligned to its element size, which only foreign writers produce, is copied). On another
// device each tensor is copied there and the mapping released.
SafetensorsFile load_safetensors(const std::string& path, Device device = Device::cpu());

// Writes tensors (any layout, any device; CUDA tensors are copied to the host) and metadata as the
// reference writer does: sorted by dtype alignment descending then name, "__metadata__" first, the
// header padded with spaces to a multiple of 8. Names must be unique, non-empty and not
// "__metadata__". Tensors that share storage are written as separate bytes. Atomic: the previous file
// under `path`, if any, is replaced only once the new one is complete on disk.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const SafetensorsMetadata& metadata = {});

// The exact bytes save_safetensors writes for these tensors (header and data), for tests and for
// writers that embed a safetensors blob.
std::string serialize_safetensors(const NamedTensors& tensors, const SafetensorsMetadata& metadata = {});

}  // namespace vlp
