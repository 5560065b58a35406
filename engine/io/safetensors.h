// safetensors files: an 8-byte little-endian header length N, N bytes of JSON header, then the raw tensor
// bytes.
//   {"__metadata__": {"k": "v"}, "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]},
//   ...}
// Offsets are relative to the start of the data section. We write what the reference implementation writes
// (header padded with spaces to a multiple of 8 bytes, data packed without gaps) and read strictly: every
// inconsistency in a file is an Error naming the file and the offending tensor or field, never a crash.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "engine/tensor.h"

namespace dgpipe::engine {

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;  // the "__metadata__" string map (empty when absent)
};

// Where one tensor lives in a file, as described by the header.
struct SafetensorsEntry {
  DType dtype;
  Shape shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
};

struct SafetensorsIndex {
  std::map<std::string, SafetensorsEntry> entries;
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // file offset of the data section (8 + header length)
};

// Writes the tensors (from any device; copied to the host) with keys in sorted order. The file appears
// atomically: the bytes go to "<path>.tmp", which is flushed and renamed over path.
void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// Reads and validates the header only (cheap even for large checkpoints).
SafetensorsIndex read_safetensors_index(const std::string& path);

// Reads every tensor into host memory, or onto `device`.
SafetensorsFile load_safetensors(const std::string& path);
SafetensorsFile load_safetensors(const std::string& path, Device device);

}  // namespace dgpipe::engine
